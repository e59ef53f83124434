//! Where the server is and who the CLI is, found the way the AWS CLI finds
//! them: flags, then environment variables, then the profile's entries in
//! `~/.aws/credentials` and `~/.aws/config`.

use std::path::{Path, PathBuf};

/// Reads an environment variable; tests pass a fake one.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The endpoint used when nothing names one.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";
/// The region used when nothing names one (the AWS CLI would refuse; a local
/// server does not care which region it is called in).
const DEFAULT_REGION: &str = "us-east-1";

/// An access key pair to sign requests with.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where the pair came from, for error messages (never the secret).
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Everything the client needs to reach and sign for a server.
#[derive(Debug)]
pub struct Resolved {
    pub endpoint: String,
    pub region: String,
    pub credentials: Option<Credentials>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|v| !v.trim().is_empty())
}

/// `~/.aws/config` (or `$AWS_CONFIG_FILE`) and `~/.aws/credentials` (or
/// `$AWS_SHARED_CREDENTIALS_FILE`), read once.
struct Files {
    config: Option<String>,
    credentials: Option<String>,
}

impl Files {
    fn read(env: Env) -> Files {
        let path = |var: &str, default: &str| {
            non_empty(env(var))
                .map(PathBuf::from)
                .or_else(|| non_empty(env("HOME")).map(|h| Path::new(&h).join(default)))
        };
        let read = |p: Option<PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok());
        Files {
            config: read(path("AWS_CONFIG_FILE", ".aws/config")),
            credentials: read(path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials")),
        }
    }

    /// `key` of `profile` in the config file (`[default]`, `[profile NAME]`).
    fn config(&self, profile: &str, key: &str) -> Option<String> {
        let section = if profile == "default" {
            "default".to_owned()
        } else {
            format!("profile {profile}")
        };
        ini_value(self.config.as_deref()?, &section, key)
    }

    /// `key` of `profile` in the credentials file (`[NAME]`).
    fn credentials(&self, profile: &str, key: &str) -> Option<String> {
        ini_value(self.credentials.as_deref()?, profile, key)
    }

    /// A key pair from the profile: the credentials file first, then the
    /// config file, as the AWS CLI reads them.
    fn key_pair(&self, profile: &str) -> Option<Credentials> {
        let from = |get: &dyn Fn(&str) -> Option<String>, file: &str| {
            Some(Credentials {
                access_key_id: get("aws_access_key_id")?,
                secret_access_key: get("aws_secret_access_key")?,
                session_token: get("aws_session_token"),
                source: format!("profile {profile} in {file}"),
            })
        };
        from(&|k| self.credentials(profile, k), "the credentials file")
            .or_else(|| from(&|k| self.config(profile, k), "the config file"))
    }
}

/// The value of `key` in `[section]` of an INI file as the AWS CLI writes
/// them (`key = value` lines, `#`/`;` comments); `None` if absent or empty.
fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = s.trim() == section;
            continue;
        }
        if inside
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return non_empty(Some(v.trim().to_owned()));
        }
    }
    None
}

/// A key pair from two environment variables; both or none.
fn env_pair(env: Env, id: &str, secret: &str, token: Option<&str>) -> Option<Credentials> {
    Some(Credentials {
        access_key_id: non_empty(env(id))?,
        secret_access_key: non_empty(env(secret))?,
        session_token: token.and_then(|t| non_empty(env(t))),
        source: format!("${id}"),
    })
}

/// The documented local key pair, which a server on a loopback address uses
/// when none is configured: so `stratus` works against a local server with
/// nothing set up. Never offered to any other endpoint.
fn local_pair_for(endpoint: &str) -> Option<Credentials> {
    let url = reqwest::Url::parse(endpoint).ok()?;
    let host = url.host_str()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    loopback.then(|| Credentials {
        access_key_id: stratus_types::LOCAL_ACCESS_KEY_ID.to_owned(),
        secret_access_key: stratus_types::LOCAL_SECRET_ACCESS_KEY.to_owned(),
        session_token: None,
        source: "the documented local key pair (loopback endpoint, nothing else configured)"
            .to_owned(),
    })
}

/// Finds the endpoint, region and credentials.
///
/// - endpoint: `--endpoint`, `$STRATUS_ENDPOINT`, `$AWS_ENDPOINT_URL_LAMBDA`,
///   `$AWS_ENDPOINT_URL`, `endpoint_url` of the profile, else
///   `http://127.0.0.1:9000`;
/// - credentials: `$STRATUS_ACCESS_KEY_ID`/`$STRATUS_SECRET_ACCESS_KEY`; then,
///   unless `--profile` was given (the AWS CLI lets an explicit profile win),
///   `$AWS_ACCESS_KEY_ID`/`$AWS_SECRET_ACCESS_KEY`/`$AWS_SESSION_TOKEN`; then
///   the profile in the credentials file, then in the config file; else, for
///   a loopback endpoint only, the documented local key pair;
/// - region: `$AWS_REGION`, `$AWS_DEFAULT_REGION`, `region` of the profile,
///   else `us-east-1`.
///
/// The profile is `--profile`, else `$AWS_PROFILE`, else `default`.
pub fn resolve(env: Env, endpoint: Option<&str>, profile: Option<&str>) -> Resolved {
    let files = Files::read(env);
    let explicit_profile = non_empty(profile.map(str::to_owned));
    let profile = explicit_profile
        .clone()
        .or_else(|| non_empty(env("AWS_PROFILE")))
        .unwrap_or_else(|| "default".to_owned());
    let endpoint = non_empty(endpoint.map(str::to_owned))
        .or_else(|| {
            [
                "STRATUS_ENDPOINT",
                "AWS_ENDPOINT_URL_LAMBDA",
                "AWS_ENDPOINT_URL",
            ]
            .iter()
            .find_map(|v| non_empty(env(v)))
        })
        .or_else(|| files.config(&profile, "endpoint_url"))
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
    let credentials = env_pair(
        env,
        "STRATUS_ACCESS_KEY_ID",
        "STRATUS_SECRET_ACCESS_KEY",
        None,
    )
    .or_else(|| {
        if explicit_profile.is_some() {
            None
        } else {
            env_pair(
                env,
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                Some("AWS_SESSION_TOKEN"),
            )
        }
    })
    .or_else(|| files.key_pair(&profile))
    .or_else(|| local_pair_for(&endpoint));
    let region = non_empty(env("AWS_REGION"))
        .or_else(|| non_empty(env("AWS_DEFAULT_REGION")))
        .or_else(|| files.config(&profile, "region"))
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    Resolved {
        endpoint: endpoint.trim_end_matches('/').to_owned(),
        region,
        credentials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake environment from pairs.
    fn env(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    struct Aws {
        _dir: tempfile::TempDir,
        config: String,
        credentials: String,
    }

    fn aws_files() -> Aws {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "# comment\n[default]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:9100\n\n\
             [profile dev]\nendpoint_url=http://10.0.0.5:9000\nregion=ap-south-1\n\
             aws_access_key_id = AKCONFIGDEV\naws_secret_access_key = s3\n\
             [profile empty]\nendpoint_url=\n",
        )
        .expect("write");
        let credentials = dir.path().join("credentials");
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\
             ; comment\n[prod]\naws_access_key_id=AKPROD\naws_secret_access_key=s2\naws_session_token=tok\n",
        )
        .expect("write");
        Aws {
            config: config.display().to_string(),
            credentials: credentials.display().to_string(),
            _dir: dir,
        }
    }

    #[test]
    fn the_endpoint_is_found_like_the_aws_cli_finds_one() {
        let f = aws_files();
        let cfg = || ("AWS_CONFIG_FILE", f.config.clone());
        let e = env(vec![cfg()]);
        assert_eq!(resolve(&e, None, None).endpoint, "http://127.0.0.1:9100");
        let e = env(vec![cfg(), ("AWS_PROFILE", "dev".into())]);
        assert_eq!(resolve(&e, None, None).endpoint, "http://10.0.0.5:9000");
        let e = env(vec![cfg()]);
        assert_eq!(
            resolve(&e, None, Some("dev")).endpoint,
            "http://10.0.0.5:9000"
        );
        let e = env(vec![cfg(), ("AWS_ENDPOINT_URL", "http://a:1".into())]);
        assert_eq!(resolve(&e, None, None).endpoint, "http://a:1");
        let e = env(vec![
            ("AWS_ENDPOINT_URL", "http://a:1".into()),
            ("AWS_ENDPOINT_URL_LAMBDA", "http://b:2".into()),
            ("STRATUS_ENDPOINT", "http://c:3/".into()),
        ]);
        assert_eq!(resolve(&e, None, None).endpoint, "http://c:3");
        assert_eq!(resolve(&e, Some("http://d:4"), None).endpoint, "http://d:4");
        let e = env(vec![("AWS_CONFIG_FILE", "/nonexistent".into())]);
        assert_eq!(resolve(&e, None, None).endpoint, DEFAULT_ENDPOINT);
        let e = env(vec![cfg(), ("AWS_PROFILE", "empty".into())]);
        assert_eq!(resolve(&e, None, None).endpoint, DEFAULT_ENDPOINT);
    }

    #[test]
    fn credentials_are_found_like_the_aws_cli_finds_them() {
        let f = aws_files();
        let files = || {
            vec![
                ("AWS_CONFIG_FILE", f.config.clone()),
                ("AWS_SHARED_CREDENTIALS_FILE", f.credentials.clone()),
            ]
        };
        let key = |pairs: Vec<(&'static str, String)>, profile: Option<&str>| {
            resolve(&env(pairs), None, profile)
                .credentials
                .map(|c| (c.access_key_id, c.secret_access_key, c.session_token))
        };
        assert_eq!(
            key(files(), None),
            Some(("AKDEFAULT".into(), "s1".into(), None))
        );
        let mut e = files();
        e.push(("AWS_PROFILE", "prod".into()));
        assert_eq!(
            key(e, None),
            Some(("AKPROD".into(), "s2".into(), Some("tok".into())))
        );
        // A profile only in the config file.
        assert_eq!(
            key(files(), Some("dev")),
            Some(("AKCONFIGDEV".into(), "s3".into(), None))
        );
        // The environment beats the files, unless --profile names one.
        let mut e = files();
        e.push(("AWS_ACCESS_KEY_ID", "AKENV".into()));
        e.push(("AWS_SECRET_ACCESS_KEY", "s4".into()));
        assert_eq!(
            key(e.clone(), None),
            Some(("AKENV".into(), "s4".into(), None))
        );
        assert_eq!(
            key(e.clone(), Some("prod")).map(|k| k.0),
            Some("AKPROD".into())
        );
        // Stratus's own pair beats everything.
        e.push(("STRATUS_ACCESS_KEY_ID", "AKSTRATUS".into()));
        e.push(("STRATUS_SECRET_ACCESS_KEY", "s5".into()));
        assert_eq!(
            key(e, Some("prod")),
            Some(("AKSTRATUS".into(), "s5".into(), None))
        );
        // Half a pair is no pair.
        let remote = || ("STRATUS_ENDPOINT", "http://10.1.2.3:9000".to_owned());
        assert_eq!(
            key(vec![("AWS_ACCESS_KEY_ID", "AKENV".into()), remote()], None),
            None
        );
        assert_eq!(
            key(vec![("HOME", "/nonexistent".into()), remote()], None),
            None
        );
        // Nothing configured and a local server: the documented local pair.
        for local in [
            "http://127.0.0.1:9000",
            "http://localhost:9100",
            "http://[::1]:9000",
        ] {
            let got = key(vec![("STRATUS_ENDPOINT", local.to_owned())], None);
            assert_eq!(
                got.map(|k| k.0).as_deref(),
                Some(stratus_types::LOCAL_ACCESS_KEY_ID),
                "{local}"
            );
        }
        assert_eq!(
            key(vec![("HOME", "/nonexistent".into())], None)
                .map(|k| k.0)
                .as_deref(),
            Some(stratus_types::LOCAL_ACCESS_KEY_ID),
            "the default endpoint is loopback"
        );
    }

    #[test]
    fn the_region_is_found_like_the_aws_cli_finds_it() {
        let f = aws_files();
        let cfg = || ("AWS_CONFIG_FILE", f.config.clone());
        let region = |pairs, profile| resolve(&env(pairs), None, profile).region;
        assert_eq!(region(vec![cfg()], None), "eu-west-1");
        assert_eq!(region(vec![cfg()], Some("dev")), "ap-south-1");
        assert_eq!(
            region(
                vec![cfg(), ("AWS_DEFAULT_REGION", "us-west-2".into())],
                None
            ),
            "us-west-2"
        );
        assert_eq!(
            region(
                vec![
                    cfg(),
                    ("AWS_DEFAULT_REGION", "us-west-2".into()),
                    ("AWS_REGION", "ca-central-1".into())
                ],
                None
            ),
            "ca-central-1"
        );
        assert_eq!(region(vec![], None), DEFAULT_REGION);
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let c = Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
            source: "test".into(),
        };
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
