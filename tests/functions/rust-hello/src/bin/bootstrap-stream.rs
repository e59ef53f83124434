//! Stratus test fixture: a streaming `provided.al2023` function built with
//! `lambda_runtime::streaming`. Deploy the binary as `bootstrap`.
//!
//! Streams `event.chunks` (default 3) lines `chunk <i>\n`, `event.delay_ms`
//! (default 300) apart, behind the crate's http-integration prelude.

use std::time::Duration;

use lambda_runtime::streaming::{Body, Response, channel};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

async fn handler(event: LambdaEvent<Value>) -> Result<Response<Body>, Error> {
    let (payload, _ctx) = event.into_parts();
    let chunks = payload.get("chunks").and_then(Value::as_u64).unwrap_or(3);
    let delay = payload
        .get("delay_ms")
        .and_then(Value::as_u64)
        .unwrap_or(300);
    let (mut tx, rx) = channel();
    tokio::spawn(async move {
        for i in 0..chunks {
            if tx.send_data(format!("chunk {i}\n").into()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
    });
    Ok(Response::from(rx))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
