//! `GET /ready`: readiness, for load balancers and orchestrators.
//!
//! `/health` says the process serves HTTP (liveness); `/ready` says it can
//! take work: the metadata store answers a read, and every check the
//! composition root handed over in [`Readiness`] passes (in `stratus server`:
//! the sandbox backend is usable, placement has room for a new sandbox). The front end
//! does not know what those checks look at; each is a named closure.
//!
//! The answer is 200 or 503 with a JSON body naming each check:
//! `{"ready": false, "checks": {"store": "ok", "capacity": "no room for a 128 MB sandbox: ..."}}`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::Frontend;

/// One readiness check: `Err` says why the server cannot take work now.
/// It must be quick and must not block (it runs on the async threads).
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The named checks `/ready` runs besides the store read.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, ReadinessCheck)>,
}

impl Readiness {
    /// Adds a check reported under `name`.
    pub fn with(mut self, name: &'static str, check: ReadinessCheck) -> Self {
        self.checks.push((name, check));
        self
    }
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.checks.iter().map(|(n, _)| n))
            .finish()
    }
}

/// How long the store read may take before the store counts as not answering.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn serve(State(fe): State<Arc<Frontend>>) -> Response {
    let mut checks = Map::new();
    let mut ready = true;
    let mut record = |name: &str, r: Result<(), String>| {
        let v = match r {
            Ok(()) => "ok".to_string(),
            Err(e) => {
                ready = false;
                e
            }
        };
        checks.insert(name.to_string(), Value::String(v));
    };
    let store = match tokio::time::timeout(STORE_TIMEOUT, fe.deps.meta.get("_stratus/ready")).await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("the metadata store failed a read: {e}")),
        Err(_) => Err(format!(
            "the metadata store did not answer within {} s",
            STORE_TIMEOUT.as_secs()
        )),
    };
    record("store", store);
    for (name, check) in &fe.deps.readiness.checks {
        record(name, check());
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "checks": checks }))).into_response()
}
