//! The HTTP surface: VHS and E2 ingest, health, metrics and the admin API.

mod admin;
mod error;

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ApiQuery};

use std::collections::BTreeMap;

use crate::config::Settings;
use crate::engine::breaker::Paused;
use crate::ingest::e2::{self, E2Hub};
use crate::ingest::vhs;
use crate::rules::reload::Reloader;
use crate::rules::RuleSet;
use crate::store::Store;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub inbox_notify: Arc<Notify>,
    pub metrics: Option<PrometheusHandle>,
    /// Installs plugin versions and reloads rules (admin API).
    pub reloader: Arc<Reloader>,
    /// Campaigns paused by their circuit breaker, as the engine last published.
    pub paused: Arc<ArcSwap<BTreeMap<String, Paused>>>,
    /// The E2 game-state endpoint.
    pub e2: Arc<E2Hub>,
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/vhs", post(vhs::post))
        .route("/vhs/{token}", post(vhs::post_with_token))
        // The VHS handler streams and bounds the body itself (vhs.max_body_bytes).
        .layer(DefaultBodyLimit::disable())
        .route("/e2", get(e2::upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/v1", admin::router(state.clone()))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn readyz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    match &app.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled in this process".to_string()),
    }
}
