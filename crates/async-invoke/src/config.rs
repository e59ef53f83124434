//! Event invoke configuration (Put/Get/Update/Delete/ListFunctionEventInvokeConfig):
//! retries, maximum event age and destinations, per function and qualifier,
//! stored under `async/config/<account>/<function>/<qualifier>`; and the
//! check of destination and dead-letter ARNs.
//!
//! Stratus runs only Lambda functions, so a destination or dead-letter
//! target must be a Stratus function ARN; an ARN of a service Stratus does
//! not run (SQS, SNS, EventBridge, S3) is refused by name.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stratus_api::LambdaError;
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::{AccountId, FunctionRef};

/// Lambda's defaults and bounds.
pub const DEFAULT_RETRIES: u32 = 2;
pub const MAX_RETRIES: u32 = 2;
pub const DEFAULT_MAX_AGE_S: u32 = 21_600;
pub const MIN_MAX_AGE_S: u32 = 60;
pub const MAX_MAX_AGE_S: u32 = 21_600;

const CONFIG_PREFIX: &str = "async/config/";

/// `{Destination: ARN}` of OnSuccess / OnFailure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OnTarget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// `DestinationConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DestinationConfig {
    #[serde(default)]
    pub on_success: OnTarget,
    #[serde(default)]
    pub on_failure: OnTarget,
}

/// A function's (or one qualifier's) event invoke configuration, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    pub maximum_retry_attempts: Option<u32>,
    pub maximum_event_age_in_seconds: Option<u32>,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// Milliseconds since the epoch.
    pub last_modified_ms: u64,
}

impl EventInvokeConfig {
    /// The API document (`FunctionEventInvokeConfig`).
    pub fn document(&self, function_arn: &str) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "FunctionArn": function_arn,
            // A timestamp: REST-JSON sends epoch seconds.
            "LastModified": self.last_modified_ms as f64 / 1000.0,
            "DestinationConfig": DestinationConfig {
                on_success: OnTarget { destination: self.on_success.clone() },
                on_failure: OnTarget { destination: self.on_failure.clone() },
            },
        });
        if let Some(n) = self.maximum_retry_attempts {
            doc["MaximumRetryAttempts"] = n.into();
        }
        if let Some(n) = self.maximum_event_age_in_seconds {
            doc["MaximumEventAgeInSeconds"] = n.into();
        }
        doc
    }
}

/// What the dispatcher needs to know about a function to run its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncSettings {
    /// The qualified ARN named in destination records (`...:$LATEST`).
    pub function_arn: String,
    pub max_retries: u32,
    pub max_age: Duration,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    /// The function's DeadLetterConfig TargetArn.
    pub dead_letter: Option<String>,
}

impl AsyncSettings {
    /// The settings of a function with this configuration (or none).
    pub fn new(
        function_arn: String,
        config: Option<&EventInvokeConfig>,
        dead_letter: Option<String>,
    ) -> Self {
        let c = config.cloned().unwrap_or_default();
        AsyncSettings {
            function_arn,
            max_retries: c.maximum_retry_attempts.unwrap_or(DEFAULT_RETRIES),
            max_age: Duration::from_secs(u64::from(
                c.maximum_event_age_in_seconds.unwrap_or(DEFAULT_MAX_AGE_S),
            )),
            on_success: c.on_success,
            on_failure: c.on_failure,
            dead_letter,
        }
    }
}

/// Errors reading or writing configurations.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("event invoke config store failed")]
    Store(#[from] StoreError),
    #[error("stored event invoke config {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

fn config_key(account: &AccountId, function: &str, qualifier: &str) -> String {
    format!("{CONFIG_PREFIX}{account}/{function}/{qualifier}")
}

/// Reads the configuration of `function` at `qualifier` (`$LATEST` when unqualified).
pub async fn get(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
    qualifier: &str,
) -> Result<Option<EventInvokeConfig>, ConfigError> {
    let key = config_key(account, function, qualifier);
    match store.get(&key).await? {
        None => Ok(None),
        Some(v) => serde_json::from_slice(&v.value)
            .map(Some)
            .map_err(|e| ConfigError::Corrupt {
                key,
                message: e.to_string(),
            }),
    }
}

/// Writes (replaces) a configuration.
pub async fn put(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
    qualifier: &str,
    config: &EventInvokeConfig,
) -> Result<(), ConfigError> {
    let key = config_key(account, function, qualifier);
    let value = serde_json::to_vec(config).map_err(|e| ConfigError::Corrupt {
        key: key.clone(),
        message: e.to_string(),
    })?;
    store
        .put(&key, Bytes::from(value), Precondition::None)
        .await?;
    Ok(())
}

/// Deletes a configuration; returns whether there was one.
pub async fn delete(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
    qualifier: &str,
) -> Result<bool, ConfigError> {
    Ok(store
        .delete(
            &config_key(account, function, qualifier),
            Precondition::None,
        )
        .await?)
}

/// Every configuration of `function`, by qualifier.
pub async fn list(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
) -> Result<Vec<(String, EventInvokeConfig)>, ConfigError> {
    let prefix = format!("{CONFIG_PREFIX}{account}/{function}/");
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(&prefix, after.as_deref(), 100).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, v) in page {
            let config: EventInvokeConfig =
                serde_json::from_slice(&v.value).map_err(|e| ConfigError::Corrupt {
                    key: key.clone(),
                    message: e.to_string(),
                })?;
            let qualifier = key[prefix.len()..].to_owned();
            out.push((qualifier, config));
        }
    }
    Ok(out)
}

/// Deletes every configuration of `function` (the function was deleted).
pub async fn delete_all(
    store: &Arc<dyn MetaStore>,
    account: &AccountId,
    function: &str,
) -> Result<(), ConfigError> {
    for (qualifier, _) in list(store, account, function).await? {
        delete(store, account, function, &qualifier).await?;
    }
    Ok(())
}

/// The pattern botocore's model gives destination ARNs.
const ARN_PATTERN: &str =
    r"^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}(-gov)?-[a-z]+-\d{1})?:(\d{12})?:(.*)";

/// A checked target: the function an event is delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub account: AccountId,
    pub function: String,
    pub qualifier: Option<String>,
}

/// Checks a destination or dead-letter ARN given at `field` (e.g.
/// `destinationConfig.onSuccess.destination`): it must be a Stratus
/// function of `account`, other than `own_function` when that is given.
pub fn check_target_arn(
    arn: &str,
    field: &str,
    account: &AccountId,
    own_function: Option<&str>,
) -> Result<Target, LambdaError> {
    let parts: Vec<&str> = arn.split(':').collect();
    let shaped = parts.len() >= 6 && parts[0] == "arn" && parts[1].starts_with("aws");
    if !shaped {
        return Err(LambdaError::validation(
            arn,
            field,
            &format!("Member must satisfy regular expression pattern: {ARN_PATTERN}"),
        ));
    }
    let service = parts[2];
    if service != "lambda" {
        let what = match service {
            "sqs" => "Amazon SQS queues",
            "sns" => "Amazon SNS topics",
            "events" => "Amazon EventBridge event buses",
            "s3" => "Amazon S3 buckets",
            _ => "that service",
        };
        return Err(LambdaError::invalid(format!(
            "The destination ARN {arn} is not supported: Stratus does not run {what} ({service}). Use the ARN of a Stratus function (arn:aws:lambda:REGION:ACCOUNT:function:NAME)."
        )));
    }
    let r = FunctionRef::parse(arn).map_err(|_| {
        LambdaError::invalid(format!(
            "The destination ARN {arn} is not a function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])."
        ))
    })?;
    let target_account = r.account.clone().unwrap_or_else(|| account.clone());
    if &target_account != account {
        return Err(LambdaError::invalid(format!(
            "The destination ARN {arn} is in another account; Stratus delivers only to functions of account {account}."
        )));
    }
    if own_function == Some(r.name.as_str()) {
        return Err(LambdaError::invalid(
            "You can't specify the function itself as a destination.",
        ));
    }
    Ok(Target {
        account: target_account,
        function: r.name,
        qualifier: r.qualifier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_api::ErrorCode;

    #[test]
    fn targets() {
        let a = AccountId::default_local();
        let t = check_target_arn(
            "arn:aws:lambda:us-east-1:000000000000:function:dest",
            "f",
            &a,
            Some("me"),
        )
        .expect("a function");
        assert_eq!(t.function, "dest");
        for foreign in [
            "arn:aws:sqs:us-east-1:000000000000:q",
            "arn:aws:sns:us-east-1:000000000000:t",
            "arn:aws:events:us-east-1:000000000000:event-bus/default",
            "arn:aws:s3:::bucket",
        ] {
            let e = check_target_arn(foreign, "f", &a, None).expect_err(foreign);
            assert_eq!(e.code, ErrorCode::InvalidParameterValue, "{foreign}");
            assert!(e.message.contains("Stratus does not run"), "{}", e.message);
        }
        let e = check_target_arn("not-an-arn", "f", &a, None).expect_err("pattern");
        assert_eq!(e.code, ErrorCode::Validation);
        let e = check_target_arn(
            "arn:aws:lambda:us-east-1:000000000000:function:me",
            "f",
            &a,
            Some("me"),
        )
        .expect_err("itself");
        assert_eq!(e.code, ErrorCode::InvalidParameterValue);
        let e = check_target_arn(
            "arn:aws:lambda:us-east-1:111111111111:function:x",
            "f",
            &a,
            None,
        )
        .expect_err("other account");
        assert_eq!(e.code, ErrorCode::InvalidParameterValue);
    }

    #[test]
    fn defaults() {
        let s = AsyncSettings::new("arn".into(), None, None);
        assert_eq!(s.max_retries, 2);
        assert_eq!(s.max_age, Duration::from_secs(21_600));
        let doc = EventInvokeConfig {
            maximum_retry_attempts: Some(0),
            on_failure: Some("arn:x".into()),
            ..Default::default()
        }
        .document("arn:f:$LATEST");
        assert_eq!(doc["MaximumRetryAttempts"], 0);
        assert!(doc.get("MaximumEventAgeInSeconds").is_none());
        assert_eq!(
            doc["DestinationConfig"]["OnFailure"]["Destination"],
            "arn:x"
        );
        assert_eq!(doc["DestinationConfig"]["OnSuccess"], serde_json::json!({}));
    }
}
