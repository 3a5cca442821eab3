//! Today's Twitch Drops end to end against the real binary: EventSub
//! entitlements decided by the `benefit-to-items` plugin, kept for viewers
//! who link later, their items delivered to the studio's webhook (down,
//! then up), FULFILLED on a fake Twitch in batches of at most 100 through
//! its 429 and UPDATE_FAILED, reconciliation of what the webhook missed,
//! and a SIGKILL in the middle.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::eventsub::{entitlement_event, notification, now, post, signed, SECRET};
use crate::helpers::{Backend, HostConfig, TestHost};

const CAMPAIGN: &str = r#"
id = "camp-1"
name = "Launch drops"
game = "GameName (Drops)"
client_id = "client-e2e"
starts_at = "2025-01-01T00:00:00Z"
ends_at = "2030-01-01T00:00:00Z"
[[rewards]]
id = "benefit-sword"
[[rewards]]
id = "benefit-shield"
[rule]
plugin = "benefit-to-items"
[rule.config]
daily_cap = 1000
[rule.config.benefits.benefit-sword]
items = [{ id = "iron-sword" }, { id = "gold", quantity = 100 }]
[rule.config.benefits.benefit-shield]
items = [{ id = "gold-shield" }]
requires = ["iron-sword"]
"#;

/// What the fake Twitch and the fake studio saw, and how they behave.
#[derive(Default)]
struct Seen {
    /// Entitlement id → times Twitch answered SUCCESS for it (FULFILLED is
    /// idempotent on Twitch; this counts how often the host asked).
    fulfilled: HashMap<String, u32>,
    /// Ids of every PATCH answered (not refused with 429), with when it came.
    patches: Vec<(Instant, Vec<String>)>,
    /// When the fake answered 429, and until when it asked to wait.
    limited_at: Option<Instant>,
    /// Get Drops Entitlements' CLAIMED list.
    claimed: Vec<Value>,
    /// Ids answered UPDATE_FAILED the first time, and NOT_FOUND always.
    fail_once: HashSet<String>,
    not_found: HashSet<String>,
    /// Item deliveries the studio's webhook took: entitlement id → deliveries.
    delivered: HashMap<String, Vec<Value>>,
}

struct Fakes {
    url: String,
    seen: Arc<Mutex<Seen>>,
    sink_up: Arc<AtomicBool>,
    rate_limit_next: Arc<AtomicBool>,
    patch_delay: Duration,
}

/// A fake Twitch (token, Update and Get Drops Entitlements) and a fake studio
/// webhook (`/hook`, answering 503 while down), on one local server.
async fn fakes(patch_delay: Duration) -> Fakes {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::post;
    use axum::{Json, Router};
    type Shared = (Arc<Mutex<Seen>>, Arc<AtomicBool>, Arc<AtomicBool>, Duration);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (sink_up, rate_limit_next) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
    let app = Router::new()
        .route("/oauth2/token", post(|| async { Json(json!({"access_token": "fake-app-token", "expires_in": 3600})) }))
        .route(
            "/helix/entitlements/drops",
            axum::routing::patch(|State((seen, _, limit, delay)): State<Shared>, headers: HeaderMap, Json(body): Json<Value>| async move {
                tokio::time::sleep(delay).await;
                if headers.get("authorization").is_none_or(|v| v != "Bearer fake-app-token") {
                    return (StatusCode::UNAUTHORIZED, HeaderMap::new(), Json(json!({"message": "invalid token"})));
                }
                let ids: Vec<String> = serde_json::from_value(body["entitlement_ids"].clone()).unwrap_or_default();
                let mut seen = seen.lock().unwrap();
                if body["fulfillment_status"] != "FULFILLED" || ids.is_empty() || ids.len() > 100 {
                    return (StatusCode::BAD_REQUEST, HeaderMap::new(), Json(json!({"message": "bad request"})));
                }
                if limit.swap(false, Ordering::SeqCst) {
                    seen.limited_at = Some(Instant::now());
                    let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 2;
                    let mut headers = HeaderMap::new();
                    headers.insert("ratelimit-limit", "800".parse().unwrap());
                    headers.insert("ratelimit-remaining", "0".parse().unwrap());
                    headers.insert("ratelimit-reset", reset.to_string().parse().unwrap());
                    return (StatusCode::TOO_MANY_REQUESTS, headers, Json(json!({"message": "Too Many Requests"})));
                }
                seen.patches.push((Instant::now(), ids.clone()));
                let mut groups: HashMap<&str, Vec<String>> = HashMap::new();
                for id in ids {
                    let status = if seen.not_found.contains(&id) {
                        "NOT_FOUND"
                    } else if id.starts_with("bad-") {
                        "INVALID_ID"
                    } else if seen.fail_once.remove(&id) {
                        "UPDATE_FAILED"
                    } else {
                        if !seen.fulfilled.contains_key(&id) {
                            seen.claimed.retain(|c| c["id"] != id.as_str());
                        }
                        *seen.fulfilled.entry(id.clone()).or_default() += 1;
                        "SUCCESS"
                    };
                    groups.entry(status).or_default().push(id);
                }
                let data: Vec<Value> = groups.into_iter().map(|(status, ids)| json!({"status": status, "ids": ids})).collect();
                (StatusCode::OK, HeaderMap::new(), Json(json!({"data": data})))
            })
            .get(|State((seen, ..)): State<Shared>, Query(q): Query<HashMap<String, String>>| async move {
                assert_eq!(q.get("fulfillment_status").map(String::as_str), Some("CLAIMED"));
                let seen = seen.lock().unwrap();
                // Two per page, so paging is exercised.
                let from: usize = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let page: Vec<Value> = seen.claimed.iter().skip(from).take(2).cloned().collect();
                let cursor = if from + 2 < seen.claimed.len() { json!({"cursor": (from + 2).to_string()}) } else { json!({}) };
                Json(json!({"data": page, "pagination": cursor}))
            }),
        )
        .route(
            "/hook",
            post(|State((seen, up, ..)): State<Shared>, headers: HeaderMap, Json(body): Json<Value>| async move {
                if !up.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                if headers.get("drops-message-kind").is_some_and(|k| k == "items") {
                    let mut seen = seen.lock().unwrap();
                    for d in body["deliveries"].as_array().cloned().unwrap_or_default() {
                        let id = d["entitlement_id"].as_str().unwrap_or_default().to_string();
                        seen.delivered.entry(id).or_default().push(d);
                    }
                }
                StatusCode::NO_CONTENT.into_response()
            }),
        )
        .with_state((seen.clone(), sink_up.clone(), rate_limit_next.clone(), patch_delay));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Fakes { url: format!("http://{addr}"), seen, sink_up, rate_limit_next, patch_delay }
}

fn host_config(fakes: &Fakes) -> HostConfig {
    let url = &fakes.url;
    HostConfig {
        campaigns: vec![("launch".into(), CAMPAIGN.into())],
        extra_plugins: vec!["benefit-to-items"],
        extra_toml: format!(
            "[eventsub]\nsecret = \"{SECRET}\"\nreconcile_interval_secs = 1\nsweep_interval_secs = 1\n\
             [twitch]\nclient_id = \"client-e2e\"\nclient_secret = \"client-secret-e2e\"\nauth_base_url = \"{url}\"\n\
             api_base_url = \"{url}\"\nretry_initial_ms = 100\nretry_max_secs = 1\n\
             [sink.webhook]\nurl = \"{url}/hook\"\nsecret = \"webhook-secret-0123\"\nmax_batch = 40\nretry_initial_ms = 50\nretry_max_secs = 1\n"
        ),
        ..Default::default()
    }
}

async fn link(host: &TestHost, links: &[(&str, &str)]) -> Value {
    let body: Vec<Value> = links.iter().map(|(t, g)| json!({"twitch_user_id": t, "game_account_id": g})).collect();
    let (status, answer) = host.admin_send(Method::PUT, "/links", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn send(host: &TestHost, message_id: &str, events: Vec<Value>) {
    let body = notification(events);
    let (status, text) = post(host, &signed("notification", message_id, &now(), &body), body).await;
    assert_eq!(status, 204, "{text}");
}

/// The stored entitlements by id.
async fn entitlements(host: &TestHost) -> HashMap<String, Value> {
    let list = host.admin_get("/entitlements?limit=10000").await;
    list.as_array().unwrap().iter().map(|e| (e["entitlement_id"].as_str().unwrap().to_string(), e.clone())).collect()
}

/// Waits (at most 30 s) until `done` holds for the stored entitlements; returns them.
async fn wait_until(
    host: &TestHost,
    what: &str,
    done: impl Fn(&HashMap<String, Value>) -> bool,
) -> HashMap<String, Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = entitlements(host).await;
        if done(&stored) {
            return stored;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}: {stored:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is(stored: &HashMap<String, Value>, id: &str, status: &str, fulfillment: Option<&str>) -> bool {
    stored.get(id).is_some_and(|e| e["status"] == status && e["fulfillment"].as_str() == fulfillment)
}

async fn the_eventsub_path_from_entitlement_to_fulfilled(backend: Backend) {
    let fakes = fakes(Duration::ZERO).await;
    fakes.sink_up.store(false, Ordering::SeqCst);
    let Some(host) = TestHost::spawn(backend, host_config(&fakes)).await else { return };
    link(&host, &[("u-1", "acc-1"), ("u-2", "acc-2")]).await;

    // A sword and an unmet shield, a viewer with no link yet; the message
    // again (at least once), then the sword again beside the shield it unlocks.
    let first = vec![
        entitlement_event("ent-a1", "u-1", "benefit-sword"),
        entitlement_event("ent-b2", "u-2", "benefit-shield"),
        entitlement_event("ent-a3", "u-3", "benefit-sword"),
    ];
    send(&host, "m-1", first.clone()).await;
    send(&host, "m-1", first).await;
    send(
        &host,
        "m-2",
        vec![entitlement_event("ent-a1", "u-1", "benefit-sword"), entitlement_event("ent-b1", "u-1", "benefit-shield")],
    )
    .await;
    let stored =
        wait_until(&host, "decided", |s| s.len() == 4 && !s.values().any(|e| e["status"] == "unmatched")).await;
    assert_eq!(stored["ent-a1"]["status"], "deliver");
    assert_eq!(stored["ent-a1"]["account"], "acc-1");
    assert_eq!(
        stored["ent-a1"]["items"],
        json!([{"id": "iron-sword", "quantity": 1}, {"id": "gold", "quantity": 100}])
    );
    assert_eq!(stored["ent-b1"]["status"], "deliver", "the shield after the sword: {:?}", stored["ent-b1"]);
    assert_eq!(stored["ent-b2"]["status"], "refused");
    assert!(stored["ent-b2"]["reason"].as_str().unwrap().contains("iron-sword"), "{:?}", stored["ent-b2"]);
    assert_eq!(stored["ent-a3"]["status"], "awaiting_link");

    // The studio's webhook is down: nothing is delivered, so nothing is FULFILLED.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(fakes.seen.lock().unwrap().fulfilled.is_empty(), "FULFILLED before the sink confirmed");
    assert!(entitlements(&host).await["ent-a1"]["delivered_at"].is_null());
    fakes.sink_up.store(true, Ordering::SeqCst);
    wait_until(&host, "fulfilled", |s| {
        is(s, "ent-a1", "deliver", Some("fulfilled")) && is(s, "ent-b1", "deliver", Some("fulfilled"))
    })
    .await;

    // u-3 links, however much later: their entitlement is decided then.
    let answer = link(&host, &[("u-3", "acc-3")]).await;
    assert_eq!(answer["released"], 1, "{answer}");
    let stored = wait_until(&host, "late link", |s| is(s, "ent-a3", "deliver", Some("fulfilled"))).await;
    assert_eq!(stored["ent-a3"]["account"], "acc-3");

    // Reconciliation: Twitch lists a CLAIMED entitlement its webhook never brought.
    fakes.seen.lock().unwrap().claimed.push(json!({"id": "ent-missed", "benefit_id": "benefit-sword",
        "timestamp": "2026-11-24T10:00:00Z", "user_id": "u-2", "game_id": "game-1", "fulfillment_status": "CLAIMED"}));
    let stored = wait_until(&host, "reconciled", |s| is(s, "ent-missed", "deliver", Some("fulfilled"))).await;
    assert_eq!(stored["ent-missed"]["campaign_id"], "camp-1", "found by its benefit");

    // 150 more: FULFILLED in batches of at most 100, through a 429, one
    // UPDATE_FAILED (tried again) and a NOT_FOUND (recorded, not retried).
    let users: Vec<(String, String)> = (100..250).map(|i| (format!("u-{i}"), format!("acc-{i}"))).collect();
    let pairs: Vec<(&str, &str)> = users.iter().map(|(t, g)| (t.as_str(), g.as_str())).collect();
    link(&host, &pairs).await;
    {
        let mut seen = fakes.seen.lock().unwrap();
        seen.fail_once.insert("ent-m-120".into());
        seen.not_found.insert("ent-m-130".into());
    }
    fakes.rate_limit_next.store(true, Ordering::SeqCst);
    let events: Vec<Value> =
        (100..250).map(|i| entitlement_event(&format!("ent-m-{i}"), &format!("u-{i}"), "benefit-sword")).collect();
    for (n, chunk) in events.chunks(50).enumerate() {
        send(&host, &format!("m-bulk-{n}"), chunk.to_vec()).await;
    }
    let stored = wait_until(&host, "all answered", |s| {
        (100..250).all(|i| s.get(&format!("ent-m-{i}")).is_some_and(|e| !e["fulfillment"].is_null()))
    })
    .await;
    assert_eq!(stored["ent-m-130"]["fulfillment"], "not_found");
    assert_eq!(stored["ent-m-120"]["fulfillment"], "fulfilled", "UPDATE_FAILED is tried again");
    assert!(stored["ent-m-120"]["fulfil_attempts"].as_i64().unwrap() >= 2);
    let delivered: Vec<&String> = stored.iter().filter(|(_, e)| e["status"] == "deliver").map(|(id, _)| id).collect();
    {
        let seen = fakes.seen.lock().unwrap();
        assert!(seen.patches.iter().all(|(_, ids)| ids.len() <= 100), "a PATCH carried more than 100 ids");
        assert_eq!(
            seen.patches.iter().filter(|(_, ids)| ids.contains(&"ent-m-130".to_string())).count(),
            1,
            "NOT_FOUND is permanent"
        );
        let limited_at = seen.limited_at.expect("the 429 was answered");
        let next = seen.patches.iter().map(|(at, _)| *at).find(|at| *at > limited_at).expect("a PATCH after the 429");
        assert!(
            next - limited_at >= Duration::from_millis(900),
            "the next PATCH came {:?} after the 429",
            next - limited_at
        );
        // Every delivered entitlement FULFILLED exactly once, and its items delivered exactly once.
        assert_eq!(delivered.len(), 4 + 150, "{stored:#?}");
        for id in &delivered {
            assert_eq!(seen.delivered.get(*id).map(Vec::len), Some(1), "{id} delivered once");
            if id.as_str() != "ent-m-130" {
                assert_eq!(seen.fulfilled.get(*id), Some(&1), "{id} FULFILLED once");
            }
        }
        assert!(!seen.fulfilled.contains_key("ent-b2") && !seen.delivered.contains_key("ent-b2"), "refused: neither");
        let sent: usize = seen.patches.iter().map(|(_, ids)| ids.len()).sum();
        assert_eq!(sent, delivered.len() + 1, "each id is answered once, the UPDATE_FAILED one twice");
    }

    // The operator fixes what made Twitch refuse (here: Twitch knows the id
    // now) and sends the refused one again; nothing else is re-sent.
    fakes.seen.lock().unwrap().not_found.remove("ent-m-130");
    let retry = |id: &'static str| {
        let (host, path) = (&host, format!("/entitlements/{id}/retry"));
        async move { host.admin_send(reqwest::Method::POST, &path, Vec::new()).await }
    };
    let (status, answer) = retry("ent-m-130").await;
    assert_eq!((status, answer["fulfillment"].clone()), (200, Value::Null), "{answer}");
    wait_until(&host, "fulfilled on retry", |s| is(s, "ent-m-130", "deliver", Some("fulfilled"))).await;
    assert_eq!(fakes.seen.lock().unwrap().fulfilled.get("ent-m-130"), Some(&1));
    let (status, answer) = retry("ent-m-130").await;
    assert_eq!(status, 409, "a fulfilled one is not sent again: {answer}");
    assert!(answer["error"].as_str().unwrap().contains("fulfilled"), "{answer}");
    assert_eq!(retry("no-such-entitlement").await.0, 404);
    let sent: usize = fakes.seen.lock().unwrap().patches.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(sent, delivered.len() + 2, "only the retried id was sent again");

    // The console's overview shows the campaign's entitlements by outcome, and why they were refused.
    let overview = host.admin_get("/overview").await;
    let campaign = overview["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == "camp-1").unwrap().clone();
    let outcomes = &campaign["entitlements"]["outcomes"];
    assert_eq!(outcomes["fulfilled"].as_u64(), Some(delivered.len() as u64), "{campaign}");
    assert_eq!(outcomes["refused"], 1, "{campaign}");
    let reasons = campaign["entitlements"]["reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r["reason"].as_str().unwrap().contains("iron-sword")), "{campaign}");
    // And how much state the rule keeps (what each account got, its day's count), against the limit;
    // checkpoints come every second here.
    let started = Instant::now();
    loop {
        let overview = host.admin_get("/overview").await;
        let campaign = overview["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == "camp-1").unwrap().clone();
        let state = &campaign["rule_state"];
        assert_eq!(state["limit_bytes"], 64 << 20, "{state}");
        if state["keys"].as_i64().unwrap() >= 150 {
            assert!(state["bytes"].as_i64().unwrap() > state["keys"].as_i64().unwrap() * 64, "{state}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the rule's state never showed: {state}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_eventsub_path_from_entitlement_to_fulfilled_on_sqlite() {
    the_eventsub_path_from_entitlement_to_fulfilled(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_eventsub_path_from_entitlement_to_fulfilled_on_postgres() {
    the_eventsub_path_from_entitlement_to_fulfilled(Backend::Postgres).await;
}

/// SIGKILL while items are delivered and entitlements FULFILLED: after the
/// restart every entitlement is decided once and FULFILLED, its items reach
/// the studio, and only what was in flight at the kill is sent again (a
/// webhook batch under the same idempotency keys; one PATCH, which Twitch
/// takes idempotently).
#[tokio::test]
async fn sigkill_in_the_middle_loses_nothing_and_fulfils_nothing_twice() {
    let fakes = fakes(Duration::from_millis(150)).await;
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, host_config(&fakes)).await else { return };
    assert!(fakes.patch_delay > Duration::ZERO);
    let users: Vec<(String, String)> = (0..400).map(|i| (format!("k-{i}"), format!("acc-k-{i}"))).collect();
    let pairs: Vec<(&str, &str)> = users.iter().map(|(t, g)| (t.as_str(), g.as_str())).collect();
    link(&host, &pairs).await;
    let events: Vec<Value> =
        (0..400).map(|i| entitlement_event(&format!("ent-k-{i}"), &format!("k-{i}"), "benefit-sword")).collect();
    for (n, chunk) in events.chunks(100).enumerate() {
        send(&host, &format!("m-kill-{n}"), chunk.to_vec()).await;
    }
    // Kill once Twitch has taken some, but not all.
    let deadline = Instant::now() + Duration::from_secs(30);
    while fakes.seen.lock().unwrap().fulfilled.is_empty() {
        assert!(Instant::now() < deadline, "nothing was FULFILLED");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.kill();
    let before = fakes.seen.lock().unwrap().fulfilled.len();
    assert!(before < 400, "the kill came too late to test anything ({before} fulfilled)");
    host.restart();
    let stored = wait_until(&host, "all fulfilled after the restart", |s| {
        s.len() == 400 && s.values().all(|e| e["fulfillment"] == "fulfilled")
    })
    .await;
    assert!(stored.values().all(|e| e["status"] == "deliver"));
    let seen = fakes.seen.lock().unwrap();
    assert_eq!(seen.fulfilled.len(), 400);
    let asked_again = seen.fulfilled.values().filter(|n| **n > 1).count();
    assert!(asked_again <= 100, "only the PATCH cut off by the kill is asked again ({asked_again} ids)");
    assert_eq!(seen.delivered.len(), 400, "every entitlement's items reached the studio");
    let repeated: usize = seen.delivered.values().map(|d| d.len() - 1).sum();
    assert!(repeated <= 40, "only a batch cut off by the kill is sent again ({repeated} repeats)");
    let keys: HashSet<&str> =
        seen.delivered.values().flatten().map(|d| d["idempotency_key"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 400, "a repeat carries the same idempotency key");
    let patched: usize = seen.patches.iter().map(|(_, ids)| ids.len()).sum();
    assert!(patched <= 400 + 100, "only the PATCH cut off by the kill is sent again ({patched} ids sent)");
}

/// `drops-host simulate` plays Twitch's EventSub side: signed, batched
/// notifications with a redelivered message and a duplicate entitlement,
/// and viewers who link late; the host decides each entitlement once.
#[tokio::test]
async fn simulate_plays_eventsub_with_redeliveries_duplicates_and_late_links() {
    let fakes = fakes(Duration::ZERO).await;
    let Some(host) = TestHost::spawn(Backend::Sqlite, host_config(&fakes)).await else { return };
    let target = host.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_drops-host"))
            .args(["simulate", "--target", &target, "--channels", "1", "--viewers", "1", "--multi-viewers", "0"])
            .args(["--minutes", "1", "--speed", "6000", "--eventsub-secret", SECRET, "--entitled-viewers", "9"])
            .args(["--drops-campaign", "camp-1", "--entitlements-per-message", "4"])
            .args(["--admin-token", crate::helpers::ADMIN_TOKEN])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    // Viewers 0-8: a sword each but viewer 4, who earns a shield alone (refused);
    // the odd ones a shield after their sword. 13 entitlements, one sent twice.
    assert!(printed.contains("EventSub sent 14 entitlements"), "{printed}");
    assert!(printed.contains("1 redelivered messages, 1 duplicate entitlements, 0 failed"), "{printed}");
    assert!(printed.contains("6 viewers linked first, 3 linked late"), "{printed}");
    let stored = wait_until(&host, "every entitlement decided and answered", |s| {
        s.len() == 13 && s.values().all(|e| e["status"] == "refused" || e["fulfillment"] == "fulfilled")
    })
    .await;
    let refused: Vec<&String> = stored.iter().filter(|(_, e)| e["status"] == "refused").map(|(id, _)| id).collect();
    assert_eq!(refused.len(), 1, "{stored:#?}");
    assert_eq!(stored[refused[0]]["account"], "fan-4");
    let late: HashSet<&str> = stored.values().filter_map(|e| e["account"].as_str()).collect();
    assert!(["fan-2", "fan-5", "fan-8"].iter().all(|a| late.contains(a)), "late linkers decided: {late:?}");
}

fn hostile_campaign(mode: &str) -> String {
    format!(
        "id = \"camp-h\"\nname = \"Hostile drops\"\ngame = \"GameName (Drops)\"\nclient_id = \"client-e2e\"\n\
         starts_at = \"2025-01-01T00:00:00Z\"\nends_at = \"2030-01-01T00:00:00Z\"\n[[rewards]]\nid = \"benefit-x\"\n\
         [rule]\nplugin = \"hostile\"\nconfig = {{ mode = \"{mode}\" }}\n"
    )
}

/// A rule that answers an entitlement with more than 100 items fails the
/// call: its entitlements are recorded `failed`, its campaign pauses alone,
/// the other campaign's go on; a fixed revision decides the failed and the
/// kept ones, and a huge non-ASCII refusal is cut to 1 KiB on a character
/// boundary.
#[tokio::test]
async fn a_hostile_rule_pauses_its_own_entitlements_only() {
    let fakes = fakes(Duration::ZERO).await;
    let mut config = host_config(&fakes);
    config.campaigns.push(("hostile".into(), hostile_campaign("many-items")));
    config.extra_plugins.push("hostile");
    config.extra_toml.push_str("[plugins]\nbreaker_failures = 3\n");
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let users: Vec<(String, String)> = (0..6).map(|i| (format!("h-{i}"), format!("acc-h-{i}"))).collect();
    let pairs: Vec<(&str, &str)> = users.iter().map(|(t, g)| (t.as_str(), g.as_str())).collect();
    link(&host, &pairs).await;
    let hostile = |i: usize, benefit: &str| {
        let mut event = entitlement_event(&format!("ent-h-{i}"), &format!("h-{i}"), benefit);
        event["data"]["campaign_id"] = json!("camp-h");
        event
    };
    send(&host, "m-h-1", (0..4).map(|i| hostile(i, "benefit-x")).collect()).await;
    send(&host, "m-h-2", vec![entitlement_event("ent-good", "h-5", "benefit-sword"), hostile(4, "refuse")]).await;
    let stored = wait_until(&host, "the good campaign's entitlement fulfilled", |s| {
        is(s, "ent-good", "deliver", Some("fulfilled"))
    })
    .await;
    // Its failing streak is recorded as failed (not decided); what came after the pause is kept undecided.
    for i in 0..3 {
        let e = &stored[&format!("ent-h-{i}")];
        assert_eq!(e["status"], "failed", "{e}");
        assert!(e["reason"].as_str().unwrap().contains("101 items"), "{e}");
    }
    assert!(!stored.contains_key("ent-h-3") && !stored.contains_key("ent-h-4"), "{stored:#?}");
    let campaigns = host.admin_get("/campaigns").await;
    let paused =
        campaigns["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == "camp-h").unwrap()["paused"].clone();
    assert!(paused["reason"].as_str().unwrap().contains("101 items"), "{paused}");

    // A fixed revision resumes the campaign: the kept entitlements are decided, once.
    let (status, answer) =
        host.admin_send(Method::PUT, "/campaigns/hostile", hostile_campaign("ok").into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let stored = wait_until(&host, "the kept entitlements decided", |s| {
        (0..5)
            .all(|i| s.get(&format!("ent-h-{i}")).is_some_and(|e| e["status"] == "deliver" || e["status"] == "refused"))
    })
    .await;
    for i in 0..4 {
        assert_eq!(stored[&format!("ent-h-{i}")]["items"], json!([{"id": "ok-item", "quantity": 1}]));
    }
    let reason = stored["ent-h-4"]["reason"].as_str().unwrap();
    assert_eq!(stored["ent-h-4"]["status"], "refused");
    let kept = reason.strip_suffix("… (cut)").expect("marked as cut");
    assert!(kept.len() <= 1024 && kept.chars().all(|c| c == 'ü'), "cut on a character boundary: {} bytes", kept.len());
    assert_eq!(host.get_text("/healthz").await, "ok");
}

/// An entitlement of a campaign the host does not have is `unmatched`;
/// once the campaign is uploaded, the sweep decides it.
#[tokio::test]
async fn an_unmatched_entitlement_is_decided_once_its_campaign_arrives() {
    let fakes = fakes(Duration::ZERO).await;
    let Some(host) = TestHost::spawn(Backend::Sqlite, host_config(&fakes)).await else { return };
    link(&host, &[("u-late", "acc-late")]).await;
    let mut event = entitlement_event("ent-late", "u-late", "benefit-sword");
    event["data"]["campaign_id"] = json!("camp-later");
    send(&host, "m-late", vec![event]).await;
    let stored = wait_until(&host, "unmatched", |s| is(s, "ent-late", "unmatched", None)).await;
    assert!(stored["ent-late"]["reason"].as_str().unwrap().contains("camp-later"), "{:?}", stored["ent-late"]);
    let later = CAMPAIGN.replace("id = \"camp-1\"", "id = \"camp-later\"");
    let (status, answer) = host.admin_send(Method::PUT, "/campaigns/later", later.into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let stored = wait_until(&host, "decided by the sweep", |s| is(s, "ent-late", "deliver", Some("fulfilled"))).await;
    assert_eq!(stored["ent-late"]["campaign_id"], "camp-later");
}
