//! The admin API under `/v1`, behind a bearer token; refused when none is set.

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::rules::LoadError;
use crate::store::{GrantFilter, GrantRow, ManifestRow};

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/grants", get(grants))
        .route("/manifests", get(manifests))
        .route("/campaigns", get(campaigns))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

async fn require_token(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(expected) = app.settings.admin.token.as_deref() else {
        return Err(ApiError::unauthorized("the admin API is disabled: set admin.token"));
    };
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return Err(ApiError::unauthorized("missing or wrong admin bearer token"));
    }
    Ok(next.run(request).await)
}

async fn grants(
    State(app): State<Arc<AppState>>,
    Query(filter): Query<GrantFilter>,
) -> Result<Json<Vec<GrantRow>>, ApiError> {
    app.store.list_grants(&filter).await.map(Json).map_err(ApiError::unavailable)
}

async fn manifests(State(app): State<Arc<AppState>>) -> Result<Json<Vec<ManifestRow>>, ApiError> {
    app.store.list_manifests().await.map(Json).map_err(ApiError::unavailable)
}

#[derive(Serialize)]
struct CampaignView {
    id: String,
    name: String,
    game: String,
    file: String,
    revision: String,
    plugin: String,
    plugin_hash: String,
    enabled: bool,
}

#[derive(Serialize)]
struct CampaignsView {
    campaigns: Vec<CampaignView>,
    errors: Vec<LoadError>,
}

async fn campaigns(State(app): State<Arc<AppState>>) -> Json<CampaignsView> {
    let rules = app.rules.load();
    let campaigns = rules
        .campaigns()
        .iter()
        .map(|c| CampaignView {
            id: c.def.id.clone(),
            name: c.def.name.clone(),
            game: c.def.game.clone(),
            file: c.file.display().to_string(),
            revision: c.revision.clone(),
            plugin: c.plugin.name.clone(),
            plugin_hash: c.plugin.hash.0.clone(),
            enabled: c.def.enabled,
        })
        .collect();
    Json(CampaignsView { campaigns, errors: rules.errors().to_vec() })
}
