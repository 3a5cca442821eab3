//! `POST /eventsub`: Twitch's EventSub webhook for `drop.entitlement.grant`
//! against the real binary: the challenge, signed notifications stored once
//! however often they are delivered, and every hostile message refused
//! before anything is stored.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{open_database, Backend, HostConfig, TestHost};

pub(crate) const SECRET: &str = "eventsub-secret-0123";

pub(crate) fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// Headers of a message as Twitch signs it.
pub(crate) fn signed(kind: &str, id: &str, timestamp: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    vec![
        ("Twitch-Eventsub-Message-Id".into(), id.into()),
        ("Twitch-Eventsub-Message-Timestamp".into(), timestamp.into()),
        ("Twitch-Eventsub-Message-Signature".into(), format!("sha256={}", hex::encode(mac.finalize().into_bytes()))),
        ("Twitch-Eventsub-Message-Type".into(), kind.into()),
        ("Twitch-Eventsub-Message-Retry".into(), "0".into()),
        ("Twitch-Eventsub-Subscription-Type".into(), "drop.entitlement.grant".into()),
        ("Twitch-Eventsub-Subscription-Version".into(), "1".into()),
    ]
}

pub(crate) async fn post(host: &TestHost, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
    let mut request = host.client.post(format!("{}/eventsub", host.base)).body(body);
    for (k, v) in headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let response = request.send().await.expect("POST /eventsub");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

fn subscription() -> Value {
    json!({"id": "sub-1", "status": "enabled", "type": "drop.entitlement.grant", "version": "1",
        "condition": {"organization_id": "org-1"}, "transport": {"method": "webhook", "callback": "https://x/eventsub"},
        "created_at": "2026-11-24T00:00:00Z", "cost": 0})
}

fn event(entitlement: &str, user: &str) -> Value {
    entitlement_event(entitlement, user, "benefit-sword")
}

/// An entitlement of campaign `camp-1` as a notification's event.
pub(crate) fn entitlement_event(entitlement: &str, user: &str, benefit: &str) -> Value {
    json!({"id": format!("ev-{entitlement}"), "data": {
        "organization_id": "org-1", "category_id": "game-1", "category_name": "Gäme 名前",
        "campaign_id": "camp-1", "user_id": user, "user_login": "viewer", "user_name": "Viewér",
        "entitlement_id": entitlement, "benefit_id": benefit, "created_at": "2026-11-24T10:00:00Z"}})
}

pub(crate) fn notification(events: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"subscription": subscription(), "events": events})).unwrap()
}

async fn stored(host: &TestHost) -> Vec<String> {
    let pool = open_database(&host.database_url).await;
    let keys = sqlx::query_scalar("SELECT dedup_key FROM inbox WHERE source = 'eventsub' ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    keys
}

#[tokio::test]
async fn entitlements_are_stored_once_however_often_twitch_delivers_them() {
    let config = HostConfig { extra_toml: format!("[eventsub]\nsecret = \"{SECRET}\"\n"), ..Default::default() };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };

    // Subscribing: Twitch sends a challenge and wants it back as plain text.
    let body =
        serde_json::to_vec(&json!({"challenge": "pogchamp-kappa-360noscope", "subscription": subscription()})).unwrap();
    let (status, text) = post(&host, &signed("webhook_callback_verification", "m-0", &now(), &body), body).await;
    assert_eq!((status, text.as_str()), (200, "pogchamp-kappa-360noscope"));

    // A batch of two, then the same message again (at-least-once delivery),
    // then another message repeating one entitlement: three stored in all.
    let batch = notification(vec![event("ent-1", "u-1"), event("ent-2", "u-2")]);
    let headers = signed("notification", "m-1", &now(), &batch);
    assert_eq!(post(&host, &headers, batch.clone()).await.0, 204);
    assert_eq!(post(&host, &headers, batch).await.0, 204, "a redelivery is acknowledged");
    let overlap = notification(vec![event("ent-2", "u-2"), event("ent-3", "u-3")]);
    assert_eq!(post(&host, &signed("notification", "m-2", &now(), &overlap), overlap).await.0, 204);
    assert_eq!(stored(&host).await, ["ent:ent-1", "ent:ent-2", "ent:ent-3"]);

    // Revocation: acknowledged and logged.
    let body = serde_json::to_vec(&json!({"subscription": {"id": "sub-1", "status": "authorization_revoked",
        "type": "drop.entitlement.grant", "version": "1"}}))
    .unwrap();
    assert_eq!(post(&host, &signed("revocation", "m-3", &now(), &body), body).await.0, 204);

    // The engine reads them back without stopping.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(host.get_text("/readyz").await, "ready");
    assert!(host.log().contains("Twitch revoked the EventSub subscription"));
    assert!(!host.log().contains('\u{1b}'), "a log written to a file has no colour codes");
}

/// A hostile message: what it is, its headers and body, the status it gets and what the answer names.
type Case = (&'static str, Vec<(String, String)>, Vec<u8>, u16, &'static str);

#[tokio::test]
async fn hostile_eventsub_messages_are_refused_before_anything_is_stored() {
    let config = HostConfig {
        extra_toml: format!("[eventsub]\nsecret = \"{SECRET}\"\nmax_body_bytes = 65536\nmax_events = 3\n"),
        ..Default::default()
    };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let good = notification(vec![event("ent-1", "u-1")]);
    let eleven_minutes_ago = (time::OffsetDateTime::now_utc() - time::Duration::minutes(11))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut cases: Vec<Case> = Vec::new();
    // Signed with another secret, or over another body.
    let mut forged = signed("notification", "m-1", &now(), &good);
    forged[2].1 = format!("sha256={}", "00".repeat(32));
    cases.push(("forged signature", forged, good.clone(), 403, "Signature"));
    cases.push(("body changed", signed("notification", "m-1", &now(), b"{}"), good.clone(), 403, "Signature"));
    // A replay of a message older than 10 minutes, correctly signed.
    cases.push(("replay", signed("notification", "m-1", &eleven_minutes_ago, &good), good.clone(), 403, "Timestamp"));
    let mut missing = signed("notification", "m-1", &now(), &good);
    missing.remove(0);
    cases.push(("no message id", missing, good.clone(), 400, "Message-Id"));
    // Correctly signed, but not what this endpoint takes.
    let not_utf8 = vec![0xff, 0xfe, b'{', b'}'];
    cases.push(("not UTF-8", signed("notification", "m-1", &now(), &not_utf8), not_utf8, 400, ""));
    let nested =
        format!("{{\"subscription\": {}, \"events\": {}0{}}}", subscription(), "[".repeat(10_000), "]".repeat(10_000));
    cases.push((
        "10,000 nested arrays",
        signed("notification", "m-1", &now(), nested.as_bytes()),
        nested.into_bytes(),
        400,
        "",
    ));
    let many = notification((0..4).map(|i| event(&format!("e{i}"), "u")).collect());
    cases.push(("4 events, 3 allowed", signed("notification", "m-1", &now(), &many), many, 400, "events"));
    let long_user = notification(vec![event("ent-9", &"u".repeat(300))]);
    cases.push((
        "300-byte user id",
        signed("notification", "m-1", &now(), &long_user),
        long_user,
        400,
        "events[0].data.user_id",
    ));
    let control = notification(vec![event("ent-\u{0}", "u-1")]);
    cases.push(("control character", signed("notification", "m-1", &now(), &control), control, 400, "events[0]."));
    let other_type = serde_json::to_vec(&json!({"subscription": {"type": "channel.follow", "version": "2"},
        "events": [event("ent-8", "u-1")]}))
    .unwrap();
    cases.push((
        "another subscription",
        signed("notification", "m-1", &now(), &other_type),
        other_type,
        400,
        "subscription.type",
    ));
    let huge = vec![b' '; 100_000];
    cases.push(("100 kB over a 64 kB limit", signed("notification", "m-1", &now(), &huge), huge, 413, ""));
    cases.push(("unknown type", signed("mystery", "m-1", &now(), &good), good.clone(), 400, "Message-Type"));
    for (what, headers, body, want, says) in cases {
        let (status, text) = post(&host, &headers, body).await;
        assert_eq!(status, want, "{what}: {text}");
        assert!(text.contains(says), "{what}: {text} should name {says}");
    }
    assert!(stored(&host).await.is_empty(), "nothing refused was stored");
    // Non-ASCII names are kept as sent.
    let unicode = notification(vec![event("ent-ü", "u-1")]);
    assert_eq!(post(&host, &signed("notification", "m-9", &now(), &unicode), unicode).await.0, 204);
    assert_eq!(stored(&host).await, ["ent:ent-ü"]);

    // A host without a secret has no EventSub endpoint.
    let Some(plain) = TestHost::spawn(Backend::Sqlite, HostConfig::default()).await else { return };
    assert_eq!(post(&plain, &signed("notification", "m-1", &now(), &good), good).await.0, 404);
}

/// A fake Helix for EventSub subscriptions: app tokens, and create, list
/// (paged, two per page) and delete, checking what Twitch checks.
async fn fake_helix() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    type Subs = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
    let subs: Subs = Default::default();
    fn authorized(headers: &HeaderMap) -> bool {
        headers.get("authorization").is_some_and(|v| v == "Bearer fake-app-token")
            && headers.get("client-id").is_some_and(|v| v == "client-e2e")
    }
    let app = Router::new()
        .route("/oauth2/token", post(|| async { Json(json!({"access_token": "fake-app-token", "expires_in": 3600})) }))
        .route(
            "/helix/eventsub/subscriptions",
            post(|State(subs): State<Subs>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorized(&headers) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"message": "invalid token"})));
                }
                let transport = &body["transport"];
                let valid = body["type"] == "drop.entitlement.grant"
                    && body["version"] == "1"
                    && body["is_batching_enabled"] == true
                    && body["condition"]["organization_id"].is_string()
                    && transport["method"] == "webhook"
                    && transport["secret"] == SECRET
                    && transport["callback"].as_str().is_some_and(|c| c.ends_with("/eventsub"));
                if !valid {
                    return (StatusCode::BAD_REQUEST, Json(json!({"message": format!("bad request: {body}")})));
                }
                let mut subs = subs.lock().unwrap();
                if subs.iter().any(|s| s["condition"] == body["condition"]) {
                    return (StatusCode::CONFLICT, Json(json!({"message": "subscription already exists"})));
                }
                let sub = json!({"id": format!("sub-{}", subs.len() + 1), "status": "webhook_callback_verification_pending",
                    "type": "drop.entitlement.grant", "version": "1", "condition": body["condition"],
                    "created_at": "2026-11-24T10:00:00Z", "transport": {"method": "webhook", "callback": transport["callback"]}});
                subs.push(sub.clone());
                (StatusCode::ACCEPTED, Json(json!({"data": [sub], "total": subs.len(), "total_cost": 0, "max_total_cost": 10000})))
            })
            .get(|State(subs): State<Subs>, headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                if !authorized(&headers) {
                    return (StatusCode::UNAUTHORIZED, Json(json!({"message": "invalid token"})));
                }
                let subs = subs.lock().unwrap();
                let from: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let page: Vec<Value> = subs.iter().skip(from).take(2).cloned().collect();
                let cursor = if from + 2 < subs.len() { json!({"cursor": (from + 2).to_string()}) } else { json!({}) };
                (StatusCode::OK, Json(json!({"data": page, "pagination": cursor, "total": subs.len()})))
            })
            .delete(|State(subs): State<Subs>, headers: HeaderMap, Query(q): Query<std::collections::HashMap<String, String>>| async move {
                if !authorized(&headers) {
                    return StatusCode::UNAUTHORIZED;
                }
                let mut subs = subs.lock().unwrap();
                let before = subs.len();
                subs.retain(|s| Some(s["id"].as_str().unwrap_or_default()) != q.get("id").map(String::as_str));
                if subs.len() < before { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
            }),
        )
        .with_state(subs.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), subs)
}

/// Runs `drops-host eventsub ARGS` with a config naming the fake; (success, output).
fn eventsub_command(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drops-host"))
        .arg("eventsub")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_subscription_is_created_listed_and_deleted_through_helix() {
    let (helix, subs) = fake_helix().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("drops-host.toml");
    std::fs::write(
        &config,
        format!(
            "[twitch]\nclient_id = \"client-e2e\"\nclient_secret = \"client-secret-e2e\"\nauth_base_url = \"{helix}\"\n\
             api_base_url = \"{helix}\"\n[eventsub]\nsecret = \"{SECRET}\"\n"
        ),
    )
    .unwrap();
    let callback = "http://127.0.0.1:9/eventsub";
    let config_path = config.clone();
    let run = move |args: Vec<String>| {
        let config = config_path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                eventsub_command(&config, &args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .await
            .unwrap()
        }
    };
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for org in ["org-1", "org-2", "org-3"] {
        let (ok, out) = run(args(&["subscribe", "--callback", callback, "--organization-id", org])).await;
        assert!(ok, "{out}");
        assert!(out.contains("webhook_callback_verification_pending"), "{out}");
    }
    let first = subs.lock().unwrap()[0].clone();
    assert_eq!(first["condition"], json!({"organization_id": "org-1"}));
    // The same condition again: Twitch's 409, said plainly, exit non-zero.
    let (ok, out) = run(args(&["subscribe", "--callback", callback, "--organization-id", "org-1"])).await;
    assert!(!ok && out.contains("exists already"), "{out}");
    // Listed across pages (two per page here).
    let (ok, out) = run(args(&["list"])).await;
    assert!(ok, "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("sub-")).count(), 3, "{out}");
    let (ok, out) = run(args(&["delete", "sub-2"])).await;
    assert!(ok && out.contains("sub-2 deleted"), "{out}");
    let (ok, out) = run(args(&["delete", "sub-2"])).await;
    assert!(!ok && out.contains("no subscription `sub-2`"), "{out}");
    assert_eq!(subs.lock().unwrap().len(), 2);
    // A callback that is not a URL is refused before Twitch is asked.
    let (ok, out) = run(args(&["subscribe", "--callback", "not a url", "--organization-id", "org-9"])).await;
    assert!(!ok && out.contains("--callback"), "{out}");
}

#[tokio::test]
async fn the_admin_api_manages_the_subscription_too() {
    use reqwest::Method;
    let (helix, subs) = fake_helix().await;
    let config = HostConfig {
        extra_toml: format!(
            "[eventsub]\nsecret = \"{SECRET}\"\n[twitch]\nclient_id = \"client-e2e\"\nclient_secret = \"client-secret-e2e\"\n\
             auth_base_url = \"{helix}\"\napi_base_url = \"{helix}\"\n"
        ),
        ..Default::default()
    };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let request =
        json!({"callback": format!("{}/eventsub", host.base), "organization_id": "org-1", "campaign_id": "camp-1"});
    let (status, created) =
        host.admin_send(Method::POST, "/eventsub/subscriptions", request.to_string().into_bytes()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["condition"], json!({"organization_id": "org-1", "campaign_id": "camp-1"}));
    let (status, again) =
        host.admin_send(Method::POST, "/eventsub/subscriptions", request.to_string().into_bytes()).await;
    assert_eq!(status, 409, "{again}");
    let listed = host.admin_get("/eventsub/subscriptions").await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    for (body, want, field) in [
        (json!({"callback": "https://x/eventsub", "organization_id": "o", "extra": 1}), 400, "extra"),
        (json!({"callback": "https://x/eventsub"}), 400, "organization_id"),
        (json!({"callback": "ftp://x/eventsub", "organization_id": "o"}), 422, "https"),
    ] {
        let (status, answer) =
            host.admin_send(Method::POST, "/eventsub/subscriptions", body.to_string().into_bytes()).await;
        assert_eq!(status, want, "{answer}");
        assert!(answer.to_string().contains(field), "{answer}");
    }
    let id = created["id"].as_str().unwrap();
    assert_eq!(host.admin_send(Method::DELETE, &format!("/eventsub/subscriptions/{id}"), Vec::new()).await.0, 204);
    assert_eq!(host.admin_send(Method::DELETE, &format!("/eventsub/subscriptions/{id}"), Vec::new()).await.0, 404);
    assert!(subs.lock().unwrap().is_empty());
}

/// An acknowledged notification survives SIGKILL: stored before the answer,
/// read back by the restarted engine, and a redelivery after the restart is
/// still a duplicate.
#[tokio::test]
async fn an_acknowledged_notification_survives_sigkill() {
    let config = HostConfig { extra_toml: format!("[eventsub]\nsecret = \"{SECRET}\"\n"), ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let batch = notification(vec![event("ent-k1", "u-1"), event("ent-k2", "u-2")]);
    let headers = signed("notification", "m-kill", &now(), &batch);
    assert_eq!(post(&host, &headers, batch.clone()).await.0, 204);
    host.kill();
    assert_eq!(stored(&host).await, ["ent:ent-k1", "ent:ent-k2"], "acknowledged, so stored");
    host.restart();
    assert_eq!(post(&host, &headers, batch).await.0, 204, "Twitch's redelivery after the crash");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(host.get_text("/readyz").await, "ready", "the engine read them back");
    assert_eq!(stored(&host).await, ["ent:ent-k1", "ent:ent-k2"], "and stored nothing twice");
}
