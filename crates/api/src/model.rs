//! JSON shapes of the Lambda control plane (API version 2015-03-31).
//!
//! Request types keep the fields Stratus implements typed and collect every
//! other member in `other`, so the front end can refuse a non-empty value of a
//! field it does not implement by name instead of ignoring it silently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `Code` of CreateFunction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode {
    /// Base64 of the zip (JSON blob encoding).
    pub zip_file: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorage {
    pub size: i64,
}

/// CreateFunction request body.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionRequest {
    pub function_name: String,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: Option<FunctionCode>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub architectures: Option<Vec<String>>,
    pub package_type: Option<String>,
    pub tracing_config: Option<TracingConfig>,
    pub logging_config: Option<LoggingConfig>,
    /// Publishes version 1 in the same call.
    pub publish: Option<bool>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Layer version ARNs, in order.
    pub layers: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// UpdateFunctionConfiguration request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfigurationRequest {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub revision_id: Option<String>,
    pub tracing_config: Option<TracingConfig>,
    pub logging_config: Option<LoggingConfig>,
    /// Layer version ARNs, in order (replaces the function's layers).
    pub layers: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// UpdateFunctionCode request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCodeRequest {
    pub zip_file: Option<String>,
    pub revision_id: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub architectures: Option<Vec<String>>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoggingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application_log_level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_log_level: Option<String>,
}

/// The function configuration document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub code_size: u64,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    pub tracing_config: TracingConfig,
    pub revision_id: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_status_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_status_reason_code: Option<String>,
    pub package_type: String,
    pub architectures: Vec<String>,
    pub ephemeral_storage: EphemeralStorage,
    pub logging_config: LoggingConfig,
    pub snap_start: Value,
    /// `{TargetArn}` when the function has a dead-letter target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_config: Option<Value>,
    pub runtime_version_config: Value,
    /// The function's layers, when it has some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
}

/// One of a function's layers in its configuration document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Layer {
    pub arn: String,
    pub code_size: u64,
}

/// `Code` of GetFunction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCodeLocation {
    pub repository_type: String,
    pub location: String,
}

/// GetFunction response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetFunctionResponse {
    pub configuration: FunctionConfiguration,
    pub code: FunctionCodeLocation,
    /// Present when the function has reserved concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The function's tags, when it has some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
}

/// `{ReservedConcurrentExecutions: N}`: PutFunctionConcurrency's answer,
/// GetFunctionConcurrency's and GetFunction's `Concurrency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Concurrency {
    pub reserved_concurrent_executions: u32,
}

/// ListFunctions response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListFunctionsResponse {
    pub functions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// PublishVersion request body (every member optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionRequest {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// ListVersionsByFunction response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListVersionsResponse {
    pub versions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// An alias's `RoutingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasRoutingConfiguration {
    #[serde(default)]
    pub additional_version_weights: BTreeMap<String, f64>,
}

/// CreateAlias request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAliasRequest {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<AliasRoutingConfiguration>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// UpdateAlias request body.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateAliasRequest {
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<AliasRoutingConfiguration>,
    pub revision_id: Option<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An alias as Create/Get/UpdateAlias and ListAliases return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasConfiguration {
    pub alias_arn: String,
    pub name: String,
    pub function_version: String,
    pub description: String,
    pub revision_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<AliasRoutingConfiguration>,
}

/// ListAliases response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// Whether a JSON value carries no setting at all (null, "", [], {} or an
/// object whose members are all empty). Used to accept unimplemented fields
/// only when they ask for nothing.
pub fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.values().all(is_empty_value),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_members_are_collected() {
        let req: CreateFunctionRequest = serde_json::from_value(json!({
            "FunctionName": "f", "Runtime": "python3.12", "Role": "r", "Handler": "app.handler",
            "Code": {"ZipFile": "UEs="}, "VpcConfig": {"SubnetIds": ["s-1"]}, "KMSKeyArn": ""
        }))
        .expect("parses");
        assert_eq!(req.function_name, "f");
        assert!(req.other.contains_key("VpcConfig"));
        assert!(!is_empty_value(&req.other["VpcConfig"]));
        assert!(is_empty_value(&req.other["KMSKeyArn"]));
    }

    #[test]
    fn empty_values() {
        assert!(is_empty_value(
            &json!({"SubnetIds": [], "SecurityGroupIds": []})
        ));
        assert!(!is_empty_value(&json!({"Mode": "Active"})));
        assert!(!is_empty_value(&json!(false)));
    }

    #[test]
    fn configuration_field_names_match_lambda() {
        let cfg = FunctionConfiguration {
            function_name: "f".into(),
            function_arn: "arn".into(),
            runtime: "python3.12".into(),
            role: "r".into(),
            handler: "h".into(),
            code_size: 1,
            description: String::new(),
            timeout: 3,
            memory_size: 128,
            last_modified: "x".into(),
            code_sha256: "s".into(),
            version: "$LATEST".into(),
            environment: None,
            tracing_config: TracingConfig {
                mode: Some("PassThrough".into()),
            },
            revision_id: "r".into(),
            state: "Active".into(),
            state_reason: None,
            state_reason_code: None,
            last_update_status: Some("Successful".into()),
            last_update_status_reason: None,
            last_update_status_reason_code: None,
            package_type: "Zip".into(),
            architectures: vec!["x86_64".into()],
            ephemeral_storage: EphemeralStorage { size: 512 },
            logging_config: LoggingConfig {
                log_format: Some("Text".into()),
                log_group: Some("/aws/lambda/f".into()),
                application_log_level: None,
                system_log_level: None,
            },
            snap_start: json!({"ApplyOn": "None", "OptimizationStatus": "Off"}),
            dead_letter_config: None,
            runtime_version_config: json!({}),
            layers: Vec::new(),
        };
        let v = serde_json::to_value(&cfg).expect("serialises");
        for k in [
            "FunctionName",
            "FunctionArn",
            "CodeSha256",
            "CodeSize",
            "RevisionId",
            "LastUpdateStatus",
            "EphemeralStorage",
            "SnapStart",
            "RuntimeVersionConfig",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert!(v.get("StateReason").is_none());
    }
}
