//! The front end: Stratus's Lambda REST API.
//!
//! Owns the HTTP surface (the Lambda control plane and Invoke, API version
//! 2015-03-31), request validation with Lambda's exact error types and
//! messages, the mapping of every client-visible error to its HTTP form, the
//! function registry (configurations, cached in memory, written through to
//! the [`MetaStore`]), code uploads to the [`BlobStore`] (and the removal of
//! code no function uses any more, module `code_gc`) and presigned code
//! downloads. For an invoke it resolves the function, asks the counting
//! service for a permit and hands the invocation to the assignment service;
//! it never starts or picks sandboxes itself. An `Event` invoke is queued
//! (module `events`) and run later through the same path by the dispatcher
//! of `stratus-async-invoke`, for which [`Frontend`] is the `EventTarget`;
//! module `event_config` serves the event invoke configuration API, module
//! `provisioned` the provisioned concurrency configs.
//!
//! It also serves the Prometheus scrape (`GET /metrics`, module `metrics`) and
//! records the invoke counters and histograms it exposes, the liveness and
//! readiness probes (`GET /health`, `GET /ready`, module `ready`), and puts
//! `Server: stratus/<version>` on every response.
//!
//! The router is built by [`router`], so handlers can be tested without a
//! socket.

mod admin;
mod aliases;
mod auth;
mod code_gc;
mod concurrency;
mod control;
mod error;
mod event_config;
mod events;
mod invoke;
mod layers;
mod logs;
mod metrics;
mod offload;
mod presign;
mod provisioned;
mod published;
mod ready;
mod registry;
mod stream;
mod tags;
mod urls;
mod validate;
mod versions;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::routing::{any, get, post, put};
use stratus_api::service::{Counting, Invoker, Logs, Worker};
use stratus_async_invoke::EventQueue;
use stratus_store::{BlobStore, MetaStore};

pub use auth::keys::AdminKey;
pub use auth::sigv4;
pub use ready::{Readiness, ReadinessCheck};
pub use registry::{FunctionRecord, RegistryError};

/// What the front end needs from the rest of the system.
#[derive(Debug, Clone)]
pub struct FrontendDeps {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub counting: Arc<dyn Counting>,
    pub invoker: Arc<dyn Invoker>,
    /// Used to unpack and check code when it is uploaded.
    pub worker: Arc<dyn Worker>,
    /// Function logs, read by `stratus logs`.
    pub logs: Arc<dyn Logs>,
    /// The durable queue of asynchronous (`Event`) invocations; the
    /// dispatcher of `stratus-async-invoke` runs them through this front end.
    pub events: Arc<dyn EventQueue>,
    /// Secret for presigned code URLs.
    pub presign_key: Vec<u8>,
    /// The server's admin key (the other keys are in the store).
    pub admin_key: AdminKey,
    /// Interpreters available for managed runtimes: a runtime whose
    /// interpreter is missing is refused at create time.
    pub interpreters: Interpreters,
    /// What `/ready` checks besides the store (sandbox backend, capacity...).
    pub readiness: Readiness,
}

/// Which managed runtime families this server can run.
#[derive(Debug, Clone)]
pub struct Interpreters {
    pub python: Option<std::path::PathBuf>,
    pub node: Option<std::path::PathBuf>,
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct Frontend {
    deps: FrontendDeps,
    registry: registry::Registry,
    /// Published versions and aliases.
    published: published::Published,
    keys: auth::keys::Keys,
    metrics: metrics::Metrics,
    /// Uploads in flight and code removals, so that neither loses the other.
    code_gc: code_gc::CodeGc,
    /// Function URL configs (by function and by URL id).
    urls: urls::UrlRegistry,
    /// Layer versions.
    layers: layers::LayerRegistry,
}

/// Errors starting the front end.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("loading functions from the store: {0}")]
    Load(#[from] RegistryError),
    #[error("loading function URL configs from the store: {0}")]
    LoadUrls(#[source] RegistryError),
    #[error("loading layer versions from the store: {0}")]
    LoadLayers(#[source] RegistryError),
    #[error("loading accounts and keys from the store: {0}")]
    Keys(#[from] auth::keys::KeysError),
}

impl Frontend {
    /// Loads the registry from the store.
    pub async fn new(deps: FrontendDeps) -> Result<Arc<Self>, FrontendError> {
        let registry = registry::Registry::load(Arc::clone(&deps.meta)).await?;
        let published = published::Published::load(Arc::clone(&deps.meta), &registry).await?;
        let keys = auth::keys::Keys::load(Arc::clone(&deps.meta), deps.admin_key.clone()).await?;
        let urls = urls::UrlRegistry::load(Arc::clone(&deps.meta))
            .await
            .map_err(FrontendError::LoadUrls)?;
        let layers = layers::LayerRegistry::load(Arc::clone(&deps.meta))
            .await
            .map_err(FrontendError::LoadLayers)?;
        let this = Arc::new(Frontend {
            deps,
            registry,
            published,
            keys,
            metrics: metrics::Metrics::default(),
            code_gc: code_gc::CodeGc::default(),
            urls,
            layers,
        });
        concurrency::load_reservations(&this).await;
        control::finish_pending(&this).await;
        provisioned::load(&this).await;
        Ok(this)
    }

    /// Number of functions known (all accounts).
    pub fn function_count(&self) -> usize {
        self.registry.len()
    }

    /// The code digests some function or published version uses (its code
    /// or one of its layers), and those of every layer version.
    pub fn code_digests(&self) -> std::collections::BTreeSet<String> {
        let mut digests: std::collections::BTreeSet<String> = self
            .registry
            .all()
            .into_iter()
            .flat_map(|c| {
                let r = &c.record;
                std::iter::once(r.code_digest.clone())
                    .chain(r.layers.iter().map(|l| l.code_digest.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        digests.extend(self.published.digests());
        digests.extend(self.layers.digests());
        digests
    }

    /// Deletes stored code archives whose digest is not in `keep` (what
    /// [`Frontend::code_digests`] returns): what a crash left before the
    /// server could remove it itself. Only safe while no create or update is
    /// in flight, i.e. at start-up before the API listens: an upload is
    /// stored before the record that refers to it. Returns how many. While
    /// the server runs, deletes and updates remove what they leave unused
    /// (`collect_code`).
    pub async fn remove_unused_code(
        &self,
        keep: &std::collections::BTreeSet<String>,
    ) -> Result<usize, stratus_store::BlobError> {
        let mut removed = 0;
        for digest in self.deps.blobs.list().await? {
            if !keep.contains(&digest) {
                self.deps.blobs.delete(&digest).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the archive of `digest` and has the worker forget its
    /// unpacked copy, if no function or version record names it and no
    /// upload of it is in flight (see `code_gc`). Failures are logged: what is left is
    /// removed at the next start.
    async fn collect_code(&self, digest: &str) {
        let Some(_removal) = self.code_gc.begin_removal(digest, |d| {
            self.registry.uses(d) || self.published.uses_digest(d) || self.layers.uses(d)
        }) else {
            return;
        };
        if let Err(e) = self.deps.blobs.delete(digest).await {
            tracing::warn!(digest, error = %e, "could not remove an unused code archive");
            return;
        }
        self.deps.worker.remove_code(digest);
        tracing::info!(digest, "removed code no function uses");
    }
}

/// Largest request body of the control plane: a 50 MB zip, base64 in JSON.
const CONTROL_BODY_LIMIT: usize = 72 * 1024 * 1024;

/// Builds the HTTP router.
pub fn router(fe: Arc<Frontend>) -> Router {
    signed_routes(Arc::clone(&fe))
        .route("/_stratus/code/{account}/{digest}", get(presign::download))
        .merge(open_routes())
        .fallback(error::unknown_operation)
        .method_not_allowed_fallback(error::unknown_operation)
        .layer(DefaultBodyLimit::max(CONTROL_BODY_LIMIT))
        .layer(axum::middleware::map_response(add_request_id))
        .layer(axum::middleware::map_response(add_server_header))
        .with_state(fe)
}

/// The Lambda API, the CLI's `/_stratus/` extensions and the admin API:
/// every request must carry a valid SigV4 signature ([`auth::authenticate`],
/// a `route_layer`, so it wraps these routes only).
fn signed_routes(fe: Arc<Frontend>) -> Router<Arc<Frontend>> {
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(control::create_function).get(control::list_functions),
        )
        .route("/2015-03-31/functions/", get(control::list_functions))
        .route(
            "/2015-03-31/functions/{name}",
            get(control::get_function).delete(control::delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(control::get_configuration).put(control::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            put(control::update_code),
        )
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::invoke),
        )
        .route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            post(stream::invoke_with_response_stream),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            post(versions::publish_version).get(versions::list_versions),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            post(aliases::create_alias).get(aliases::list_aliases),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(aliases::get_alias)
                .put(aliases::update_alias)
                .delete(aliases::delete_alias),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            put(concurrency::put_concurrency).delete(concurrency::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(concurrency::get_concurrency),
        )
        .route(
            "/2016-08-19/account-settings",
            get(concurrency::account_settings),
        )
        .route(
            "/2016-08-19/account-settings/",
            get(concurrency::account_settings),
        )
        .route(
            "/2017-03-31/tags/{arn}",
            get(tags::list_tags)
                .post(tags::tag_resource)
                .delete(tags::untag_resource),
        )
        .route(
            "/2021-10-31/functions/{name}/url",
            get(urls::get_url)
                .post(urls::create_url)
                .put(urls::update_url)
                .delete(urls::delete_url),
        )
        .route("/2021-10-31/functions/{name}/urls", get(urls::list_urls))
        .route("/2018-10-31/layers", get(layers::list_layers))
        .route("/2018-10-31/layers/", get(layers::list_layers))
        .route(
            "/2018-10-31/layers/{name}/versions",
            post(layers::publish).get(layers::list_versions),
        )
        .route(
            "/2018-10-31/layers/{name}/versions/{version}",
            get(layers::get_version).delete(layers::delete_version),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            put(event_config::put_config)
                .post(event_config::update_config)
                .get(event_config::get_config)
                .delete(event_config::delete_config),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config/list",
            get(event_config::list_configs),
        )
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            put(provisioned::put_config)
                .get(provisioned::get_config)
                .delete(provisioned::delete_config),
        )
        .route("/_stratus/logs/{name}", get(logs::read))
        .route(
            "/_stratus/functions/{name}/sandboxes",
            get(control::list_sandboxes),
        )
        .route(
            "/_stratus/admin/accounts",
            post(admin::create_account).get(admin::list_accounts),
        )
        .route(
            "/_stratus/admin/keys",
            post(admin::create_key).get(admin::list_keys),
        )
        .route(
            "/_stratus/admin/keys/{id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route_layer(axum::middleware::from_fn_with_state(fe, auth::authenticate))
}

/// Routes that answer without credentials: the liveness and readiness
/// probes, the Prometheus scrape and function URLs (which check an
/// `AWS_IAM` URL's signature themselves, `urls::serve`). (Presigned code
/// downloads carry their own HMAC in the URL.) Never put
/// [`auth::authenticate`] on these.
fn open_routes() -> Router<Arc<Frontend>> {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready::serve))
        .route("/metrics", get(metrics::serve))
        .route("/_stratus/url/{id}", any(urls::serve))
        .route("/_stratus/url/{id}/", any(urls::serve))
        .route("/_stratus/url/{id}/{*path}", any(urls::serve))
}

/// This server's version, as in the `Server` header: `stratus/0.1.0`.
pub const SERVER_HEADER: &str = concat!("stratus/", env!("CARGO_PKG_VERSION"));

/// Every response carries `Server: stratus/<version>`.
async fn add_server_header(mut resp: axum::response::Response) -> axum::response::Response {
    resp.headers_mut().insert(
        axum::http::header::SERVER,
        HeaderValue::from_static(SERVER_HEADER),
    );
    resp
}

/// Every response carries `x-amzn-RequestId` (Invoke sets its own).
async fn add_request_id(mut resp: axum::response::Response) -> axum::response::Response {
    if !resp.headers().contains_key("x-amzn-requestid")
        && let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
    {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

#[cfg(test)]
mod tests;
