//! Manifests delivered to a fake Twitch: a real HTTP server in the test that
//! issues app tokens, hands out presigned-style upload URLs escaped with
//! `\u0026` as Twitch does, takes PUTs, and can be told to fail in each of
//! the ways Twitch and S3 fail.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use serde_json::{json, Value};

use crate::helpers::{heartbeat, tiers_campaign, Backend, HostConfig, TestHost};

const WINDOW: (&str, &str) = ("2026-11-01T10:00:00Z", "2026-11-01T11:00:00Z");
const CLIENT_ID: &str = "drops-e2e-client";
const CLIENT_SECRET: &str = "drops-e2e-secret-0123456789";

/// What the fake does to the next request of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 500.
    ServerError,
    /// Never answers (the host's timeout must fire).
    Hang,
    /// 429 with a `Ratelimit-Reset` a second ahead.
    RateLimited,
    /// 401: the app token is no longer valid.
    Unauthorized,
    /// 400: refused for good.
    BadRequest,
    /// PUT: 403 with S3's XML body, as an expired presigned URL answers.
    Expired,
    /// PUT: takes the whole file, then never answers.
    TakeAndHang,
    /// 200 with a 1 MiB body: an upload-URL answer too long to read (refused, retried);
    /// to a PUT, still a success.
    HugeOk,
}

#[derive(Default)]
pub(crate) struct Fake {
    tokens_issued: u32,
    valid_token: Option<String>,
    url_requests: Vec<String>,
    /// (manifest id, body) of every PUT whose body arrived.
    puts: Vec<(String, Vec<u8>)>,
    /// PUTs answered 200.
    pub(crate) accepted: Vec<String>,
    pub(crate) url_faults: VecDeque<Fault>,
    put_faults: VecDeque<Fault>,
}

#[derive(Clone)]
pub(crate) struct FakeTwitch {
    addr: SocketAddr,
    state: Arc<Mutex<Fake>>,
}

impl FakeTwitch {
    pub(crate) async fn start() -> FakeTwitch {
        let state = Arc::new(Mutex::new(Fake::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeTwitch { addr, state };
        let app = Router::new()
            .route("/oauth2/token", post(token))
            .route("/helix/entitlements/upload", post(upload_url))
            .route("/s3/{name}", put(take_file))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Fake) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// The `[twitch]` table pointing the host here, with short timeouts and backoff.
    pub(crate) fn config(&self) -> String {
        format!(
            "[twitch]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\nauth_base_url = \"{0}\"\n\
             api_base_url = \"{0}\"\nrequest_timeout_secs = 1\nupload_timeout_secs = 30\nretry_initial_ms = 50\nretry_max_secs = 2\n",
            self.base()
        )
    }
}

async fn token(State(fake): State<FakeTwitch>, body: String) -> Response {
    let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let field = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    if field("client_id") != Some(CLIENT_ID)
        || field("client_secret") != Some(CLIENT_SECRET)
        || field("grant_type") != Some("client_credentials")
    {
        return (StatusCode::FORBIDDEN, r#"{"status":403,"message":"invalid client secret"}"#).into_response();
    }
    let token = fake.with(|f| {
        f.tokens_issued += 1;
        let token = format!("app-token-{}", f.tokens_issued);
        f.valid_token = Some(token.clone());
        token
    });
    axum::Json(json!({"access_token": token, "expires_in": 5_000_000, "token_type": "bearer"})).into_response()
}

async fn upload_url(
    State(fake): State<FakeTwitch>,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let param = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (fault, authorized) = fake.with(|f| {
        let authorized = f.valid_token.as_ref().is_some_and(|t| bearer == format!("Bearer {t}"));
        (if authorized { f.url_faults.pop_front() } else { None }, authorized)
    });
    if !authorized || headers.get("client-id").and_then(|v| v.to_str().ok()) != Some(CLIENT_ID) {
        return (StatusCode::UNAUTHORIZED, r#"{"error":"Unauthorized","status":401,"message":"Invalid OAuth token"}"#)
            .into_response();
    }
    assert_eq!(param("type"), "bulk_drops_grant");
    let manifest_id = param("manifest_id");
    fake.with(|f| f.url_requests.push(manifest_id.clone()));
    match fault {
        Some(Fault::ServerError) => return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::RateLimited) => {
            let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 1;
            let mut answer = (StatusCode::TOO_MANY_REQUESTS, "rate limited").into_response();
            answer.headers_mut().insert("ratelimit-reset", reset.to_string().parse().unwrap());
            answer.headers_mut().insert("ratelimit-remaining", "0".parse().unwrap());
            return answer;
        }
        Some(Fault::Unauthorized) => {
            fake.with(|f| f.valid_token = None);
            return (StatusCode::UNAUTHORIZED, r#"{"status":401,"message":"Invalid OAuth token"}"#).into_response();
        }
        Some(Fault::BadRequest) => {
            return (StatusCode::BAD_REQUEST, r#"{"status":400,"message":"manifest_id is invalid"}"#).into_response()
        }
        Some(Fault::HugeOk) => return (StatusCode::OK, vec![b' '; 1 << 20]).into_response(),
        _ => {}
    }
    // Exactly as Twitch writes it: `&` escaped as \u0026 inside the JSON string.
    let url = format!(
        "http://{}/s3/{manifest_id}.json?X-Amz-Algorithm=AWS4-HMAC-SHA256\\u0026X-Amz-Expires=900\\u0026X-Amz-Signature=sig-{}",
        fake.addr,
        fake.with(|f| f.url_requests.len())
    );
    ([("content-type", "application/json")], format!(r#"{{"data":[{{"url":"{url}"}}]}}"#)).into_response()
}

async fn take_file(
    State(fake): State<FakeTwitch>,
    Path(name): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A URL whose \u0026 were not turned into & arrives as one parameter.
    let keys: BTreeSet<&str> = q.iter().map(|(k, _)| k.as_str()).collect();
    if keys != BTreeSet::from(["X-Amz-Algorithm", "X-Amz-Expires", "X-Amz-Signature"]) {
        return (StatusCode::BAD_REQUEST, format!("bad presigned query: {keys:?}")).into_response();
    }
    let length = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if length != Some(body.len()) {
        return (StatusCode::LENGTH_REQUIRED, "S3 needs a Content-Length").into_response();
    }
    let id = name.trim_end_matches(".json").to_string();
    let fault = fake.with(|f| f.put_faults.pop_front());
    if fault == Some(Fault::Expired) {
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        return (StatusCode::FORBIDDEN, xml).into_response();
    }
    fake.with(|f| f.puts.push((id.clone(), body.to_vec())));
    match fault {
        Some(Fault::TakeAndHang) | Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::ServerError) => return (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        _ => {}
    }
    fake.with(|f| f.accepted.push(id));
    if fault == Some(Fault::HugeOk) {
        return (StatusCode::OK, vec![b'x'; 1 << 20]).into_response();
    }
    StatusCode::OK.into_response()
}

fn at(minute: i64) -> String {
    let t = time::OffsetDateTime::parse(WINDOW.0, &time::format_description::well_known::Rfc3339).unwrap()
        + time::Duration::minutes(minute);
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

async fn host_with(fake: &FakeTwitch, campaigns: &[(&str, &str)], env: &[(&str, &str)]) -> TestHost {
    let campaigns = campaigns
        .iter()
        .map(|(id, reward)| (id.to_string(), tiers_campaign(id, "GameName", WINDOW, &[], &[(1, reward)])))
        .collect();
    let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = HostConfig { campaigns, extra_toml: fake.config(), env, ..Default::default() };
    TestHost::spawn(Backend::Sqlite, config).await.expect("sqlite is always there")
}

/// Sends one minute of `viewers` watching broadcaster `b`: every one earns the tier.
async fn watch(host: &TestHost, id: &str, viewers: &[String]) {
    let viewers: Vec<&str> = viewers.iter().map(String::as_str).collect();
    let (status, body) = host.post_vhs(None, &heartbeat(id, "b-1", "GameName", &at(0), &viewers)).await;
    assert_eq!(status, 200, "{body}");
}

async fn wait_until(what: &str, host: &TestHost, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}; log:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn users_of(body: &[u8]) -> Vec<String> {
    let file: Value = serde_json::from_slice(body).expect("a PUT body is a manifest");
    file["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_manifest_reaches_twitch_through_every_transient_fault_under_one_id() {
    let fake = FakeTwitch::start().await;
    fake.with(|f| {
        f.url_faults = [Fault::ServerError, Fault::Hang, Fault::HugeOk, Fault::RateLimited, Fault::Unauthorized].into();
        f.put_faults = [Fault::Expired, Fault::HugeOk].into();
    });
    let host = host_with(&fake, &[("camp-a", "badge")], &[]).await;
    let viewers: Vec<String> = ["v1", "vé2", "日本-3"].iter().map(|s| s.to_string()).collect();
    watch(&host, "h-1", &viewers).await;
    let manifests = host.wait_for_manifests_in(1, &["uploaded"]).await;
    let manifest = &manifests[0];
    let id = manifest["id"].as_str().unwrap();
    // 500, a timeout, an answer too long to read, 429 (its reset honoured), then 401
    // renews the token and an expired URL is replaced within the last attempt,
    // whose PUT is answered 200 with a long body (a success all the same).
    assert_eq!(manifest["attempts"], 5, "{manifest}");
    assert_eq!(manifest["last_error"], Value::Null);
    fake.with(|f| {
        assert!(f.url_requests.iter().all(|m| m == id), "one manifest id on every retry: {:?}", f.url_requests);
        assert_eq!(f.url_requests.len(), 7, "{:?}", f.url_requests);
        assert_eq!(f.tokens_issued, 2, "a 401 renews the app token");
        assert_eq!(f.accepted, [id]);
        let (_, body) = f.puts.last().unwrap();
        assert_eq!(users_of(body), viewers);
        let file = std::fs::read(host.dir.path().join(format!("data/manifests/{id}.json"))).unwrap();
        assert_eq!(body, &file, "the PUT is the file, byte for byte");
    });
    let log = host.log();
    assert!(!log.contains(CLIENT_SECRET), "the client secret is never logged");
    assert!(!log.contains("X-Amz-Signature"), "presigned URLs are not logged");
}

#[tokio::test]
async fn a_refused_manifest_fails_alone_and_is_sent_again_on_request() {
    let fake = FakeTwitch::start().await;
    fake.with(|f| f.url_faults = [Fault::BadRequest].into());
    let host = host_with(&fake, &[("camp-a", "badge"), ("camp-b", "hat")], &[]).await;
    watch(&host, "h-1", &["v1".to_string(), "v2".to_string()]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (failed, uploaded) = loop {
        let manifests = host.admin_get("/manifests").await.as_array().cloned().unwrap_or_default();
        let by = |s: &str| manifests.iter().filter(|m| m["status"] == s).cloned().collect::<Vec<_>>();
        if by("failed").len() == 1 && by("uploaded").len() == 1 {
            break (by("failed").remove(0), by("uploaded").remove(0));
        }
        assert!(Instant::now() < deadline, "{manifests:?}\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(failed["last_error"].as_str().unwrap().contains("HTTP 400"), "{failed}");
    // Grants by where their delivery stands, and the filters' refusals naming the field.
    let of_failed = host.admin_get("/grants?delivery=failed").await;
    assert_eq!(of_failed.as_array().unwrap().len(), 2, "{of_failed}");
    assert!(of_failed.as_array().unwrap().iter().all(|g| g["manifest_id"] == failed["id"]));
    for (query, field) in [
        ("delivery=lost", "delivery"),
        ("since=yesterday", "since"),
        ("colour=red", ""),
        ("since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z", "until"),
    ] {
        let (status, body) = host.admin_send(reqwest::Method::GET, &format!("/grants?{query}"), vec![]).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().contains(field), "{query}: {body}");
    }
    assert_eq!(host.admin_get("/manifests?status=failed").await.as_array().unwrap().len(), 1);
    let (status, body) = host.admin_send(reqwest::Method::GET, "/manifests?status=lost", vec![]).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("status")), "{body}");
    let (status, body) = host.admin_send(reqwest::Method::GET, "/manifests?after=nope", vec![]).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("after")), "{body}");
    let page = host.admin_get("/manifests?limit=1").await;
    let next = host.admin_get(&format!("/manifests?after={}", page[0]["id"].as_str().unwrap())).await;
    assert_eq!((page.as_array().unwrap().len(), next.as_array().unwrap().len()), (1, 1), "two manifests, two pages");
    let id = failed["id"].as_str().unwrap();
    let (status, body) = host
        .admin_send(reqwest::Method::POST, &format!("/manifests/{}/retry", uploaded["id"].as_str().unwrap()), vec![])
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = host.admin_send(reqwest::Method::POST, "/manifests/no-such-manifest/retry", vec![]).await;
    assert_eq!(status, 404);
    let (status, body) = host.admin_send(reqwest::Method::POST, &format!("/manifests/{id}/retry"), vec![]).await;
    // The uploader may already have taken it again.
    assert_eq!(status, 200, "{body}");
    assert!(["written", "uploading", "uploaded"].contains(&body["status"].as_str().unwrap()), "{body}");
    host.wait_for_manifests_in(2, &["uploaded"]).await;
    fake.with(|f| {
        assert_eq!(f.accepted.len(), 2);
        assert_eq!(f.url_requests.iter().filter(|m| *m == id).count(), 2, "the retry re-sends the same id");
    });
    let metrics = host.get_text("/metrics").await;
    assert!(metrics.contains("drops_manifest_uploads_total{outcome=\"failed\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_crash_between_the_put_and_its_record_resends_the_same_manifest() {
    let fake = FakeTwitch::start().await;
    fake.with(|f| f.put_faults = [Fault::TakeAndHang].into());
    let mut host = host_with(&fake, &[("camp-a", "badge")], &[]).await;
    let viewers: Vec<String> = (0..50).map(|i| format!("viewer-{i}")).collect();
    watch(&host, "h-1", &viewers).await;
    wait_until("the first PUT", &host, || fake.with(|f| f.puts.len() == 1)).await;
    host.kill();
    host.restart();
    let manifests = host.wait_for_manifests_in(1, &["uploaded"]).await;
    assert_eq!(manifests.len(), 1, "no second manifest for the same users");
    assert_eq!(manifests[0]["attempts"], 2, "{}", manifests[0]);
    fake.with(|f| {
        let ids: BTreeSet<&str> = f.puts.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids.len(), 1, "the same manifest id both times: {ids:?}");
        assert_eq!(f.puts.len(), 2);
        assert_eq!(f.puts[0].1, f.puts[1].1, "the same users, byte for byte");
        assert_eq!(users_of(&f.puts[1].1), viewers);
    });
}

#[tokio::test]
async fn a_large_batch_splits_into_valid_manifests_each_user_in_one() {
    let fake = FakeTwitch::start().await;
    let host = host_with(&fake, &[("camp-a", "badge")], &[("DROPS_HOST_MANIFESTS__MAX_FILE_BYTES", "4096")]).await;
    let viewers: Vec<String> = (0..1000).map(|i| format!("viewer-{i:05}")).collect();
    watch(&host, "h-1", &viewers).await;
    host.wait_for_grants(1000).await;
    wait_until("every user uploaded", &host, || {
        fake.with(|f| f.puts.iter().map(|(_, body)| users_of(body).len()).sum::<usize>() >= 1000)
    })
    .await;
    fake.with(|f| {
        assert!(f.puts.len() >= 4, "{} pieces", f.puts.len());
        let mut all = Vec::new();
        for (_, body) in &f.puts {
            assert!(body.len() <= 4096, "a piece of {} bytes", body.len());
            let file: Value = serde_json::from_slice(body).unwrap();
            assert_eq!((file["campaign_id"].as_str(), file["item_id"].as_str()), (Some("camp-a"), Some("badge")));
            all.extend(users_of(body));
        }
        all.sort();
        assert_eq!(all, viewers, "every user in exactly one piece");
    });
}

#[tokio::test]
async fn without_credentials_manifests_are_written_and_say_not_configured() {
    let campaigns = vec![("camp-a".to_string(), tiers_campaign("camp-a", "GameName", WINDOW, &[], &[(1, "badge")]))];
    let host = TestHost::spawn(Backend::Sqlite, HostConfig { campaigns, ..Default::default() }).await.unwrap();
    watch(&host, "h-1", &["v1".to_string()]).await;
    let manifests = host.wait_for_manifests_in(1, &["not_configured"]).await;
    assert_eq!(manifests[0]["attempts"], 0);
    assert_eq!(host.manifest_files().len(), 1);
}

/// One grant as the receiver saw it: (idempotency key, grant id, user).
type Seen = (String, i64, String);

/// The studio's entitlement endpoint: checks each batch's signature and keeps what it took.
#[derive(Default)]
struct Receiver {
    /// (batch id, [(idempotency key, grant id, user)]) of every signed batch that arrived.
    arrived: Vec<(String, Vec<Seen>)>,
    /// Grant ids acknowledged with 2xx, in order.
    acknowledged: Vec<i64>,
    bad_signatures: u32,
    faults: VecDeque<Fault>,
}

const HOOK_SECRET: &str = "webhook-secret-0123456789";

async fn start_receiver() -> (SocketAddr, Arc<Mutex<Receiver>>) {
    let state = Arc::new(Mutex::new(Receiver::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/hook", post(take_batch)).with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

async fn take_batch(State(state): State<Arc<Mutex<Receiver>>>, headers: HeaderMap, body: Bytes) -> Response {
    use hmac::{Hmac, Mac};
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (id, timestamp) = (header("drops-message-id"), header("drops-message-timestamp"));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if header("drops-message-signature") != expected {
        state.lock().unwrap().bad_signatures += 1;
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let batch: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(batch["batch_id"], id.as_str());
    let grants: Vec<Seen> = batch["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            assert_eq!(g["reason"], "watching");
            (
                g["idempotency_key"].as_str().unwrap().into(),
                g["id"].as_i64().unwrap(),
                g["user_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let fault = {
        let mut r = state.lock().unwrap();
        r.arrived.push((id, grants.clone()));
        r.faults.pop_front()
    };
    match fault {
        Some(Fault::ServerError) => return (StatusCode::INTERNAL_SERVER_ERROR, "try later").into_response(),
        Some(Fault::Hang) | Some(Fault::TakeAndHang) => std::future::pending::<()>().await,
        _ => {}
    }
    state.lock().unwrap().acknowledged.extend(grants.iter().map(|(_, id, _)| *id));
    StatusCode::NO_CONTENT.into_response()
}

fn webhook_config(addr: SocketAddr) -> String {
    format!(
        "[sink.webhook]\nurl = \"http://{addr}/hook\"\nsecret = \"{HOOK_SECRET}\"\nmax_batch = 2\nrequest_timeout_secs = 30\n\
         retry_initial_ms = 50\nretry_max_secs = 1\n"
    )
}

async fn webhook_host(addr: SocketAddr) -> TestHost {
    let campaigns = vec![("camp-a".to_string(), tiers_campaign("camp-a", "GameName", WINDOW, &[], &[(1, "badge")]))];
    let config = HostConfig { campaigns, extra_toml: webhook_config(addr), ..Default::default() };
    TestHost::spawn(Backend::Sqlite, config).await.unwrap()
}

/// Each key names one grant, and every grant arrived under its key.
fn check_keys(arrived: &[(String, Vec<Seen>)]) -> BTreeSet<i64> {
    let mut key_of = std::collections::HashMap::new();
    for (_, grants) in arrived {
        for (key, id, _) in grants {
            let previous = key_of.insert(*id, key.clone());
            assert!(previous.is_none_or(|p| p == *key), "grant {id} under two keys");
        }
    }
    let keys: BTreeSet<&String> = key_of.values().collect();
    assert_eq!(keys.len(), key_of.len(), "two grants under one key");
    key_of.keys().copied().collect()
}

#[tokio::test]
async fn the_webhook_gets_every_grant_signed_in_order_through_failures() {
    let (addr, receiver) = start_receiver().await;
    receiver.lock().unwrap().faults = [Fault::ServerError, Fault::ServerError].into();
    let host = webhook_host(addr).await;
    let viewers: Vec<String> = (0..5).map(|i| format!("viewer-{i}")).collect();
    watch(&host, "h-1", &viewers).await;
    let grants = host.wait_for_grants(5).await;
    wait_until("every grant acknowledged", &host, || receiver.lock().unwrap().acknowledged.len() >= 5).await;
    let r = receiver.lock().unwrap();
    assert_eq!(r.bad_signatures, 0);
    let ids: Vec<i64> = grants.iter().map(|g| g["id"].as_i64().unwrap()).collect();
    assert_eq!(r.acknowledged, ids, "each grant acknowledged once, in grant order");
    assert_eq!(check_keys(&r.arrived), ids.iter().copied().collect());
    assert!(r.arrived.iter().all(|(_, g)| g.len() <= 2), "max_batch holds");
    assert_eq!(r.arrived[0].0, r.arrived[2].0, "a failed batch goes again as the same batch");
}

#[tokio::test]
async fn a_crash_mid_delivery_loses_no_grant_and_keeps_every_key() {
    let (addr, receiver) = start_receiver().await;
    receiver.lock().unwrap().faults = [Fault::TakeAndHang].into();
    let mut host = webhook_host(addr).await;
    let viewers: Vec<String> = (0..5).map(|i| format!("viewer-{i}")).collect();
    watch(&host, "h-1", &viewers).await;
    let grants = host.wait_for_grants(5).await;
    wait_until("the first batch", &host, || !receiver.lock().unwrap().arrived.is_empty()).await;
    host.kill();
    host.restart();
    wait_until("every grant acknowledged", &host, || receiver.lock().unwrap().acknowledged.len() >= 5).await;
    let r = receiver.lock().unwrap();
    let ids: BTreeSet<i64> = grants.iter().map(|g| g["id"].as_i64().unwrap()).collect();
    assert_eq!(check_keys(&r.arrived), ids, "every grant arrived, each under one key");
    assert_eq!(r.acknowledged.iter().copied().collect::<BTreeSet<_>>(), ids);
    assert_eq!(r.arrived[0].1, r.arrived[1].1, "the batch cut off by the crash went again, same grants and keys");
}

#[tokio::test]
async fn a_manifest_file_lost_before_its_upload_is_rebuilt_and_sent_under_its_id() {
    let fake = FakeTwitch::start().await;
    fake.with(|f| f.url_faults = [Fault::Hang].into());
    let host = host_with(&fake, &[("camp-a", "badge")], &[]).await;
    let viewers: Vec<String> = (0..3).map(|i| format!("viewer-{i}")).collect();
    watch(&host, "h-1", &viewers).await;
    wait_until("the first URL request", &host, || fake.with(|f| !f.url_requests.is_empty())).await;
    let id = fake.with(|f| f.url_requests[0].clone());
    let path = host.dir.path().join(format!("data/manifests/{id}.json"));
    std::fs::remove_file(&path).unwrap();
    let manifests = host.wait_for_manifests_in(1, &["uploaded"]).await;
    assert_eq!(manifests[0]["id"], id.as_str());
    assert!(path.exists(), "the file was written again");
    fake.with(|f| {
        assert_eq!(f.accepted, std::slice::from_ref(&id));
        assert_eq!(users_of(&f.puts[0].1), viewers);
    });
}

/// The NATS server these machines run, or None (with a notice) outside CI when none answers.
async fn nats_or_skip() -> Option<async_nats::Client> {
    match async_nats::connect("127.0.0.1:4222").await {
        Ok(client) => Some(client),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: NATS JetStream test: no server at 127.0.0.1:4222 ({e})");
            None
        }
        Err(e) => panic!("NATS at 127.0.0.1:4222 is required in CI: {e}"),
    }
}

#[tokio::test]
async fn jetstream_stores_each_grant_once_through_failures_and_a_lost_cursor() {
    use async_nats::jetstream;
    let Some(client) = nats_or_skip().await else { return };
    let js = jetstream::new(client);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (name, subject) = (format!("DROPS_E2E_{tag}"), format!("drops-e2e.{tag}"));
    let stream_config = jetstream::stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let campaigns = vec![("camp-a".to_string(), tiers_campaign("camp-a", "GameName", WINDOW, &[], &[(1, "badge")]))];
    let extra_toml = format!(
        "[sink.nats]\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"{subject}\"\nmax_batch = 2\nack_timeout_secs = 1\nretry_initial_ms = 50\nretry_max_secs = 1\n"
    );
    let config = HostConfig { campaigns, extra_toml, ..Default::default() };
    let mut host = TestHost::spawn(Backend::Sqlite, config).await.unwrap();
    let viewers: Vec<String> = (0..5).map(|i| format!("viewer-{i}")).collect();
    watch(&host, "h-1", &viewers).await;
    let grants = host.wait_for_grants(5).await;
    // No stream captures the subject yet: publishes fail, and are retried until one does.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host.get_text("/metrics").await.contains("drops_sink_failures_total{sink=\"nats\"}") {
        assert!(Instant::now() < deadline, "no failed publish; log:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut stream = js.create_stream(stream_config).await.unwrap();
    while stream.info().await.unwrap().state.messages < 5 {
        assert!(Instant::now() < deadline, "JetStream has not got every grant; log:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worst case for exactly-once: every grant was stored, then the cursor is lost (a crash
    // between the acknowledgements and their record). Everything is published again.
    host.stop();
    let pool = crate::helpers::open_database(&host.database_url).await;
    sqlx::query("UPDATE sink_cursors SET delivered_through = 0 WHERE sink = 'nats'").execute(&pool).await.unwrap();
    pool.close().await;
    host.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = host.get_text("/metrics").await;
        if metrics.contains("drops_sink_grants_delivered_total{sink=\"nats\"} 5") {
            break;
        }
        assert!(Instant::now() < deadline, "the re-send did not finish; log:\n{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stream.info().await.unwrap().state.messages, 5, "JetStream dropped every re-sent grant by its id");
    let mut ids = BTreeSet::new();
    for seq in 1..=5 {
        let message = stream.get_raw_message(seq).await.unwrap();
        let grant: Value = serde_json::from_slice(&message.payload).unwrap();
        let msg_id = message.headers.get(async_nats::header::NATS_MESSAGE_ID).map(|v| v.as_str().to_string());
        assert_eq!(msg_id.as_deref(), grant["idempotency_key"].as_str(), "Nats-Msg-Id is the grant's key");
        ids.insert(grant["id"].as_i64().unwrap());
    }
    assert_eq!(ids, grants.iter().map(|g| g["id"].as_i64().unwrap()).collect::<BTreeSet<_>>());
    js.delete_stream(&name).await.unwrap();
}
