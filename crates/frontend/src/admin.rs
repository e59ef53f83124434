//! The admin API (`/_stratus/admin/...`): accounts and access keys, for the
//! server's admin key only (anyone else gets `AccessDeniedException`).
//!
//! | call | answer |
//! |---|---|
//! | `POST /_stratus/admin/accounts` `{"AccountId"?}` | 201 `{"AccountId","Created"}` |
//! | `GET /_stratus/admin/accounts` | `{"Accounts":[{"AccountId"}]}` |
//! | `POST /_stratus/admin/keys` `{"AccountId"}` | 201 `{"AccessKeyId","SecretAccessKey","AccountId","Created"}`: the only time the secret is shown |
//! | `GET /_stratus/admin/keys[?AccountId=]` | `{"AccessKeys":[{"AccessKeyId","AccountId","Created"}]}` (no secrets) |
//! | `DELETE /_stratus/admin/keys/{AccessKeyId}` | 204; the key is refused from then on |

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use stratus_api::{ErrorCode, LambdaError};
use stratus_types::AccountId;

use crate::Frontend;
use crate::auth::keys::KeysError;
use crate::auth::{Caller, require_admin};
use crate::control::now_timestamp;
use crate::error::ApiResult;

fn keys_error(e: KeysError) -> LambdaError {
    match e {
        KeysError::NoAccount(a) => LambdaError::not_found(format!("Account {a} not found.")),
        KeysError::NoKey(k) => LambdaError::not_found(format!("Access key {k} not found.")),
        KeysError::AccountExists(a) => {
            LambdaError::conflict(format!("Account {a} already exists."))
        }
        e @ (KeysError::Store(_) | KeysError::Corrupt { .. }) => {
            LambdaError::service(e.to_string())
        }
    }
}

fn account_id(s: &str) -> Result<AccountId, LambdaError> {
    AccountId::parse(s).map_err(|_| {
        LambdaError::validation(
            s,
            "accountId",
            "Member must satisfy regular expression pattern: \\d{12}",
        )
    })
}

/// A JSON body, empty meaning `{}`.
fn body<T: for<'de> Deserialize<'de>>(b: &Bytes) -> Result<T, LambdaError> {
    let b: &[u8] = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        b
    };
    serde_json::from_slice(b).map_err(|e| {
        LambdaError::new(
            ErrorCode::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct CreateAccount {
    account_id: Option<String>,
}

pub async fn create_account(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    b: Bytes,
) -> ApiResult<Response> {
    require_admin(&c)?;
    let req: CreateAccount = body(&b)?;
    let id = req.account_id.as_deref().map(account_id).transpose()?;
    let info = fe
        .keys
        .create_account(id, now_timestamp())
        .await
        .map_err(keys_error)?;
    tracing::info!(account = %info.account_id, "account created");
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

pub async fn list_accounts(State(fe): State<Arc<Frontend>>, c: Caller) -> ApiResult<Response> {
    require_admin(&c)?;
    let accounts: Vec<_> = fe
        .keys
        .accounts()
        .into_iter()
        .map(|a| json!({ "AccountId": a }))
        .collect();
    Ok(Json(json!({ "Accounts": accounts })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct CreateKey {
    account_id: String,
}

pub async fn create_key(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    b: Bytes,
) -> ApiResult<Response> {
    require_admin(&c)?;
    let req: CreateKey = body(&b)?;
    let account = account_id(&req.account_id)?;
    let (info, secret) = fe
        .keys
        .create_key(account, now_timestamp())
        .await
        .map_err(keys_error)?;
    tracing::info!(access_key_id = %info.access_key_id, account = %info.account_id, "access key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "AccessKeyId": info.access_key_id,
            "SecretAccessKey": secret,
            "AccountId": info.account_id,
            "Created": info.created,
        })),
    )
        .into_response())
}

pub async fn list_keys(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    require_admin(&c)?;
    let account = q.get("AccountId").map(|a| account_id(a)).transpose()?;
    let keys = fe.keys.list_keys(account.as_ref());
    Ok(Json(json!({ "AccessKeys": keys })).into_response())
}

pub async fn revoke_key(
    State(fe): State<Arc<Frontend>>,
    c: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    require_admin(&c)?;
    fe.keys.revoke(&id).await.map_err(keys_error)?;
    tracing::info!(access_key_id = %id, "access key revoked");
    Ok(StatusCode::NO_CONTENT.into_response())
}
