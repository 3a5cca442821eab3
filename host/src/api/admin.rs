//! The admin API under `/v1`, behind a bearer token; refused when none is set.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path};
use axum::extract::{Request, State};
use axum::http::header::CACHE_CONTROL;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;

use super::console;
use super::overview::{self, StreamCache};
use super::AppState;
use crate::config::{AdminSettings, Settings};
use crate::delivery::eventsub::{DropsSubscription, Subscription};
use crate::delivery::twitch::UploadError;
use crate::delivery::TwitchClient;
use crate::domain::{AccountLink, Paused};
use crate::engine::PausedCampaigns;
use crate::http::{ApiError, ApiQuery, ErrorBody};
use crate::rules::reload::{LoadedCampaignView, Reloader};
use crate::rules::{LoadError, RuleSet, RulesError};
use crate::store::{
    manifest_status, EntitlementFilter, EntitlementRow, GrantFilter, GrantRow, HostRow, LeaseRow, ManifestRow,
    PluginVersion, RuleHistoryEntry, Store,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

/// What the admin handlers need.
pub struct Admin {
    pub settings: AdminSettings,
    pub store: Arc<Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    /// Installs plugin versions and reloads rules.
    pub reloader: Arc<Reloader>,
    /// Campaigns paused by their circuit breaker, as the engine last published.
    pub paused: Arc<PausedCampaigns>,
    /// A host not seen for this long is no longer listed as up.
    pub lease_ttl_ms: u64,
    /// Other hosts evaluate some campaigns: their pauses are read from the database.
    pub cluster: bool,
    /// Twitch's API under the app's credentials, when configured (EventSub subscriptions).
    pub twitch: Option<Arc<TwitchClient>>,
    /// The EventSub subscription's secret (`eventsub.secret`).
    pub eventsub_secret: Option<String>,
    /// The host's whole configuration: dry runs replay under its limits, and
    /// the overview lists its sinks.
    pub host: Arc<Settings>,
    /// Cancelled when the host shuts down: open overview streams end.
    pub stop: CancellationToken,
    /// Bounds the overview streams open at once.
    pub streams: Arc<Semaphore>,
    /// One dry run at a time: each compiles plugins and replays a recording.
    pub replays: Arc<Semaphore>,
    /// The overview the streams share.
    pub stream_cache: StreamCache,
}

/// Largest plugin upload.
const MAX_PLUGIN_BYTES: usize = 32 << 20;
/// Largest campaign file upload.
const MAX_CAMPAIGN_BYTES: usize = 1 << 20;
/// Largest bulk link upload (about half a million links).
const MAX_LINKS_BYTES: usize = 64 << 20;
/// The admin routes, behind the bearer token. Every route is registered
/// together with its OpenAPI description (`utoipa-axum`'s `routes!`), so the
/// document cannot miss one.
pub fn router(state: Arc<Admin>) -> Router<AppState> {
    let (router, _) = documented_routes().split_for_parts();
    router.route_layer(middleware::from_fn_with_state(state, require_token))
}

fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(AdminApi::openapi())
        .routes(routes!(grants))
        .routes(routes!(entitlements))
        .routes(routes!(retry_entitlement))
        .routes(routes!(manifests))
        .routes(routes!(retry_manifest))
        .routes(routes!(campaigns))
        .routes(routes!(campaign_history))
        .routes(routes!(plugins))
        .routes(routes!(plugin_versions))
        .routes(routes!(plugin_version_bytes))
        .routes(routes!(rollback_plugin))
        .routes(routes!(cluster))
        .routes(routes!(overview::overview))
        .routes(routes!(overview::overview_stream))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(overview::replay))
                .layer(DefaultBodyLimit::max(overview::MAX_REPLAY_BYTES)),
        )
        .merge(
            OpenApiRouter::new()
                .routes(routes!(list_subscriptions, create_subscription))
                .routes(routes!(delete_subscription))
                .layer(DefaultBodyLimit::max(64 << 10)),
        )
        .merge(OpenApiRouter::new().routes(routes!(upload_plugin)).layer(DefaultBodyLimit::max(MAX_PLUGIN_BYTES)))
        .merge(OpenApiRouter::new().routes(routes!(upload_campaign)).layer(DefaultBodyLimit::max(MAX_CAMPAIGN_BYTES)))
        .merge(OpenApiRouter::new().routes(routes!(put_links, get_links)).layer(DefaultBodyLimit::max(MAX_LINKS_BYTES)))
}

/// The OpenAPI 3.1 document of `/v1`, generated from the handlers and their types.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = documented_routes().split_for_parts();
    // The routes are nested under /v1 by `api::router`.
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths.into_iter().map(|(path, item)| (format!("/v1{path}"), item)).collect();
    doc
}

/// Every `application/wasm` body or answer in `doc` described as a binary string.
fn binary_bodies(doc: &mut serde_json::Value) {
    match doc {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "application/wasm" {
                    if let Some(media) = value.as_object_mut() {
                        media.insert("schema".into(), serde_json::json!({"type": "string", "format": "binary"}));
                    }
                } else {
                    binary_bodies(value);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(binary_bodies),
        _ => {}
    }
}

/// The document as served: [`openapi`] with what utoipa cannot express: the
/// overview stream's events, whose `data` has a `contentSchema` (JSON Schema
/// 2020-12, which OpenAPI 3.1 uses; utoipa only writes `x-` extensions), and links
/// from the lists to the retry of an item (utoipa 5 writes a link's
/// `operationId` as `operation_id`).
pub fn openapi_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi()).unwrap_or_default();
    let retries = [
        ("/v1/manifests", "retry_manifest", "queue this failed manifest for upload again"),
        ("/v1/entitlements", "retry_entitlement", "ask Twitch again to mark this entitlement FULFILLED"),
    ];
    for (list, operation, what) in retries {
        let pointer = format!("/paths/{}/get/responses/200", list.replace('/', "~1"));
        if let Some(response) = doc.pointer_mut(&pointer).and_then(|r| r.as_object_mut()) {
            // The first item's id: a generated client reaches the retry with a real one.
            let link = serde_json::json!({
                "operationId": operation, "parameters": {"id": "$response.body#/0/id"}, "description": what,
            });
            response.insert("links".into(), serde_json::json!({ "retry": link }));
        }
    }
    // Raw bytes are a binary string (utoipa writes `Vec<u8>` as an array of integers).
    binary_bodies(&mut doc);
    // Each server-sent event as an object (`event`, `data`, `id`, `retry`, as
    // OpenAPI 3.2's `itemSchema` describes events and SSE-aware clients parse
    // them): `data` is a string whose content is an `Overview`, or an
    // `ErrorBody` for `event: error`.
    let stream = "/paths/~1v1~1overview~1stream/get/responses/200/content/text~1event-stream";
    if let Some(content) = doc.pointer_mut(stream).and_then(|c| c.as_object_mut()) {
        let event = serde_json::json!({
            "type": "object",
            "description": "one server-sent event: `event: overview` every second, `event: error` when storage is away",
            "required": ["data"],
            "properties": {
                "event": {"type": "string", "enum": ["overview", "error"]},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {"oneOf": [
                        {"$ref": "#/components/schemas/Overview"},
                        {"$ref": "#/components/schemas/ErrorBody"},
                    ]},
                },
                "id": {"type": "string"},
                "retry": {"type": "integer", "minimum": 0},
            },
        });
        content.insert("schema".into(), event);
    }
    doc
}

/// This document, described in itself: the one `/v1` route without the token.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()), responses(
    (status = 200, description = "the OpenAPI 3.1 document of /v1", content_type = "application/json")))]
#[allow(dead_code)] // Served by `api::router`, outside the token layer; here only to be described.
async fn openapi_document() {}

#[derive(OpenApi)]
#[openapi(
    paths(openapi_document),
    info(title = "drops-host admin API", description = "Grants, manifests and their delivery, campaigns, plugins and account links, and the console's overview and dry runs. Every route needs `Authorization: Bearer <admin.token>` (or the console's session cookie, with `X-Drops-Console: 1` on changes); every error answers `{\"error\", \"field\"?}`."),
    modifiers(&BearerToken),
    security(("admin_token" = []))
)]
struct AdminApi;

/// The answer every route behind the token may give; in each route's responses.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // Describes `require_token`'s refusal; never built.
pub(super) enum TokenRefused {
    #[response(status = 401, description = "missing or wrong admin token")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "a change asked for with the console's session cookie alone, without `X-Drops-Console: 1`"
    )]
    Forbidden(ErrorBody),
}

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("admin.token")).build();
        components.add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

async fn require_token(State(app): State<Arc<Admin>>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let Some(expected) = app.settings.token.as_deref() else {
        return Err(ApiError::unauthorized("the admin API is disabled: set admin.token"));
    };
    let headers = request.headers();
    let Some(proof) = console::authorized(headers, expected) else {
        return Err(ApiError::unauthorized("missing or wrong admin bearer token"));
    };
    let by_session = matches!(proof, console::Proof::Session { .. });
    // A change asked for with only the console's cookie must come from the
    // console's own script, which sets this header; a form elsewhere cannot.
    if by_session && request.method() != axum::http::Method::GET && !headers.contains_key(console::CONSOLE_HEADER) {
        return Err(ApiError::forbidden(
            console::CONSOLE_HEADER,
            "a change by the console's session needs this header",
        ));
    }
    // The overview stream ends when the session does.
    request.extensions_mut().insert(proof);
    let mut response = next.run(request).await;
    if by_session {
        // What a browser fetched with the session is not kept in its cache.
        response.headers_mut().insert(CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    }
    Ok(response)
}

/// The hosts sharing this database and who runs what.
#[derive(Debug, Serialize, ToSchema)]
struct ClusterView {
    /// Hosts that renewed their leases within a lease's lifetime.
    hosts: Vec<HostRow>,
    /// Every lease: engine partitions (`engine/<n>`), `manifests`, `sink/<name>`.
    leases: Vec<LeaseRow>,
}

/// Which hosts are up and which host holds each lease (engine partitions, manifests, sinks).
#[utoipa::path(get, path = "/cluster", tag = "cluster", responses(
    (status = 200, description = "hosts and leases", body = ClusterView),
    TokenRefused,
    (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn cluster(State(app): State<Arc<Admin>>) -> Result<Json<ClusterView>, ApiError> {
    let hosts = app.store.live_hosts(app.lease_ttl_ms).await?;
    let leases = app.store.leases().await?;
    Ok(Json(ClusterView { hosts, leases }))
}

/// What `POST /v1/eventsub/subscriptions` takes.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionRequest {
    /// The public https URL of a host's `/eventsub`.
    callback: String,
    /// The Drops organization (required by Twitch).
    organization_id: String,
    /// Only entitlements of this game (category).
    category_id: Option<String>,
    /// Only entitlements of this Drops campaign.
    campaign_id: Option<String>,
}

/// Twitch's API client and the EventSub secret, or why they are missing.
fn eventsub_client(app: &Admin) -> Result<&TwitchClient, ApiError> {
    app.twitch.as_deref().ok_or_else(|| {
        ApiError::conflict("twitch.client_id and twitch.client_secret are not set: Twitch's API is not configured")
    })
}

/// Turns a failed Helix call into an answer: Twitch's refusals as 404, 409
/// or 422 with its reason; no answer from Twitch as 503.
fn helix_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Permanent(reason) if reason.contains("exists already") => ApiError::conflict(reason),
        UploadError::Permanent(reason) if reason.contains("no subscription") => ApiError::not_found(reason),
        UploadError::Permanent(reason) => ApiError::unprocessable("body", reason),
        other => ApiError::unavailable(other),
    }
}

/// This application's `drop.entitlement.grant` subscriptions, as Twitch lists them.
#[utoipa::path(get, path = "/eventsub/subscriptions", tag = "eventsub", responses(
    (status = 200, description = "the subscriptions", body = [Subscription]),
    TokenRefused,
    (status = 409, description = "Twitch's API is not configured here", body = ErrorBody),
    (status = 503, description = "Twitch did not answer", body = ErrorBody)))]
async fn list_subscriptions(State(app): State<Arc<Admin>>) -> Result<Json<Vec<Subscription>>, ApiError> {
    Ok(Json(eventsub_client(&app)?.drops_subscriptions().await.map_err(helix_error)?))
}

/// Creates the `drop.entitlement.grant` subscription (batched, webhook) with `eventsub.secret`.
#[utoipa::path(post, path = "/eventsub/subscriptions", tag = "eventsub", request_body = SubscriptionRequest, responses(
    (status = 201, description = "created; Twitch now sends the challenge to the callback", body = Subscription),
    (status = 400, description = "not JSON, or a field is missing or unknown (named in `field`)", body = ErrorBody),
    TokenRefused,
    (status = 409, description = "it exists already, or Twitch's API or eventsub.secret is not configured", body = ErrorBody),
    (status = 413, description = "larger than 64 KiB"),
    (status = 422, description = "refused: not an https callback, or by Twitch (its reason)", body = ErrorBody),
    (status = 503, description = "Twitch did not answer", body = ErrorBody)))]
async fn create_subscription(
    State(app): State<Arc<Admin>>,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<Subscription>), ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let request: SubscriptionRequest = serde_path_to_error::deserialize(de).map_err(ApiError::bad_json)?;
    let client = eventsub_client(&app)?;
    let secret = app.eventsub_secret.clone().ok_or_else(|| ApiError::conflict("eventsub.secret is not set"))?;
    let request = DropsSubscription {
        callback: request.callback,
        secret,
        organization_id: request.organization_id,
        category_id: request.category_id,
        campaign_id: request.campaign_id,
    };
    let subscription = client.subscribe_drops(&request).await.map_err(helix_error)?;
    tracing::info!(subscription = %subscription.id, "EventSub subscription created through the admin API");
    Ok((axum::http::StatusCode::CREATED, Json(subscription)))
}

/// Deletes a subscription by id.
#[utoipa::path(delete, path = "/eventsub/subscriptions/{id}", tag = "eventsub",
    params(("id" = String, Path, description = "the subscription id")),
    responses(
        (status = 204, description = "deleted"),
        TokenRefused,
        (status = 404, description = "no such subscription", body = ErrorBody),
        (status = 409, description = "Twitch's API is not configured here", body = ErrorBody),
        (status = 503, description = "Twitch did not answer", body = ErrorBody)))]
async fn delete_subscription(
    State(app): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    eventsub_client(&app)?.delete_subscription(&id).await.map_err(helix_error)?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Refuses a filter `value` that is not one of `known`, naming the field.
fn one_of(field: &'static str, value: Option<&str>, known: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(value) if !known.contains(&value) => {
            Err(ApiError::bad_request(field, format!("`{}` is not one of {}", value.escape_debug(), known.join(", "))))
        }
        _ => Ok(()),
    }
}

/// A page size within what the document says (1 to `max`), refused naming
/// `limit` otherwise rather than clamped: a client reading the document
/// expects to be told.
fn page_limit(limit: Option<u32>, max: u32) -> Result<Option<u32>, ApiError> {
    match limit {
        Some(n) if n == 0 || n > max => Err(ApiError::bad_request("limit", format!("from 1 to {max}"))),
        other => Ok(other),
    }
}

/// EventSub entitlements and what became of them, by entitlement id, filtered and paged.
#[utoipa::path(get, path = "/entitlements", tag = "entitlements", params(EntitlementFilter), responses(
    (status = 200, description = "entitlements, by id", body = [EntitlementRow]),
    (status = 400, description = "an unknown filter or value, named in `field`", body = ErrorBody),
    TokenRefused,
    (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn entitlements(
    State(app): State<Arc<Admin>>,
    ApiQuery(filter): ApiQuery<EntitlementFilter>,
) -> Result<Json<Vec<EntitlementRow>>, ApiError> {
    const STATUSES: [&str; 5] = ["awaiting_link", "unmatched", "refused", "deliver", "failed"];
    const FULFILMENTS: [&str; 5] = ["pending", "fulfilled", "invalid_id", "not_found", "unauthorized"];
    one_of("status", filter.status.as_deref(), &STATUSES)?;
    one_of("fulfillment", filter.fulfillment.as_deref(), &FULFILMENTS)?;
    page_limit(filter.limit, 10_000)?;
    app.store.list_entitlements(&filter).await.map(Json).map_err(ApiError::from)
}

/// Asks Twitch again to mark a delivered entitlement FULFILLED, after Twitch
/// refused it for good (`invalid_id`, `not_found`, `unauthorized`): for an
/// operator who fixed the client id or its credentials.
#[utoipa::path(post, path = "/entitlements/{id}/retry", tag = "entitlements",
    params(("id" = String, Path, description = "Twitch's entitlement id")),
    responses(
        (status = 200, description = "the entitlement, queued to be marked FULFILLED again", body = EntitlementRow),
        TokenRefused,
        (status = 404, description = "no entitlement has that id", body = ErrorBody),
        (status = 409, description = "the entitlement is not one Twitch refused to mark FULFILLED", body = ErrorBody),
        (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn retry_entitlement(
    State(app): State<Arc<Admin>>,
    Path(id): Path<String>,
) -> Result<Json<EntitlementRow>, ApiError> {
    if app.store.retry_fulfilment(&id).await.map_err(ApiError::from)? {
        tracing::info!(entitlement = %id, "entitlement queued to be marked FULFILLED again by the admin API");
    } else {
        return Err(match app.store.entitlement(&id).await.map_err(ApiError::from)? {
            None => ApiError::not_found("no entitlement has that id"),
            Some(e) => ApiError::conflict(format!(
                "only an entitlement Twitch refused to mark FULFILLED (invalid_id, not_found, unauthorized) is \
                 retried; this one is {}",
                e.fulfillment.as_deref().unwrap_or(if e.delivered_at.is_some() { "pending" } else { "not delivered" })
            )),
        });
    }
    match app.store.entitlement(&id).await.map_err(ApiError::from)? {
        Some(e) => Ok(Json(e)),
        None => Err(ApiError::not_found("no entitlement has that id")),
    }
}

/// Grants in the order they were made, filtered and paged.
#[utoipa::path(get, path = "/grants", tag = "grants", params(GrantFilter), responses(
    (status = 200, description = "grants, oldest first", body = [GrantRow]),
    (status = 400, description = "an unknown filter or value, named in `field`", body = ErrorBody),
    TokenRefused,
    (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn grants(
    State(app): State<Arc<Admin>>,
    ApiQuery(filter): ApiQuery<GrantFilter>,
) -> Result<Json<Vec<GrantRow>>, ApiError> {
    one_of("delivery", filter.delivery.as_deref(), &GrantFilter::DELIVERY)?;
    page_limit(filter.limit, 100_000)?;
    if let (Some(since), Some(until)) = (filter.since, filter.until) {
        if until <= since {
            return Err(ApiError::bad_request("until", "must be after `since`"));
        }
    }
    app.store.list_grants(&filter).await.map(Json).map_err(ApiError::from)
}

#[derive(Serialize, ToSchema)]
struct Linked {
    linked: u64,
    /// Link events for EventSub entitlements of these viewers that were
    /// open (awaiting a link, failed, or unmatched): the engine decides those now.
    released: u64,
}

/// Registers one link or a JSON array of them, all or none.
#[utoipa::path(put, path = "/links", tag = "links",
    request_body(content = Vec<AccountLink>, description = "one link object, or an array of them"),
    responses(
        (status = 200, description = "how many links were stored", body = Linked),
        (status = 400, description = "not JSON, or a link is malformed (named in `field`)", body = ErrorBody),
        TokenRefused,
        (status = 413, description = "larger than 64 MiB"),
        (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn put_links(State(app): State<Arc<Admin>>, body: Bytes) -> Result<Json<Linked>, ApiError> {
    let links = parse_links(&body)?;
    let linked = app.store.put_links(&links).await?;
    metrics::counter!("drops_links_put_total").increment(linked);
    // Stored links are not undone if this fails: the PUT is idempotent, and
    // its retry announces them.
    let users: Vec<String> = links.iter().map(|l| l.twitch_user_id.0.clone()).collect();
    let released = app.store.announce_links(&users, &app.rules.load().enabled_campaign_ids()).await?;
    Ok(Json(Linked { linked, released }))
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

#[derive(serde::Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkQuery {
    twitch_user_id: Option<String>,
    game_account_id: Option<String>,
    /// At most this many (default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// Links by `twitch_user_id` or `game_account_id`, or all (`limit` up to 10,000).
#[utoipa::path(get, path = "/links", tag = "links", params(LinkQuery), responses(
    (status = 200, description = "the links", body = [AccountLink]),
    (status = 400, description = "a malformed query, named in `field`", body = ErrorBody),
    TokenRefused,
    (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn get_links(
    State(app): State<Arc<Admin>>,
    ApiQuery(q): ApiQuery<LinkQuery>,
) -> Result<Json<Vec<AccountLink>>, ApiError> {
    let limit = page_limit(q.limit, 10_000)?.unwrap_or(1_000);
    app.store
        .links(q.twitch_user_id.as_deref(), q.game_account_id.as_deref(), limit)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

#[derive(serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ManifestQuery {
    status: Option<String>,
    /// The last id of the previous page.
    after: Option<String>,
    /// At most this many (default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// Manifests, oldest first, with where their upload to Twitch stands.
#[utoipa::path(get, path = "/manifests", tag = "manifests", params(ManifestQuery), responses(
    (status = 200, description = "manifests", body = [ManifestRow]),
    (status = 400, description = "an unknown status, filter or `after`, named in `field`", body = ErrorBody),
    TokenRefused,
    (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn manifests(
    State(app): State<Arc<Admin>>,
    ApiQuery(q): ApiQuery<ManifestQuery>,
) -> Result<Json<Vec<ManifestRow>>, ApiError> {
    one_of("status", q.status.as_deref(), &manifest_status::ALL)?;
    if let Some(after) = q.after.as_deref() {
        if app.store.manifest(after).await.map_err(ApiError::from)?.is_none() {
            return Err(ApiError::bad_request("after", "no manifest has that id"));
        }
    }
    let limit = page_limit(q.limit, 10_000)?.unwrap_or(1_000);
    let rows = app.store.list_manifests_page(q.status.as_deref(), q.after.as_deref(), limit).await;
    rows.map(Json).map_err(ApiError::from)
}

/// Queues a failed manifest for upload again: same id, same users.
#[utoipa::path(post, path = "/manifests/{id}/retry", tag = "manifests",
    params(("id" = String, Path, description = "the manifest id")),
    responses(
        (status = 200, description = "the manifest, queued", body = ManifestRow),
        TokenRefused,
        (status = 404, description = "no manifest has that id", body = ErrorBody),
        (status = 409, description = "the manifest is not failed", body = ErrorBody),
        (status = 503, description = "storage unavailable", body = ErrorBody)))]
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

#[derive(Serialize, ToSchema)]
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
    #[schema(value_type = Option<Object>)]
    paused: Option<Paused>,
}

#[derive(Serialize, ToSchema)]
struct CampaignsView {
    campaigns: Vec<CampaignView>,
    /// Files that failed to load, with the reason.
    #[schema(value_type = Vec<Object>)]
    errors: Vec<LoadError>,
}

/// Campaigns in force, and files that failed to load.
#[utoipa::path(get, path = "/campaigns", tag = "campaigns", responses(
    (status = 200, description = "campaigns and load errors", body = CampaignsView),
    TokenRefused))]
async fn campaigns(State(app): State<Arc<Admin>>) -> Json<CampaignsView> {
    let rules = app.rules.load();
    let paused = paused_now(&app).await;
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

/// The campaigns paused by their breakers: this host's engine's, and with
/// several hosts, the others' as of their last checkpoint.
pub(super) async fn paused_now(app: &Admin) -> std::collections::BTreeMap<String, Paused> {
    let mut paused = (**app.paused.load()).clone();
    if app.cluster {
        // This host's own knowledge is newer where it has any.
        match app.store.paused_campaigns().await {
            Ok(stored) => {
                for (id, pause) in stored {
                    paused.entry(id).or_insert(pause);
                }
            }
            Err(e) => tracing::warn!("paused campaigns of other hosts not shown: {e}"),
        }
    }
    paused
}

/// Which campaign revision ran with which plugin version, from when.
#[utoipa::path(get, path = "/campaigns/{id}/history", tag = "campaigns",
    params(("id" = String, Path, description = "the campaign id")),
    responses(
        (status = 200, description = "the history, oldest first", body = [RuleHistoryEntry]),
        TokenRefused,
        (status = 404, description = "no such campaign has run here", body = ErrorBody),
        (status = 503, description = "storage unavailable", body = ErrorBody)))]
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

#[derive(Serialize, ToSchema)]
struct PluginView {
    name: String,
    hash: String,
    campaigns: Vec<String>,
}

/// Plugins in force and the campaigns using them.
#[utoipa::path(get, path = "/plugins", tag = "plugins", responses(
    (status = 200, description = "plugins", body = [PluginView]),
    TokenRefused))]
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
pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request("name", "names are 1-64 of a-z, 0-9, - and _, starting with a letter or digit"))
    }
}

/// An upload's name and body, checked: the name as [`check_name`] says, the body not empty.
fn upload(name: &str, body: &[u8], what: &str) -> Result<Vec<u8>, ApiError> {
    check_name(name)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("body", format!("the body must be {what}")));
    }
    Ok(body.to_vec())
}

#[derive(Serialize, ToSchema)]
struct Installed {
    name: String,
    hash: String,
    serving: bool,
}

/// Uploads a plugin version; answers once it serves.
#[utoipa::path(put, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "1-64 of a-z, 0-9, - and _")),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "the .wasm bytes"),
    responses(
        (status = 200, description = "installed and serving", body = Installed),
        (status = 400, description = "a bad name or an empty body, named in `field`", body = ErrorBody),
        TokenRefused,
        (status = 413, description = "larger than 32 MiB"),
        (status = 422, description = "the plugin does not load or validate", body = ErrorBody),
        (status = 500, description = "the host failed to store or compile it", body = ErrorBody),
        (status = 503, description = "shutting down, or storage unavailable", body = ErrorBody)))]
async fn upload_plugin(
    State(app): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Installed>, ApiError> {
    let body = upload(&name, &body, "the plugin's .wasm bytes")?;
    let hash = app.reloader.install(&name, body).await.map_err(|e| install_error("body", e))?;
    tracing::info!(plugin = %name, %hash, "plugin installed through the admin API");
    Ok(Json(Installed { name, hash: hash.0, serving: true }))
}

#[derive(Serialize, ToSchema)]
struct CampaignInstalled {
    /// The file's name (`campaigns/<name>.toml`).
    name: String,
    #[serde(flatten)]
    campaign: LoadedCampaignView,
    serving: bool,
}

/// Uploads a campaign file (`campaigns/<name>.toml`); answers once it serves
/// (on every host, with several hosts: it is published first).
#[utoipa::path(put, path = "/campaigns/{name}", tag = "campaigns",
    params(("name" = String, Path, description = "the file name without .toml: 1-64 of a-z, 0-9, - and _")),
    request_body(content = String, content_type = "application/toml", description = "the campaign file (TOML)"),
    responses(
        (status = 200, description = "installed and serving", body = CampaignInstalled),
        (status = 400, description = "a bad name or an empty body, named in `field`", body = ErrorBody),
        TokenRefused,
        (status = 413, description = "larger than 1 MiB"),
        (status = 422, description = "the file does not parse, names no loaded plugin, its config is refused, or its id is taken (the error names the field)", body = ErrorBody),
        (status = 500, description = "the host failed to store it", body = ErrorBody),
        (status = 503, description = "shutting down, or not published to the other hosts", body = ErrorBody)))]
async fn upload_campaign(
    State(app): State<Arc<Admin>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<CampaignInstalled>, ApiError> {
    let body = upload(&name, &body, "the campaign file (TOML)")?;
    let campaign = app.reloader.install_campaign(&name, body).await.map_err(|e| install_error("body", e))?;
    tracing::info!(file = %name, campaign = %campaign.id, revision = %campaign.revision, "campaign installed through the admin API");
    Ok(Json(CampaignInstalled { name, campaign, serving: true }))
}

#[derive(Serialize, ToSchema)]
struct VersionView {
    #[serde(flatten)]
    version: PluginVersion,
    serving: bool,
}

/// Every version of a plugin served here, and which one serves now.
#[utoipa::path(get, path = "/plugins/{name}/versions", tag = "plugins",
    params(("name" = String, Path, description = "the plugin name")),
    responses(
        (status = 200, description = "versions, oldest first", body = [VersionView]),
        (status = 400, description = "a bad name", body = ErrorBody),
        TokenRefused,
        (status = 404, description = "no such plugin was loaded here", body = ErrorBody),
        (status = 503, description = "storage unavailable", body = ErrorBody)))]
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

/// The bytes of one version of a plugin (the `.wasm` as uploaded or
/// installed): to replay a candidate against an older version after the
/// rules folder took the new one, or to keep a copy.
#[utoipa::path(get, path = "/plugins/{name}/versions/{hash}", tag = "plugins",
    params(("name" = String, Path, description = "the plugin name"),
           ("hash" = String, Path, description = "the version's SHA-256, 64 lowercase hex digits")),
    responses(
        (status = 200, description = "the plugin's bytes", content_type = "application/wasm", body = Vec<u8>),
        (status = 400, description = "a bad name or hash", body = ErrorBody),
        TokenRefused,
        (status = 404, description = "no such version of that plugin was loaded here", body = ErrorBody),
        (status = 503, description = "storage unavailable", body = ErrorBody)))]
async fn plugin_version_bytes(
    State(app): State<Arc<Admin>>,
    Path((name, hash)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ApiError::bad_request("hash", "a SHA-256: 64 lowercase hex digits"));
    }
    match app.store.plugin_bytes(&name, &hash).await? {
        Some(bytes) => Ok(([(axum::http::header::CONTENT_TYPE, "application/wasm")], bytes).into_response()),
        None => Err(ApiError::not_found(format!("no version {hash} of plugin `{name}` has been loaded on this host"))),
    }
}

#[derive(serde::Deserialize, ToSchema)]
struct RollbackRequest {
    hash: String,
}

/// Puts an earlier version of a plugin back in force, for every campaign that uses it.
#[utoipa::path(post, path = "/plugins/{name}/rollback", tag = "plugins",
    params(("name" = String, Path, description = "the plugin name")),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "the version serves again", body = Installed),
        (status = 400, description = "a bad name or body", body = ErrorBody),
        TokenRefused,
        (status = 404, description = "the plugin has no such version", body = ErrorBody),
        (status = 422, description = "the version no longer validates", body = ErrorBody),
        (status = 500, description = "the host failed to install it", body = ErrorBody),
        (status = 503, description = "shutting down, or storage unavailable", body = ErrorBody)))]
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
        e @ RulesError::Unpublished(_) => ApiError::unavailable(e),
        e => ApiError::internal(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route_with_its_auth_and_errors() {
        let doc = openapi();
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["openapi"], "3.1.0");
        assert_eq!(json["security"], serde_json::json!([{"admin_token": []}]));
        let mut operations = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let open = op["security"] == serde_json::json!([{}]);
                assert!(open || op["responses"]["401"].is_object(), "{method} {path} documents 401");
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        operations.sort();
        assert_eq!(
            operations,
            [
                "DELETE /v1/eventsub/subscriptions/{id}",
                "GET /v1/campaigns",
                "GET /v1/campaigns/{id}/history",
                "GET /v1/cluster",
                "GET /v1/entitlements",
                "GET /v1/eventsub/subscriptions",
                "GET /v1/grants",
                "GET /v1/links",
                "GET /v1/manifests",
                "GET /v1/openapi.json",
                "GET /v1/overview",
                "GET /v1/overview/stream",
                "GET /v1/plugins",
                "GET /v1/plugins/{name}/versions",
                "GET /v1/plugins/{name}/versions/{hash}",
                "POST /v1/entitlements/{id}/retry",
                "POST /v1/eventsub/subscriptions",
                "POST /v1/manifests/{id}/retry",
                "POST /v1/plugins/{name}/rollback",
                "POST /v1/replay",
                "PUT /v1/campaigns/{name}",
                "PUT /v1/links",
                "PUT /v1/plugins/{name}",
            ]
        );
        assert!(json["components"]["schemas"]["GrantRow"].is_object());
        assert!(json["components"]["schemas"]["ErrorBody"].is_object());
    }

    #[test]
    fn lists_link_to_their_retries_and_the_event_stream_is_described_as_sse() {
        let json = openapi_json();
        for (list, operation) in [("/v1/manifests", "retry_manifest"), ("/v1/entitlements", "retry_entitlement")] {
            let link = &json["paths"][list]["get"]["responses"]["200"]["links"]["retry"];
            assert_eq!(link["operationId"], operation, "{list}: {link}");
            assert_eq!(link["parameters"]["id"], "$response.body#/0/id");
            let target = json["paths"].as_object().unwrap().values().filter_map(|item| item["post"].as_object());
            assert_eq!(target.filter(|op| op["operationId"] == operation).count(), 1, "{operation} exists");
        }
        let event =
            &json["paths"]["/v1/overview/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"];
        assert_eq!(event["type"], "object", "{event}");
        let data = &event["properties"]["data"];
        assert_eq!((&data["type"], &data["contentMediaType"]), (&"string".into(), &"application/json".into()));
        assert_eq!(data["contentSchema"]["oneOf"][0]["$ref"], "#/components/schemas/Overview");
        let wasm = &json["paths"]["/v1/plugins/{name}/versions/{hash}"]["get"]["responses"]["200"]["content"]
            ["application/wasm"]["schema"];
        assert_eq!(wasm, &serde_json::json!({"type": "string", "format": "binary"}));
        let upload =
            &json["paths"]["/v1/plugins/{name}"]["put"]["requestBody"]["content"]["application/wasm"]["schema"];
        assert_eq!(upload, wasm);
    }
}
