//! A stand-in for Twitch's upload path, for the demo and the upload
//! benchmark (`drops-host twitch-stand-in`): it issues app tokens, answers
//! upload-URL requests the way Helix does (the URL's `&` escaped as
//! `\u0026`) and takes the files PUT to those URLs, checking that each is a
//! manifest. Pointing `[twitch]` at it runs the real uploader end to end
//! without Twitch. It also stands in for a studio's entitlement webhook
//! (`POST /webhook`, signed with [`WEBHOOK_SECRET`]), counting the grants
//! whose signature checks out, and the entitlements' items it is sent.
//! For the EventSub path it answers Update Drops Entitlements (every id
//! `SUCCESS`, counted) and Get Drops Entitlements (the CLAIMED entitlements
//! it was told the webhook missed, [`Received::claimed`]).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{post, put};
use axum::{Json, Router};
use serde::de::{IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Largest file taken: Twitch's limit.
const MAX_FILE_BYTES: usize = 100_000_000;
/// The secret the stand-in's webhook checks signatures with.
pub const WEBHOOK_SECRET: &str = "stand-in-webhook-secret";

/// What the stand-in has received.
#[derive(Debug, Default)]
pub struct Received {
    /// Users per manifest id, from the last PUT of each.
    pub manifests: HashMap<String, u64>,
    /// PUTs taken, repeats included.
    pub puts: u64,
    /// Bytes of the largest file taken.
    pub largest_bytes: usize,
    /// Grants the webhook took (signature checked), by idempotency key.
    pub webhook_grants: std::collections::HashSet<String>,
    /// Webhook batches refused for a bad signature.
    pub webhook_bad_signatures: u64,
    /// Entitlements whose items the webhook took, by entitlement id: the items as `id x quantity`.
    pub webhook_items: HashMap<String, Vec<String>>,
    /// Entitlement ids marked FULFILLED, and how many times each was.
    pub fulfilled: HashMap<String, u32>,
    /// Update requests taken, and the most ids one carried.
    pub fulfil_requests: u64,
    pub most_ids_per_update: usize,
    /// CLAIMED entitlements Get Drops Entitlements lists (each a Helix `data` element).
    pub claimed: Vec<serde_json::Value>,
}

impl Received {
    /// Users across the manifests taken (each manifest counted once).
    pub fn users(&self) -> u64 {
        self.manifests.values().sum()
    }
}

/// A running stand-in.
pub struct StandIn {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Received>>,
}

type Shared = (SocketAddr, Arc<Mutex<Received>>);

/// Starts the stand-in on `listen`.
pub async fn start(listen: SocketAddr) -> std::io::Result<StandIn> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route("/oauth2/token", post(token))
        .route("/helix/entitlements/upload", post(upload_url))
        .route("/upload/{file}", put(take_file).layer(DefaultBodyLimit::max(MAX_FILE_BYTES)))
        .route("/webhook", post(take_grants))
        .route("/helix/entitlements/drops", axum::routing::patch(fulfil).get(claimed))
        .with_state((addr, received.clone()));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("Twitch stand-in stopped: {e}");
        }
    });
    Ok(StandIn { addr, received })
}

async fn token() -> Json<serde_json::Value> {
    Json(serde_json::json!({"access_token": "stand-in-app-token", "expires_in": 3600, "token_type": "bearer"}))
}

async fn upload_url(
    State((addr, _)): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<String, StatusCode> {
    let id = q.get("manifest_id").filter(|id| !id.is_empty() && id.len() <= 64).ok_or(StatusCode::BAD_REQUEST)?;
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(StatusCode::BAD_REQUEST);
    }
    // Helix escapes the URL's ampersands; the uploader's JSON parser turns them back.
    Ok(format!(
        r#"{{"data":[{{"url":"http://{addr}/upload/{id}.json?X-Amz-Expires=900\u0026X-Amz-Signature=stand-in"}}]}}"#
    ))
}

/// A manifest file, its users counted rather than kept.
#[derive(Deserialize)]
#[allow(dead_code)] // The fields are read to check the file has them.
struct CountedManifest {
    campaign_id: String,
    client_id: String,
    game_watched: String,
    broadcaster_id: String,
    item_id: String,
    reason: String,
    users: UserCount,
}

struct UserCount(u64);

impl<'de> Deserialize<'de> for UserCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Counter;
        impl<'de> Visitor<'de> for Counter {
            type Value = u64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of user ids")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
                let mut n = 0;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(n)
            }
        }
        d.deserialize_seq(Counter).map(UserCount)
    }
}

async fn take_file(
    State((_, received)): State<Shared>,
    Path(file): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> StatusCode {
    if !q.contains_key("X-Amz-Signature") || !q.contains_key("X-Amz-Expires") {
        return StatusCode::FORBIDDEN;
    }
    let Ok(manifest) = serde_json::from_slice::<CountedManifest>(&body) else { return StatusCode::BAD_REQUEST };
    if let Ok(mut r) = received.lock() {
        r.puts += 1;
        r.largest_bytes = r.largest_bytes.max(body.len());
        r.manifests.insert(file.trim_end_matches(".json").to_string(), manifest.users.0);
    }
    StatusCode::OK
}

#[derive(Deserialize)]
struct WebhookBatch {
    #[serde(default)]
    grants: Vec<WebhookGrant>,
    #[serde(default)]
    deliveries: Vec<WebhookDelivery>,
}

#[derive(Deserialize)]
struct WebhookDelivery {
    entitlement_id: String,
    items: Vec<WebhookItem>,
}

#[derive(Deserialize)]
struct WebhookItem {
    id: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct FulfilRequest {
    fulfillment_status: String,
    entitlement_ids: Vec<String>,
}

async fn fulfil(State((_, received)): State<Shared>, body: Bytes) -> Result<Json<serde_json::Value>, StatusCode> {
    let request: FulfilRequest = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    if request.fulfillment_status != "FULFILLED" || request.entitlement_ids.len() > 100 {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut r = received.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    r.fulfil_requests += 1;
    r.most_ids_per_update = r.most_ids_per_update.max(request.entitlement_ids.len());
    for id in &request.entitlement_ids {
        *r.fulfilled.entry(id.clone()).or_default() += 1;
    }
    r.claimed.retain(|c| !request.entitlement_ids.iter().any(|id| c["id"] == id.as_str()));
    Ok(Json(serde_json::json!({"data": [{"status": "SUCCESS", "ids": request.entitlement_ids}]})))
}

async fn claimed(State((_, received)): State<Shared>) -> Result<Json<serde_json::Value>, StatusCode> {
    let r = received.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok(Json(serde_json::json!({"data": r.claimed, "pagination": {}})))
}

#[derive(Deserialize)]
struct WebhookGrant {
    idempotency_key: String,
}

async fn take_grants(State((_, received)): State<Shared>, headers: axum::http::HeaderMap, body: Bytes) -> StatusCode {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let expected = crate::delivery::webhook::signature(
        WEBHOOK_SECRET,
        header("drops-message-id"),
        header("drops-message-timestamp"),
        &body,
    );
    let Ok(mut r) = received.lock() else { return StatusCode::INTERNAL_SERVER_ERROR };
    if !crate::secrets::same_secret(header("drops-message-signature"), &expected) {
        r.webhook_bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(batch) = serde_json::from_slice::<WebhookBatch>(&body) else { return StatusCode::BAD_REQUEST };
    r.webhook_grants.extend(batch.grants.into_iter().map(|g| g.idempotency_key));
    for d in batch.deliveries {
        let items = d.items.into_iter().map(|i| format!("{} x{}", i.id, i.quantity)).collect();
        r.webhook_items.insert(d.entitlement_id, items);
    }
    StatusCode::NO_CONTENT
}
