//! `stratus account ...` and `stratus key ...`: the server's admin API
//! (`/_stratus/admin/...`), which only the server's admin key may call.
//!
//! A new key's secret is printed once, by `key create`; the server never
//! shows it again.

use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Endpoint, Output, print_json, print_table};

#[derive(Debug, clap::Subcommand)]
pub enum AccountCommand {
    /// Create an account (a new random 12-digit id unless --account-id).
    Create {
        #[arg(long)]
        account_id: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List accounts (the admin key's own, 000000000000, first).
    List {
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Create an access key for an account; its secret is shown this once.
    Create {
        #[arg(long = "account")]
        account: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List access keys (never their secrets).
    List {
        /// Only this account's keys.
        #[arg(long = "account")]
        account: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Revoke an access key: requests signed with it are refused from now on.
    Revoke {
        access_key_id: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub async fn account(cmd: AccountCommand) -> anyhow::Result<u8> {
    match cmd {
        AccountCommand::Create {
            account_id,
            output,
            endpoint,
        } => {
            let body = match account_id {
                Some(id) => json!({ "AccountId": id }),
                None => json!({}),
            };
            let v = Client::new(&endpoint)?
                .json(Method::POST, "/_stratus/admin/accounts", Some(body))
                .await?;
            if output.json() {
                print_json(&v)?;
            } else {
                println!("{}", text(&v, "AccountId"));
            }
        }
        AccountCommand::List { output, endpoint } => {
            let v = Client::new(&endpoint)?
                .json(Method::GET, "/_stratus/admin/accounts", None)
                .await?;
            if output.json() {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v["Accounts"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|a| vec![text(a, "AccountId")])
                    .collect();
                print_table(&["ACCOUNT"], &rows);
            }
        }
    }
    Ok(0)
}

pub async fn key(cmd: KeyCommand) -> anyhow::Result<u8> {
    match cmd {
        KeyCommand::Create {
            account,
            output,
            endpoint,
        } => {
            let v = Client::new(&endpoint)?
                .json(
                    Method::POST,
                    "/_stratus/admin/keys",
                    Some(json!({ "AccountId": account })),
                )
                .await?;
            if output.json() {
                print_json(&v)?;
            } else {
                print_table(
                    &["FIELD", "VALUE"],
                    &[
                        vec!["AccessKeyId".into(), text(&v, "AccessKeyId")],
                        vec!["SecretAccessKey".into(), text(&v, "SecretAccessKey")],
                        vec!["AccountId".into(), text(&v, "AccountId")],
                    ],
                );
                eprintln!("The secret is shown only now: store it (e.g. in ~/.aws/credentials).");
            }
        }
        KeyCommand::List {
            account,
            output,
            endpoint,
        } => {
            let path = match &account {
                Some(a) => format!("/_stratus/admin/keys?AccountId={}", super::seg(a)),
                None => "/_stratus/admin/keys".to_owned(),
            };
            let v = Client::new(&endpoint)?
                .json(Method::GET, &path, None)
                .await?;
            if output.json() {
                print_json(&v)?;
            } else {
                let rows: Vec<Vec<String>> = v["AccessKeys"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|k| {
                        vec![
                            text(k, "AccessKeyId"),
                            text(k, "AccountId"),
                            text(k, "Created"),
                        ]
                    })
                    .collect();
                print_table(&["ACCESS KEY ID", "ACCOUNT", "CREATED"], &rows);
            }
        }
        KeyCommand::Revoke {
            access_key_id,
            endpoint,
        } => {
            Client::new(&endpoint)?
                .call(
                    Method::DELETE,
                    &format!("/_stratus/admin/keys/{}", super::seg(&access_key_id)),
                    None,
                )
                .await?;
        }
    }
    Ok(0)
}
