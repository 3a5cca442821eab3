//! The admin API under `/v1`, behind a bearer token; refused when none is set.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use crate::config::AdminSettings;
use crate::domain::{AccountLink, Paused};
use crate::engine::PausedCampaigns;
use crate::http::{ApiError, ApiQuery};
use crate::rules::reload::Reloader;
use crate::rules::{LoadError, RuleSet, RulesError};
use crate::secrets::same_secret;
use crate::store::{manifest_status, GrantFilter, GrantRow, ManifestRow, PluginVersion, RuleHistoryEntry, Store};

/// What the admin handlers need.
pub struct Admin {
    pub settings: AdminSettings,
    pub store: Arc<Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    /// Installs plugin versions and reloads rules.
    pub reloader: Arc<Reloader>,
    /// Campaigns paused by their circuit breaker, as the engine last published.
    pub paused: Arc<PausedCampaigns>,
}

/// Largest plugin upload.
const MAX_PLUGIN_BYTES: usize = 32 << 20;
/// Largest bulk link upload (about half a million links).
const MAX_LINKS_BYTES: usize = 64 << 20;
/// The admin routes, behind the bearer token.
pub fn router(state: Arc<Admin>) -> Router<AppState> {
    Router::new()
        .route("/grants", get(grants))
        .route("/manifests", get(manifests))
        .route("/manifests/{id}/retry", post(retry_manifest))
        .route("/campaigns", get(campaigns))
        .route("/campaigns/{id}/history", get(campaign_history))
        .route("/plugins", get(plugins))
        .route("/plugins/{name}", put(upload_plugin).layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES)))
        .route("/plugins/{name}/versions", get(plugin_versions))
        .route("/plugins/{name}/rollback", post(rollback_plugin))
        .route("/links", put(put_links).get(get_links).layer(DefaultBodyLimit::max(MAX_LINKS_BYTES)))
        .route_layer(middleware::from_fn_with_state(state, require_token))
}

async fn require_token(State(app): State<Arc<Admin>>, request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(expected) = app.settings.token.as_deref() else {
        return Err(ApiError::unauthorized("the admin API is disabled: set admin.token"));
    };
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same_secret(given, expected) {
        return Err(ApiError::unauthorized("missing or wrong admin bearer token"));
    }
    Ok(next.run(request).await)
}

async fn grants(
    State(app): State<Arc<Admin>>,
    ApiQuery(filter): ApiQuery<GrantFilter>,
) -> Result<Json<Vec<GrantRow>>, ApiError> {
    if let Some(delivery) = filter.delivery.as_deref().filter(|d| !GrantFilter::DELIVERY.contains(d)) {
        let known = GrantFilter::DELIVERY.join(", ");
        return Err(ApiError::bad_request("delivery", format!("`{}` is not one of {known}", delivery.escape_debug())));
    }
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if until <= since {
            return Err(ApiError::bad_request("until", "must be after `since`"));
        }
    }
    app.store.list_grants(&filter).await.map(Json).map_err(ApiError::from)
}

#[derive(Serialize)]
struct Linked {
    linked: u64,
}

/// `PUT /v1/links`: registers one link or a JSON array of them, all or none.
async fn put_links(State(app): State<Arc<Admin>>, body: Bytes) -> Result<Json<Linked>, ApiError> {
    let links = parse_links(&body)?;
    let linked = app.store.put_links(&links).await?;
    metrics::counter!("drops_links_put_total").increment(linked);
    Ok(Json(Linked { linked }))
}

fn parse_links(body: &[u8]) -> Result<Vec<AccountLink>, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request("", format!("not JSON: {e}")))?;
    let (links, many) = match value {
        serde_json::Value::Array(_) => {
            let links: Vec<AccountLink> = serde_path_to_error::deserialize(value).map_err(ApiError::bad_json)?;
            (links, true)
        }
        _ => {
            let link: AccountLink = serde_path_to_error::deserialize(value).map_err(ApiError::bad_json)?;
            (vec![link], false)
        }
    };
    // Each id was checked by the domain's id rule while it was parsed.
    let mut seen = std::collections::HashMap::new();
    for (i, link) in links.iter().enumerate() {
        if let Some(other) = seen.insert(&link.twitch_user_id, &link.game_account_id) {
            if other != &link.game_account_id {
                let field = if many { format!("[{i}].twitch_user_id") } else { "twitch_user_id".to_string() };
                return Err(ApiError::bad_request(
                    field,
                    format!("`{}` is linked twice in this request, to different accounts", link.twitch_user_id),
                ));
            }
        }
    }
    Ok(links)
}

#[derive(serde::Deserialize)]
struct LinkQuery {
    twitch_user_id: Option<String>,
    game_account_id: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/links?twitch_user_id=...` (or `game_account_id`, or neither for all, `limit` up to 10,000).
async fn get_links(
    State(app): State<Arc<Admin>>,
    ApiQuery(q): ApiQuery<LinkQuery>,
) -> Result<Json<Vec<AccountLink>>, ApiError> {
    let limit = q.limit.unwrap_or(1000).min(10_000);
    app.store
        .links(q.twitch_user_id.as_deref(), q.game_account_id.as_deref(), limit)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestQuery {
    status: Option<String>,
    /// The last id of the previous page.
    after: Option<String>,
    /// At most this many (default 1,000, at most 10,000).
    limit: Option<u32>,
}

async fn manifests(
    State(app): State<Arc<Admin>>,
    ApiQuery(q): ApiQuery<ManifestQuery>,
) -> Result<Json<Vec<ManifestRow>>, ApiError> {
    if let Some(status) = q.status.as_deref().filter(|s| !manifest_status::ALL.contains(s)) {
        let known = manifest_status::ALL.join(", ");
        return Err(ApiError::bad_request("status", format!("`{}` is not one of {known}", status.escape_debug())));
    }
    if let Some(after) = q.after.as_deref() {
        if app.store.manifest(after).await.map_err(ApiError::from)?.is_none() {
            return Err(ApiError::bad_request("after", "no manifest has that id"));
        }
    }
    let limit = q.limit.unwrap_or(1_000).clamp(1, 10_000);
    let rows = app.store.list_manifests_page(q.status.as_deref(), q.after.as_deref(), limit).await;
    rows.map(Json).map_err(ApiError::from)
}

/// Queues a failed manifest for upload again: same id, same users.
async fn retry_manifest(State(app): State<Arc<Admin>>, Path(id): Path<String>) -> Result<Json<ManifestRow>, ApiError> {
    if app.store.retry_manifest(&id).await.map_err(ApiError::from)? {
        tracing::info!(manifest = %id, "manifest queued for upload again by the admin API");
    } else {
        return Err(match app.store.manifest(&id).await.map_err(ApiError::from)? {
            None => ApiError::not_found("no manifest has that id"),
            Some(m) => ApiError::conflict(format!("only a failed manifest is retried; this one is {}", m.status)),
        });
    }
    match app.store.manifest(&id).await.map_err(ApiError::from)? {
        Some(m) => Ok(Json(m)),
        None => Err(ApiError::not_found("no manifest has that id")),
    }
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

async fn campaigns(State(app): State<Arc<Admin>>) -> Json<CampaignsView> {
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
    State(app): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<RuleHistoryEntry>>, ApiError> {
    let history = app.store.rule_history(&id).await?;
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

async fn plugins(State(app): State<Arc<Admin>>) -> Json<Vec<PluginView>> {
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
    State(app): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Installed>, ApiError> {
    check_name(&name)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("body", "the body must be the plugin's .wasm bytes"));
    }
    let hash = app.reloader.install(&name, body.to_vec()).await.map_err(|e| install_error("body", e))?;
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
    State(app): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<VersionView>>, ApiError> {
    check_name(&name)?;
    let serving = app.rules.load().plugins().get(&name).map(|p| p.hash.0.clone());
    let versions = app.store.plugin_versions(&name).await?;
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
    State(app): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Installed>, ApiError> {
    check_name(&name)?;
    let request: RollbackRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("hash", format!("expected {{\"hash\": \"<sha256>\"}}: {e}")))?;
    let bytes = app
        .store
        .plugin_bytes(&name, &request.hash)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("plugin `{name}` has no version {}", request.hash)))?;
    let hash = app.reloader.install(&name, bytes).await.map_err(|e| install_error("hash", e))?;
    tracing::info!(plugin = %name, %hash, "plugin rolled back through the admin API");
    Ok(Json(Installed { name, hash: hash.0, serving: true }))
}

/// A refused plugin is the uploader's to fix (422, naming `field`); the
/// host failing to write or compile it is not (500, or 503 when the task was
/// cancelled by a shutdown).
fn install_error(field: &str, e: RulesError) -> ApiError {
    match e {
        e if e.is_refusal() => ApiError::unprocessable(field, e.to_string()),
        RulesError::Task(join) if join.is_cancelled() => ApiError::unavailable(join),
        e => ApiError::internal(e),
    }
}
