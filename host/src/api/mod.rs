//! The HTTP surface: composes the ingest routes (VHS, E2), health, metrics
//! and the admin API into one router. Each handler takes only the state it
//! needs, through axum's `FromRef`.

mod admin;
mod console;
mod overview;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::secrets::redact_path;

pub use admin::Admin;
pub use overview::{StreamCache, MAX_STREAMS};

use crate::health::Liveness;
use crate::ingest::e2::{self, E2Hub};
use crate::ingest::eventsub::{self, EventSubIngest};
use crate::ingest::vhs::{self, VhsIngest};
use crate::store::Store;

/// What health and metrics need.
pub struct Health {
    pub store: Arc<Store>,
    pub liveness: Arc<Liveness>,
    pub metrics: Option<PrometheusHandle>,
}

/// The state of the whole router: one narrow state per group of routes.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub vhs: Arc<VhsIngest>,
    pub e2: Arc<E2Hub>,
    pub eventsub: Arc<EventSubIngest>,
    pub admin: Arc<Admin>,
    pub health: Arc<Health>,
}

/// Builds the router.
pub fn router(state: AppState) -> Router {
    // A VHS request, body included, has a deadline: a trickling client cannot
    // hold a body slot for longer (Twitch itself gives up after 15 s).
    let vhs_deadline = Duration::from_secs(state.vhs.settings.request_timeout_secs);
    let eventsub_limit = usize::try_from(state.eventsub.settings.max_body_bytes).unwrap_or(usize::MAX);
    // Twitch counts an answer slower than a few seconds as a failure; a
    // client trickling its body is cut off well before it could hold a slot long.
    let eventsub = Router::new()
        .route("/eventsub", post(eventsub::post))
        .layer(DefaultBodyLimit::max(eventsub_limit))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(10)));
    Router::new()
        .route("/vhs", post(vhs::post))
        .route("/vhs/{token}", post(vhs::post_with_token))
        // The VHS handler streams and bounds the body itself (vhs.max_body_bytes).
        .layer(DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, vhs_deadline))
        .merge(eventsub)
        .route("/e2", get(e2::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // The document of /v1 is public: it holds no data, and tools read it before they have a token.
        .route("/v1/openapi.json", get(openapi))
        .nest("/v1", admin::router(state.admin.clone()))
        .route("/console", get(console::page))
        .route("/console/assets/{file}", get(console::asset))
        .merge(
            Router::new()
                .route("/console/login", post(console::login))
                .route("/console/logout", post(console::logout))
                .layer(DefaultBodyLimit::max(console::MAX_LOGIN_BYTES))
                // A form of 4 KiB arrives at once; a client trickling it is cut off.
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, console::LOGIN_DEADLINE)),
        )
        // The default span names the whole URI, and with it the VHS path token.
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            tracing::debug_span!("request", method = %request.method(), path = %redact_path(request.uri().path()))
        }))
        .with_state(state)
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.liveness.stopped().is_some() {
        return (StatusCode::SERVICE_UNAVAILABLE, "engine stopped".to_string());
    }
    match health.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(e) => {
            // The error may name hosts and users: it goes to the log, not to whoever asks.
            tracing::warn!("readiness: database unavailable: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable".to_string())
        }
    }
}

async fn metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match &health.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled in this process".to_string()),
    }
}

/// The admin API's OpenAPI 3.1 document, built once.
async fn openapi() -> axum::Json<&'static serde_json::Value> {
    static DOC: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(admin::openapi_json);
    axum::Json(&DOC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_fails_once_the_engine_has_stopped() {
        let (_dir, store) = crate::store::temp_sqlite().await;
        let health = Arc::new(Health { store: Arc::new(store), liveness: Arc::default(), metrics: None });
        assert_eq!(readyz(State(health.clone())).await.into_response().status(), StatusCode::OK);
        health.liveness.stop("the engine stopped: test");
        assert_eq!(readyz(State(health)).await.into_response().status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
