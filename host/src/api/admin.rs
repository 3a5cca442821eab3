//! The admin API under `/v1`, behind a bearer token; refused when none is set.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use axum::extract::{Query, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::engine::breaker::Paused;
use crate::rules::LoadError;
use crate::store::{GrantFilter, GrantRow, ManifestRow, PluginVersion, RuleHistoryEntry};

/// Largest plugin upload.
const MAX_PLUGIN_BYTES: usize = 32 << 20;

pub fn router(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/grants", get(grants))
        .route("/manifests", get(manifests))
        .route("/campaigns", get(campaigns))
        .route("/campaigns/{id}/history", get(campaign_history))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}", put(upload_plugin).layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES)))
        .route("/plugins/{name}/versions", get(plugin_versions))
        .route("/plugins/{name}/rollback", post(rollback_plugin))
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
    /// Set while the circuit breaker holds the campaign.
    paused: Option<Paused>,
}

#[derive(Serialize)]
struct CampaignsView {
    campaigns: Vec<CampaignView>,
    errors: Vec<LoadError>,
}

async fn campaigns(State(app): State<Arc<AppState>>) -> Json<CampaignsView> {
    let rules = app.rules.load();
    let paused = app.paused.load();
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
            paused: paused.get(&c.def.id).cloned(),
        })
        .collect();
    Json(CampaignsView { campaigns, errors: rules.errors().to_vec() })
}

async fn campaign_history(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<RuleHistoryEntry>>, ApiError> {
    let history = app.store.rule_history(&id).await.map_err(ApiError::unavailable)?;
    if history.is_empty() {
        return Err(ApiError::not_found(format!("no campaign `{id}` has run on this host")));
    }
    Ok(Json(history))
}

#[derive(Serialize)]
struct PluginView {
    name: String,
    hash: String,
    campaigns: Vec<String>,
}

async fn plugins(State(app): State<Arc<AppState>>) -> Json<Vec<PluginView>> {
    let rules = app.rules.load();
    let mut list: Vec<PluginView> = rules
        .plugins()
        .values()
        .map(|p| PluginView {
            name: p.name.clone(),
            hash: p.hash.0.clone(),
            campaigns: rules.campaigns().iter().filter(|c| c.plugin.name == p.name).map(|c| c.def.id.clone()).collect(),
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Json(list)
}

/// Plugin names become file names: keep them plain.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "name",
            "plugin names are 1-64 of a-z, 0-9, - and _, starting with a letter or digit",
        ))
    }
}

#[derive(Serialize)]
struct Installed {
    name: String,
    hash: String,
    serving: bool,
}

async fn upload_plugin(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Installed>, ApiError> {
    check_name(&name)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("body", "the body must be the plugin's .wasm bytes"));
    }
    let hash = app.reloader.install(&name, body.to_vec()).await.map_err(|e| ApiError::unprocessable("body", e))?;
    tracing::info!(plugin = %name, %hash, "plugin installed through the admin API");
    Ok(Json(Installed { name, hash: hash.0, serving: true }))
}

#[derive(Serialize)]
struct VersionView {
    #[serde(flatten)]
    version: PluginVersion,
    serving: bool,
}

async fn plugin_versions(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    check_name(&name)?;
    let serving = app.rules.load().plugins().get(&name).map(|p| p.hash.0.clone());
    let versions = app.store.plugin_versions(&name).await.map_err(ApiError::unavailable)?;
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("no plugin `{name}` has been loaded on this host")));
    }
    Ok(Json(
        versions
            .into_iter()
            .map(|v| VersionView { serving: serving.as_deref() == Some(v.hash.as_str()), version: v })
            .collect(),
    ))
}

#[derive(serde::Deserialize)]
struct RollbackRequest {
    hash: String,
}

/// Puts an earlier version of a plugin back in force, for every campaign that uses it.
async fn rollback_plugin(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Installed>, ApiError> {
    check_name(&name)?;
    let request: RollbackRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("hash", format!("expected {{\"hash\": \"<sha256>\"}}: {e}")))?;
    let bytes = app
        .store
        .plugin_bytes(&name, &request.hash)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| ApiError::not_found(format!("plugin `{name}` has no version {}", request.hash)))?;
    let hash = app.reloader.install(&name, bytes).await.map_err(|e| ApiError::unprocessable("hash", e))?;
    tracing::info!(plugin = %name, %hash, "plugin rolled back through the admin API");
    Ok(Json(Installed { name, hash: hash.0, serving: true }))
}
