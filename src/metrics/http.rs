//! The metrics listener: `GET /metrics` (Prometheus text format), `GET /healthz` (the process
//! answers) and `GET /readyz` (every listener is bound, every service loop is alive and the
//! store answers). Plain HTTP, unauthenticated: `[metrics] listen` is loopback by default.
//!
//! May depend on: `metrics`, `watchdog` (loop liveness), the `store` trait, `http_listener::serve`
//! (the shared HTTP connection loop with its deadlines and caps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Metrics, StoreOperation};
use crate::config::HttpLimits;
use crate::store::Store;
use crate::watchdog::Heartbeats;

/// Content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long `/readyz` waits for the store.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` checks. The daemon marks listeners up once every one of them is bound.
pub struct Readiness {
    listeners_up: AtomicBool,
    store: Arc<dyn Store>,
    heartbeats: Arc<Heartbeats>,
    metrics: Arc<Metrics>,
}

impl Readiness {
    /// Not ready until [`Readiness::set_listeners_up`].
    pub fn new(store: Arc<dyn Store>, heartbeats: Arc<Heartbeats>, metrics: Arc<Metrics>) -> Self {
        Readiness {
            listeners_up: AtomicBool::new(false),
            store,
            heartbeats,
            metrics,
        }
    }

    /// Every listener is bound.
    pub fn set_listeners_up(&self) {
        self.listeners_up.store(true, Ordering::Release);
    }

    /// `Ok` when ready; otherwise why not.
    pub async fn check(&self) -> Result<(), String> {
        if !self.listeners_up.load(Ordering::Acquire) {
            return Err("listeners are not bound yet".into());
        }
        let stale = self.heartbeats.stale();
        if !stale.is_empty() {
            return Err(format!(
                "service loops not responding: {}",
                stale.join(", ")
            ));
        }
        let probe = self
            .metrics
            .time_store(StoreOperation::HealthCheck, self.store.sync_status());
        match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("store: {e}")),
            Err(_) => Err(format!(
                "store did not answer within {STORE_PROBE_TIMEOUT:?}"
            )),
        }
    }
}

#[derive(Clone)]
struct Endpoint {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// The router (exposed for tests).
pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Endpoint { metrics, readiness })
}

/// Serves the metrics endpoints on `listener` until `shutdown` fires, through the web
/// site's connection loop so that the same deadlines and caps (`limits`) apply: an
/// unauthenticated scrape port is a listener like any other.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::http_listener::serve(listener, None, router(metrics, readiness), limits, shutdown)
        .await
        .map_err(std::io::Error::other)
}

async fn scrape(State(endpoint): State<Endpoint>) -> Response {
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        endpoint.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(endpoint): State<Endpoint>) -> Response {
    match endpoint.readiness.check().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
