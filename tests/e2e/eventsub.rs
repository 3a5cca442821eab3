//! `POST /eventsub`: Twitch's EventSub webhook for `drop.entitlement.grant`
//! against the real binary: the challenge, signed notifications stored once
//! however often they are delivered, and every hostile message refused
//! before anything is stored.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{open_database, Backend, HostConfig, TestHost};

const SECRET: &str = "eventsub-secret-0123";

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

/// Headers of a message as Twitch signs it.
fn signed(kind: &str, id: &str, timestamp: &str, body: &[u8]) -> Vec<(String, String)> {
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

async fn post(host: &TestHost, headers: &[(String, String)], body: Vec<u8>) -> (u16, String) {
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
    json!({"id": format!("ev-{entitlement}"), "data": {
        "organization_id": "org-1", "category_id": "game-1", "category_name": "Gäme 名前",
        "campaign_id": "camp-1", "user_id": user, "user_login": "viewer", "user_name": "Viewér",
        "entitlement_id": entitlement, "benefit_id": "benefit-sword", "created_at": "2026-11-24T10:00:00Z"}})
}

fn notification(events: Vec<Value>) -> Vec<u8> {
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
