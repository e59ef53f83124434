//! Stratus test fixture: a `provided.al2023` function built with AWS's
//! official Rust runtime (`lambda_runtime`). The binary is named `bootstrap`;
//! deploy it at the root of the function zip.
//!
//! Returns `{"hello": <event.name or "world">, "count": <invokes served by
//! this process>, "request_id": <context request id>, "remaining_ms": ...}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

static COUNT: AtomicU64 = AtomicU64::new(0);

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let (payload, ctx) = event.into_parts();
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let name = payload
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("world")
        .to_owned();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let remaining_ms = ctx.deadline.saturating_sub(now_ms);
    println!(
        "hello from rust-hello: name={name} count={count} request_id={}",
        ctx.request_id
    );
    Ok(json!({
        "hello": name,
        "count": count,
        "request_id": ctx.request_id,
        "remaining_ms": remaining_ms,
        "invoked_function_arn": ctx.invoked_function_arn,
        "function_name": ctx.env_config.function_name,
        "memory_limit_in_mb": ctx.env_config.memory,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
