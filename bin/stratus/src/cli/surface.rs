//! `stratus function publish|versions`, `stratus alias ...`, `stratus url ...`
//! and `stratus layer ...`: versions, aliases, function URLs and layers over
//! the Lambda API, for people who would rather not spell out the AWS CLI's
//! flags. Every command prints a table, or the API's JSON with `--output json`.

use std::path::PathBuf;

use anyhow::bail;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Endpoint, Output, cell, code_zip, print_json, print_table, seg};

#[derive(Debug, clap::Subcommand)]
pub enum AliasCommand {
    /// Point a new alias at a version, optionally sending a share of
    /// invokes to a second version (`--weight 2=0.1`).
    Create {
        function: String,
        alias: String,
        /// The version the alias points at.
        #[arg(long)]
        version: String,
        #[command(flatten)]
        routing: Routing,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Change an alias's version, weights or description.
    Update {
        function: String,
        alias: String,
        #[arg(long)]
        version: Option<String>,
        #[command(flatten)]
        routing: Routing,
        /// Send every invoke to the alias's version again.
        #[arg(long, conflicts_with = "weight")]
        no_weights: bool,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show one alias.
    Get {
        function: String,
        alias: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List a function's aliases.
    List {
        function: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete an alias.
    Delete {
        function: String,
        alias: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

#[derive(Debug, clap::Args)]
pub struct Routing {
    /// VERSION=WEIGHT: that version gets this share (0-1) of the invokes.
    #[arg(long, value_name = "VERSION=WEIGHT")]
    weight: Option<String>,
}

impl Routing {
    fn config(&self) -> anyhow::Result<Option<Value>> {
        let Some(w) = &self.weight else {
            return Ok(None);
        };
        let Some((version, weight)) = w.split_once('=') else {
            bail!("--weight takes VERSION=WEIGHT, e.g. 2=0.1; got {w:?}");
        };
        let weight: f64 = weight
            .parse()
            .map_err(|_| anyhow::anyhow!("--weight {w:?}: the weight is not a number"))?;
        Ok(Some(json!({"AdditionalVersionWeights": {version: weight}})))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum UrlCommand {
    /// Give a function (or one of its aliases) an HTTP endpoint.
    Create {
        function: String,
        /// An alias (or `$LATEST`); the URL then runs what it points at.
        #[arg(long)]
        qualifier: Option<String>,
        /// NONE: anyone who can reach the server; AWS_IAM: SigV4-signed requests.
        #[arg(long, default_value = "NONE", value_parser = ["NONE", "AWS_IAM"])]
        auth_type: String,
        #[arg(long, value_parser = ["BUFFERED", "RESPONSE_STREAM"])]
        invoke_mode: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show a function URL's configuration.
    Get {
        function: String,
        #[arg(long)]
        qualifier: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Remove a function URL.
    Delete {
        function: String,
        #[arg(long)]
        qualifier: Option<String>,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum LayerCommand {
    /// Publish a new version of a layer from a directory or a zip file
    /// (files land under /opt: put Python packages in `python/`, Node
    /// modules in `nodejs/node_modules/`).
    Publish {
        name: String,
        #[arg(long)]
        code: PathBuf,
        /// A runtime the layer is for (repeatable).
        #[arg(long = "compatible-runtime")]
        runtimes: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List layers (each with its newest version), or one layer's versions.
    List {
        name: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete one version of a layer (functions using it keep their copy).
    Delete {
        name: String,
        version: u64,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// `?Qualifier=...` for a path, URL-encoded.
fn qualifier_query(q: Option<&str>) -> String {
    q.map(|q| format!("?Qualifier={}", seg(q)))
        .unwrap_or_default()
}

fn print_fields(v: &Value, fields: &[(&str, &str)], output: &Output) -> anyhow::Result<()> {
    if output.json() {
        return print_json(v);
    }
    let rows: Vec<Vec<String>> = fields
        .iter()
        .filter(|(_, key)| v.get(*key).is_some_and(|x| !x.is_null()))
        .map(|(label, key)| vec![(*label).to_owned(), cell(v, key)])
        .collect();
    print_table(&["FIELD", "VALUE"], &rows);
    Ok(())
}

/// Every item of a paginated list (`key`), following `NextMarker`.
async fn all_pages(c: &Client, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut marker: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let p = match &marker {
            Some(m) => format!("{path}{sep}Marker={}", seg(m)),
            None => path.to_owned(),
        };
        let v = c.json(Method::GET, &p, None).await?;
        if let Some(items) = v.get(key).and_then(Value::as_array) {
            out.extend(items.iter().cloned());
        }
        match v.get("NextMarker").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => marker = Some(m.to_owned()),
            _ => break,
        }
    }
    Ok(out)
}

fn list_table(items: &[Value], columns: &[(&str, &str)]) {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|(_, k)| cell(i, k)).collect())
        .collect();
    let header: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    print_table(&header, &rows);
}

const ALIAS_FIELDS: [(&str, &str); 5] = [
    ("Name", "Name"),
    ("ARN", "AliasArn"),
    ("Version", "FunctionVersion"),
    ("Description", "Description"),
    ("Routing", "RoutingConfig"),
];

/// `stratus function publish NAME`.
pub async fn publish(
    c: &Client,
    name: &str,
    description: Option<String>,
    output: &Output,
) -> anyhow::Result<()> {
    let mut body = Map::new();
    if let Some(d) = description {
        body.insert("Description".into(), json!(d));
    }
    let v = c
        .json(
            Method::POST,
            &format!("/2015-03-31/functions/{}/versions", seg(name)),
            Some(Value::Object(body)),
        )
        .await?;
    print_fields(
        &v,
        &[
            ("Version", "Version"),
            ("ARN", "FunctionArn"),
            ("Description", "Description"),
            ("Code SHA-256", "CodeSha256"),
        ],
        output,
    )
}

/// `stratus function provision NAME --qualifier Q [--count N | --delete]`.
pub async fn provision(
    c: &Client,
    name: &str,
    qualifier: &str,
    count: Option<u32>,
    delete: bool,
    output: &Output,
) -> anyhow::Result<()> {
    let path = format!(
        "/2019-09-30/functions/{}/provisioned-concurrency{}",
        seg(name),
        qualifier_query(Some(qualifier))
    );
    if delete {
        c.call(Method::DELETE, &path, None).await?;
        println!("deleted the provisioned concurrency of {name}:{qualifier}");
        return Ok(());
    }
    let v = match count {
        Some(n) => {
            c.json(
                Method::PUT,
                &path,
                Some(json!({"ProvisionedConcurrentExecutions": n})),
            )
            .await?
        }
        None => c.json(Method::GET, &path, None).await?,
    };
    print_fields(
        &v,
        &[
            ("Status", "Status"),
            ("Requested", "RequestedProvisionedConcurrentExecutions"),
            ("Allocated", "AllocatedProvisionedConcurrentExecutions"),
            ("Available", "AvailableProvisionedConcurrentExecutions"),
            ("Reason", "StatusReason"),
            ("Last modified", "LastModified"),
        ],
        output,
    )
}

/// `stratus function versions NAME`.
pub async fn versions(c: &Client, name: &str, output: &Output) -> anyhow::Result<()> {
    let all = all_pages(
        c,
        &format!("/2015-03-31/functions/{}/versions", seg(name)),
        "Versions",
    )
    .await?;
    if output.json() {
        return print_json(&json!({"Versions": all}));
    }
    list_table(
        &all,
        &[
            ("VERSION", "Version"),
            ("DESCRIPTION", "Description"),
            ("LAST MODIFIED", "LastModified"),
            ("CODE SHA-256", "CodeSha256"),
        ],
    );
    Ok(())
}

pub async fn alias(cmd: AliasCommand) -> anyhow::Result<u8> {
    match cmd {
        AliasCommand::Create {
            function,
            alias,
            version,
            routing,
            description,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let mut body = json!({"Name": alias, "FunctionVersion": version});
            if let Some(r) = routing.config()? {
                body["RoutingConfig"] = r;
            }
            if let Some(d) = description {
                body["Description"] = json!(d);
            }
            let path = format!("/2015-03-31/functions/{}/aliases", seg(&function));
            let v = c.json(Method::POST, &path, Some(body)).await?;
            print_fields(&v, &ALIAS_FIELDS, &output)?;
        }
        AliasCommand::Update {
            function,
            alias,
            version,
            routing,
            no_weights,
            description,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let mut body = json!({});
            if let Some(v) = version {
                body["FunctionVersion"] = json!(v);
            }
            if let Some(r) = routing.config()? {
                body["RoutingConfig"] = r;
            } else if no_weights {
                body["RoutingConfig"] = json!({"AdditionalVersionWeights": {}});
            }
            if let Some(d) = description {
                body["Description"] = json!(d);
            }
            let path = format!(
                "/2015-03-31/functions/{}/aliases/{}",
                seg(&function),
                seg(&alias)
            );
            let v = c.json(Method::PUT, &path, Some(body)).await?;
            print_fields(&v, &ALIAS_FIELDS, &output)?;
        }
        AliasCommand::Get {
            function,
            alias,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!(
                "/2015-03-31/functions/{}/aliases/{}",
                seg(&function),
                seg(&alias)
            );
            let v = c.json(Method::GET, &path, None).await?;
            print_fields(&v, &ALIAS_FIELDS, &output)?;
        }
        AliasCommand::List {
            function,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!("/2015-03-31/functions/{}/aliases", seg(&function));
            let all = all_pages(&c, &path, "Aliases").await?;
            if output.json() {
                print_json(&json!({"Aliases": all}))?;
            } else {
                list_table(
                    &all,
                    &[
                        ("NAME", "Name"),
                        ("VERSION", "FunctionVersion"),
                        ("ROUTING", "RoutingConfig"),
                        ("DESCRIPTION", "Description"),
                    ],
                );
            }
        }
        AliasCommand::Delete {
            function,
            alias,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!(
                "/2015-03-31/functions/{}/aliases/{}",
                seg(&function),
                seg(&alias)
            );
            c.call(Method::DELETE, &path, None).await?;
            println!("deleted alias {alias} of {function}");
        }
    }
    Ok(0)
}

const URL_FIELDS: [(&str, &str); 5] = [
    ("URL", "FunctionUrl"),
    ("Function", "FunctionArn"),
    ("Auth type", "AuthType"),
    ("Invoke mode", "InvokeMode"),
    ("Created", "CreationTime"),
];

pub async fn url(cmd: UrlCommand) -> anyhow::Result<u8> {
    match cmd {
        UrlCommand::Create {
            function,
            qualifier,
            auth_type,
            invoke_mode,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let mut body = json!({"AuthType": auth_type});
            if let Some(m) = invoke_mode {
                body["InvokeMode"] = json!(m);
            }
            let path = format!(
                "/2021-10-31/functions/{}/url{}",
                seg(&function),
                qualifier_query(qualifier.as_deref())
            );
            let v = c.json(Method::POST, &path, Some(body)).await?;
            print_fields(&v, &URL_FIELDS, &output)?;
        }
        UrlCommand::Get {
            function,
            qualifier,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!(
                "/2021-10-31/functions/{}/url{}",
                seg(&function),
                qualifier_query(qualifier.as_deref())
            );
            let v = c.json(Method::GET, &path, None).await?;
            print_fields(&v, &URL_FIELDS, &output)?;
        }
        UrlCommand::Delete {
            function,
            qualifier,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!(
                "/2021-10-31/functions/{}/url{}",
                seg(&function),
                qualifier_query(qualifier.as_deref())
            );
            c.call(Method::DELETE, &path, None).await?;
            println!("deleted the URL of {function}");
        }
    }
    Ok(0)
}

pub async fn layer(cmd: LayerCommand) -> anyhow::Result<u8> {
    match cmd {
        LayerCommand::Publish {
            name,
            code,
            runtimes,
            description,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let mut body = json!({"Content": {"ZipFile": code_zip(&code)?}});
            if !runtimes.is_empty() {
                body["CompatibleRuntimes"] = json!(runtimes);
            }
            if let Some(d) = description {
                body["Description"] = json!(d);
            }
            let path = format!("/2018-10-31/layers/{}/versions", seg(&name));
            let v = c.json(Method::POST, &path, Some(body)).await?;
            print_fields(
                &v,
                &[
                    ("Version", "Version"),
                    ("ARN", "LayerVersionArn"),
                    ("Description", "Description"),
                    ("Runtimes", "CompatibleRuntimes"),
                    ("Created", "CreatedDate"),
                ],
                &output,
            )?;
        }
        LayerCommand::List {
            name,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let (path, key) = match &name {
                Some(n) => (
                    format!("/2018-10-31/layers/{}/versions", seg(n)),
                    "LayerVersions",
                ),
                None => ("/2018-10-31/layers".to_owned(), "Layers"),
            };
            let all = all_pages(&c, &path, key).await?;
            if output.json() {
                print_json(&json!({ key: all }))?;
            } else if name.is_some() {
                list_table(
                    &all,
                    &[
                        ("VERSION", "Version"),
                        ("ARN", "LayerVersionArn"),
                        ("DESCRIPTION", "Description"),
                        ("CREATED", "CreatedDate"),
                    ],
                );
            } else {
                let rows: Vec<Value> = all
                    .iter()
                    .map(|l| {
                        let newest = l.get("LatestMatchingVersion").unwrap_or(&Value::Null);
                        json!({
                            "LayerName": l.get("LayerName"),
                            "Version": newest.get("Version"),
                            "LayerVersionArn": newest.get("LayerVersionArn"),
                        })
                    })
                    .collect();
                list_table(
                    &rows,
                    &[
                        ("NAME", "LayerName"),
                        ("NEWEST VERSION", "Version"),
                        ("ARN", "LayerVersionArn"),
                    ],
                );
            }
        }
        LayerCommand::Delete {
            name,
            version,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!("/2018-10-31/layers/{}/versions/{version}", seg(&name));
            c.call(Method::DELETE, &path, None).await?;
            println!("deleted version {version} of layer {name}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_version_equals_share() {
        let r = Routing {
            weight: Some("2=0.25".into()),
        };
        assert_eq!(
            r.config().expect("valid"),
            Some(json!({"AdditionalVersionWeights": {"2": 0.25}}))
        );
        for bad in ["2", "2=much", "=0.1x"] {
            let r = Routing {
                weight: Some(bad.into()),
            };
            assert!(r.config().is_err(), "{bad} accepted");
        }
        assert_eq!(Routing { weight: None }.config().expect("none"), None);
    }

    #[test]
    fn qualifiers_are_encoded() {
        assert_eq!(qualifier_query(None), "");
        assert_eq!(qualifier_query(Some("live")), "?Qualifier=live");
        assert_eq!(qualifier_query(Some("$LATEST")), "?Qualifier=$LATEST");
    }
}
