//! E2 game state over a real websocket: event-based grants for the viewers
//! watching when it happens, every protocol rule's error, state kept across
//! a crash.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{heartbeat, Backend, HostConfig, TestHost};

pub(crate) type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) const E2_ALLOWLIST: &str = r#"
[e2]
allowlist = [ { client_id = "client-e2e", game_id = "game-1" } ]
"#;

pub(crate) const E2_TOKENS: &str = r#"
[[e2.tokens]]
token = "app-token"
kind = "app"
client_id = "client-e2e"
[[e2.tokens]]
token = "user-token"
kind = "user"
client_id = "client-e2e"
user_id = "twitch-b1"
[[e2.tokens]]
token = "old-token"
kind = "app"
client_id = "client-e2e"
expires_at = "2020-01-01T00:00:00Z"
"#;

pub(crate) fn boss_campaign() -> (String, String) {
    let text = r#"
id = "camp-boss"
name = "Boss"
game = "GameName"
game_id = "game-1"
client_id = "client-e2e"
starts_at = "2025-01-01T00:00:00Z"
ends_at = "2030-01-01T00:00:00Z"
[[rewards]]
id = "trophy"
[rule]
plugin = "boss-defeated"
config = { reward = "trophy", repeat_by = "boss_kills" }
"#;
    ("boss".into(), text.into())
}

fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap()
}

pub(crate) async fn host(backend: Backend, extra: &str) -> Option<TestHost> {
    let config = HostConfig {
        campaigns: vec![boss_campaign()],
        extra_plugins: vec!["boss-defeated"],
        extra_toml: format!("{E2_ALLOWLIST}{extra}{E2_TOKENS}"),
        ..Default::default()
    };
    let host = TestHost::spawn(backend, config).await?;
    let links = json!([
        {"twitch_user_id": "twitch-b1", "game_account_id": "b-1"},
        {"twitch_user_id": "twitch-b2", "game_account_id": "b-2"},
    ]);
    let (status, body) = host.admin_send(reqwest::Method::PUT, "/links", links.to_string().into_bytes()).await;
    assert_eq!((status, body), (200, json!({"linked": 2, "released": 0})));
    Some(host)
}

pub(crate) async fn connect(host: &TestHost) -> Ws {
    let url = format!("{}/e2", host.base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(url).await.expect("websocket connects").0
}

pub(crate) async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::text(message.to_string())).await.expect("send");
}

/// The next text message, or the close code as `{"closed": code}`.
pub(crate) async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer within 10 s") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Close(frame))) => return json!({"closed": frame.map(|f| u16::from(f.code))}),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return json!({"closed": null, "error": e.to_string()}),
            None => return json!({"closed": null}),
        }
    }
}

pub(crate) fn connect_message(token: &str, broadcasters: Option<&[&str]>, data: Value) -> Value {
    let mut m = json!({"type": "connect", "seq": 1, "token": token, "client_id": "client-e2e", "game_id": "game-1", "data": data});
    if let Some(ids) = broadcasters {
        m["broadcaster_ids"] = json!(ids);
    }
    m
}

async fn boss_kill(backend: Backend) {
    let Some(mut host) = host(backend, "").await else { return };
    let links = host.admin_get("/links?twitch_user_id=twitch-b1").await;
    assert_eq!(links, json!([{"twitch_user_id": "twitch-b1", "game_account_id": "b-1"}]));
    // v1 and v2 watch b-1; v3 watches b-2.
    for (id, b, viewers) in [("h1", "b-1", &["v1", "v2"][..]), ("h2", "b-2", &["v3"][..])] {
        assert_eq!(host.post_vhs(None, &heartbeat(id, b, "GameName", &now(), viewers)).await.0, 200);
    }
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("app-token", Some(&["twitch-b1"]), json!({"boss_defeated": false, "level": 3})))
        .await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack", "seq": 1}));
    let kill = json!({"type": "delta", "seq": 2, "data": {"boss_defeated": true, "boss_kills": 1}});
    send(&mut ws, kill.clone()).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack", "seq": 2}));
    // The same delta again (a client retrying a message whose ack it lost) changes nothing.
    send(&mut ws, kill).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack", "seq": 2}));
    let grants = host.wait_for_grants(2).await;
    let mut who: Vec<(&str, &str, &str)> = grants
        .iter()
        .map(|g| {
            (g["user_id"].as_str().unwrap(), g["broadcaster_id"].as_str().unwrap(), g["reward_id"].as_str().unwrap())
        })
        .collect();
    who.sort();
    assert_eq!(who, [("v1", "b-1", "trophy"), ("v2", "b-1", "trophy")], "only b-1's viewers, once");
    assert!(grants.iter().all(|g| g["grant_key"] == "b-1:boss_kills=1"), "{grants:?}");
    send(&mut ws, json!({"type": "disconnect"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack"}));
    assert_eq!(recv(&mut ws).await["closed"], 1000);

    // A crash after a checkpoint (1 s here), then the game server reconnects
    // and sends its full state again, as E2 asks: the host kept the state,
    // so nothing is granted twice, and it kept who is watching b-1.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    host.kill();
    let (states, e2_rows) = host.game_state_from_database().await;
    let state: Value = serde_json::from_str(&states[0].1).unwrap();
    assert_eq!((states.len(), states[0].0.as_str(), &state["boss_defeated"]), (1, "b-1", &json!(true)));
    assert_eq!(e2_rows, 0, "messages behind the checkpoint are dropped; the state holds them");
    host.restart();
    let mut ws = connect(&host).await;
    send(
        &mut ws,
        connect_message("app-token", Some(&["twitch-b1"]), json!({"boss_defeated": true, "boss_kills": 1, "level": 3})),
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    // The boss stands up and falls again: a second kill, its own grant key,
    // for the viewers of b-1's heartbeat from before the crash.
    send(&mut ws, json!({"type": "delta", "seq": 5, "data": {"boss_defeated": false}})).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    send(&mut ws, json!({"type": "delta", "seq": 6, "data": {"boss_defeated": true, "boss_kills": 2}})).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    let grants = host.wait_for_grants(4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grants_after = host.grants().await;
    assert_eq!(grants.len(), grants_after.len());
    let mut keys: Vec<(&str, &str)> =
        grants_after.iter().map(|g| (g["user_id"].as_str().unwrap(), g["grant_key"].as_str().unwrap())).collect();
    keys.sort();
    let want = [
        ("v1", "b-1:boss_kills=1"),
        ("v1", "b-1:boss_kills=2"),
        ("v2", "b-1:boss_kills=1"),
        ("v2", "b-1:boss_kills=2"),
    ];
    assert_eq!(keys, want);
    // One connection publishing shared state for two broadcasters: a kill in
    // it is a kill in both games, granted to each one's own viewers.
    send(&mut ws, json!({"type": "disconnect"})).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    let mut shared = connect(&host).await;
    let arena = json!({"boss_defeated": false, "boss_kills": 2});
    send(&mut shared, connect_message("app-token", Some(&["twitch-b1", "twitch-b2"]), arena)).await;
    assert_eq!(recv(&mut shared).await["type"], "ack");
    send(&mut shared, json!({"type": "delta", "data": {"boss_defeated": true, "boss_kills": 3}})).await;
    assert_eq!(recv(&mut shared).await["type"], "ack");
    let grants = host.wait_for_grants(7).await;
    let mut third: Vec<(&str, &str)> = grants
        .iter()
        .filter(|g| g["grant_key"].as_str().unwrap().ends_with("=3"))
        .map(|g| (g["user_id"].as_str().unwrap(), g["broadcaster_id"].as_str().unwrap()))
        .collect();
    third.sort();
    assert_eq!(third, [("v1", "b-1"), ("v2", "b-1"), ("v3", "b-2")]);
    // Event-based grants reach the manifest files like time-based ones.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let users = loop {
        let mut users: Vec<String> = host
            .manifest_files()
            .iter()
            .flat_map(|(_, m)| m["users"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_string()))
            .collect();
        users.sort();
        if users.len() >= 7 || std::time::Instant::now() > deadline {
            break users;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(users, ["v1", "v1", "v1", "v2", "v2", "v2", "v3"]);
}

#[tokio::test]
async fn a_boss_kill_grants_the_viewers_watching_then_sqlite() {
    boss_kill(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_boss_kill_grants_the_viewers_watching_then_postgres() {
    boss_kill(Backend::Postgres).await;
}

/// Opens a connection, sends `message`, and returns the error code and close code.
async fn refused(host: &TestHost, message: Value) -> (String, Value) {
    let mut ws = connect(host).await;
    send(&mut ws, message).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["type"], "error", "{answer}");
    assert!(!answer["message"].as_str().unwrap_or_default().is_empty(), "{answer}");
    let closed = recv(&mut ws).await;
    (answer["code"].as_str().unwrap().to_string(), closed["closed"].clone())
}

#[tokio::test]
async fn every_e2_rule_violation_gets_its_error() {
    let limits = "messages_per_window = 3\nmax_delta_bytes = 200\nidle_timeout_secs = 2\n";
    let Some(host) = host(Backend::Sqlite, limits).await else { return };
    // Bad links are refused naming the field, and nothing of the request is stored.
    let bad = json!([{"twitch_user_id": "twitch-b9", "game_account_id": "b-9"}, {"twitch_user_id": "twitch-b8", "game_account_id": " "}]);
    let (status, body) = host.admin_send(reqwest::Method::PUT, "/links", bad.to_string().into_bytes()).await;
    assert_eq!((status, &body["field"]), (400, &json!("[1].game_account_id")), "{body}");
    let typo = json!({"twitch_user": "twitch-b9", "game_account_id": "b-9"});
    let (status, body) = host.admin_send(reqwest::Method::PUT, "/links", typo.to_string().into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("twitch_user"), "{body}");
    let missing = json!({"twitch_user_id": "twitch-b9"});
    let (status, body) = host.admin_send(reqwest::Method::PUT, "/links", missing.to_string().into_bytes()).await;
    assert_eq!((status, &body["field"]), (400, &json!("game_account_id")), "{body}");
    let (status, body) = host.admin_send(reqwest::Method::GET, "/links?limit=many", Vec::new()).await;
    assert_eq!((status, &body["field"]), (400, &json!("limit")), "a bad query is JSON naming it too: {body}");
    assert_eq!(host.admin_get("/links?twitch_user_id=twitch-b9").await, json!([]));
    let state = json!({"level": 1});
    let cases = [
        (connect_message("Bearer app-token", Some(&["twitch-b1"]), state.clone()), "token_prefix", 4001),
        (connect_message("OAuth app-token", Some(&["twitch-b1"]), state.clone()), "token_prefix", 4001),
        (connect_message("nope", Some(&["twitch-b1"]), state.clone()), "invalid_token", 4001),
        (connect_message("old-token", Some(&["twitch-b1"]), state.clone()), "invalid_token", 4001),
        (connect_message("app-token", None, state.clone()), "broadcaster_ids_required", 4003),
        (connect_message("user-token", Some(&["twitch-b1"]), state.clone()), "broadcaster_ids_forbidden", 4003),
        (
            connect_message("app-token", Some(&["twitch-b1", "twitch-nobody"]), state.clone()),
            "broadcaster_not_linked",
            4003,
        ),
    ];
    for (message, code, close) in cases {
        assert_eq!(refused(&host, message.clone()).await, (code.to_string(), json!(close)), "{message}");
    }
    let mut unlisted = connect_message("app-token", Some(&["twitch-b1"]), state.clone());
    unlisted["game_id"] = json!("game-2");
    assert_eq!(refused(&host, unlisted).await, ("not_allowlisted".to_string(), json!(4003)));
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("old-token", Some(&["twitch-b1"]), state.clone())).await;
    assert!(recv(&mut ws).await["message"].as_str().unwrap().contains("expired"));

    // Dropped, not fatal: a delta before connect, an oversized delta, malformed JSON.
    let mut ws = connect(&host).await;
    send(&mut ws, json!({"type": "delta", "seq": 7, "data": {"level": 2}})).await;
    let answer = recv(&mut ws).await;
    assert_eq!((answer["code"].as_str(), answer["seq"].as_u64()), (Some("not_connected"), Some(7)), "{answer}");
    send(&mut ws, connect_message("user-token", None, state.clone())).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack", "seq": 1}), "a user token publishes for its own user");
    send(&mut ws, json!({"type": "delta", "data": {"blob": "x".repeat(300)}})).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "message_too_large", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("200"), "names the limit: {answer}");
    // The fourth message in the window (connect, delta, delta, this one) is one too many.
    send(&mut ws, json!({"type": "flush"})).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "rate_limited", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("3 messages per 60 s"), "{answer}");
    assert_eq!(recv(&mut ws).await["closed"], 4029);

    let mut ws = connect(&host).await;
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(recv(&mut ws).await["code"], "malformed");
    send(
        &mut ws,
        json!({"type": "connect", "token": "app-token", "client_id": "client-e2e", "broadcaster_ids": ["twitch-b1"]}),
    )
    .await;
    let answer = recv(&mut ws).await;
    assert!(answer["code"] == "malformed" && answer["message"].as_str().unwrap().contains("game_id"), "{answer}");
    // Idle past the (short, configured) deadline.
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "idle_timeout", "{answer}");
    assert_eq!(recv(&mut ws).await["closed"], 4008);
}

#[tokio::test]
async fn game_servers_are_told_to_reconnect_when_the_host_is_full_or_stopping() {
    let Some(mut host) = host(Backend::Sqlite, "max_connections = 1\nreconnect_after_ms = 250\n").await else { return };
    let mut first = connect(&host).await;
    send(&mut first, connect_message("app-token", Some(&["twitch-b1"]), json!({"level": 1}))).await;
    assert_eq!(recv(&mut first).await["type"], "ack");
    // Over the connection limit: come back later.
    let mut second = connect(&host).await;
    assert_eq!(recv(&mut second).await, json!({"type": "reconnect", "reconnect_after_ms": 250}));
    assert_eq!(recv(&mut second).await["closed"], 1013);
    // Shutting down: every connection is told to reconnect, after its acked messages are stored.
    host.stop();
    assert_eq!(recv(&mut first).await, json!({"type": "reconnect", "reconnect_after_ms": 250}));
    assert_eq!(recv(&mut first).await["closed"], 1012);
    // Back up, the game server sends its full state again; the state was kept, so it is no change.
    host.restart();
    let mut again = connect(&host).await;
    send(&mut again, connect_message("app-token", Some(&["twitch-b1"]), json!({"level": 1}))).await;
    assert_eq!(recv(&mut again).await["type"], "ack");
}

fn active_play_campaign() -> (String, String) {
    let text = r#"
id = "camp-active"
name = "Active"
game = "GameName"
game_id = "game-1"
client_id = "client-e2e"
starts_at = "2025-01-01T00:00:00Z"
ends_at = "2030-01-01T00:00:00Z"
[[rewards]]
id = "badge"
[rule]
plugin = "active-play-only"
config = { active_within_minutes = 3, tiers = [ { minutes = 2, reward = "badge" } ] }
"#;
    ("active".into(), text.into())
}

#[tokio::test]
async fn minutes_of_a_stream_whose_game_does_not_move_do_not_count() {
    let config = HostConfig {
        campaigns: vec![active_play_campaign()],
        extra_plugins: vec!["active-play-only"],
        extra_toml: format!("{E2_ALLOWLIST}{E2_TOKENS}"),
        ..Default::default()
    };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let links = json!({"twitch_user_id": "twitch-b1", "game_account_id": "b-1"});
    assert_eq!(host.admin_send(reqwest::Method::PUT, "/links", links.to_string().into_bytes()).await.0, 200);
    let minute = |m: i64| {
        let t = time::OffsetDateTime::now_utc() - time::Duration::minutes(3 - m);
        t.format(&time::format_description::well_known::Rfc3339).unwrap()
    };
    // b-1 plays (its game server publishes state); b-2's game never reports any.
    assert_eq!(host.post_vhs(None, &heartbeat("a0", "b-1", "GameName", &minute(0), &["v1"])).await.0, 200);
    assert_eq!(host.post_vhs(None, &heartbeat("i0", "b-2", "GameName", &minute(0), &["v2"])).await.0, 200);
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("app-token", Some(&["twitch-b1"]), json!({"level": 1}))).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    for m in 1..3 {
        for (id, b, v) in [("a", "b-1", "v1"), ("i", "b-2", "v2")] {
            let hb = heartbeat(&format!("{id}{m}"), b, "GameName", &minute(m), &[v]);
            assert_eq!(host.post_vhs(None, &hb).await.0, 200);
        }
    }
    let grants = host.wait_for_grants(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let users: Vec<Value> = host.grants().await.iter().map(|g| g["user_id"].clone()).collect();
    assert_eq!(users, [json!("v1")], "{grants:?}");
}

#[tokio::test]
async fn an_acknowledged_message_survives_sigkill_before_any_checkpoint() {
    let Some(mut host) = host(Backend::Sqlite, "").await else { return };
    assert_eq!(host.post_vhs(None, &heartbeat("h1", "b-1", "GameName", &now(), &["v1"])).await.0, 200);
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("app-token", Some(&["twitch-b1"]), json!({"boss_defeated": false}))).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    send(&mut ws, json!({"type": "delta", "seq": 2, "data": {"boss_defeated": true, "boss_kills": 1}})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "ack", "seq": 2}));
    // Killed the moment the kill is acked: the engine may not even have read it.
    host.kill();
    host.restart();
    let grants = host.wait_for_grants(1).await;
    let got: Vec<(&str, &str)> =
        grants.iter().map(|g| (g["user_id"].as_str().unwrap(), g["grant_key"].as_str().unwrap())).collect();
    assert_eq!(got, [("v1", "b-1:boss_kills=1")]);
}
