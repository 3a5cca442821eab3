//! Attacks sent to the real binary (issue: hard edges). Each test asserts the
//! host's answer, that it stays up, and that honest traffic still works.

use std::process::Command;

use serde_json::json;

use crate::e2::{connect, connect_message, host as e2_host, recv, send};
use crate::helpers::{heartbeat, Backend, HostConfig, TestHost};

/// Runs `drops-host serve` with `config` and `env`, expecting it to refuse to start; returns its output.
fn refused_start(config: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drops-host.toml");
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{0}/data\"\nrules_dir = \"{0}/rules\"\n{config}",
        dir.path().display()
    );
    std::fs::write(&file, toml).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_drops-host"));
    command.args(["serve", "--config"]).arg(&file);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with {config:?} {env:?}:\n{text}");
    assert!(!text.contains("listening on"), "{text}");
    text
}

#[test]
fn empty_and_short_secrets_and_out_of_range_settings_are_refused_at_start() {
    let cases = [
        ("[admin]\ntoken = \"\"\n", vec![], "`admin.token` is 0 bytes"),
        ("", vec![("DROPS_HOST_ADMIN__TOKEN", "")], "`admin.token` is 0 bytes"),
        ("[vhs]\ntoken = \"guessable\"\n", vec![], "`vhs.token` is 9 bytes"),
        // Once a panic on `Instant + Duration`; once a wrap through `as i64`.
        ("[e2]\nidle_timeout_secs = 9223372036854775807\n", vec![], "`e2.idle_timeout_secs`"),
        ("", vec![("DROPS_HOST_E2__IDLE_TIMEOUT_SECS", "18446744073709551615")], "`e2.idle_timeout_secs`"),
        ("", vec![("DROPS_HOST_VHS__MAX_FUTURE_SECS", "18446744073709551615")], "`vhs.max_future_secs`"),
        ("[engine]\nbatch_events = 0\n", vec![], "`engine.batch_events` is 0; it must be from 1"),
        // Several hosts share state through PostgreSQL only; host ids name leases and log lines.
        ("[cluster]\nenabled = true\n", vec![], "`cluster.enabled` needs a postgres:// database_url"),
        ("[cluster]\nhost_id = \"../../é\"\n", vec![], "`cluster.host_id` must be 1 to 128 characters"),
        ("", vec![("DROPS_HOST_CLUSTER__ENGINE_PARTITIONS", "0")], "`cluster.engine_partitions` is 0"),
        ("", vec![("DROPS_HOST_CLUSTER__LEASE_TTL_MS", "18446744073709551615")], "`cluster.lease_ttl_ms`"),
    ];
    for (config, env, named) in cases {
        let out = refused_start(config, &env);
        assert!(out.contains(named), "{config:?} {env:?} should name {named}:\n{out}");
    }
}

#[tokio::test]
async fn a_non_ascii_token_is_answered_and_never_locks_e2() {
    let Some(host) = e2_host(Backend::Sqlite, "max_connections = 2\n").await else { return };
    let before = host.peak_rss_mib();
    // More such connects than there are slots: each is answered, and each gives its slot back.
    for token in ["éééé", "Bearé-token", "oauthé", "日本語のトークン", "é"] {
        let mut ws = connect(&host).await;
        send(&mut ws, connect_message(token, Some(&["twitch-b1"]), json!({"level": 1}))).await;
        let answer = recv(&mut ws).await;
        assert_eq!(answer["code"], "invalid_token", "{token}: {answer}");
        assert_eq!(recv(&mut ws).await["closed"], 4001, "{token}");
    }
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("app-token", Some(&["twitch-b1"]), json!({"level": 1}))).await;
    assert_eq!(recv(&mut ws).await["type"], "ack", "a game server still gets a slot");
    println!("non-ASCII E2 tokens: peak RSS {before} -> {} MiB", host.peak_rss_mib());
}

#[tokio::test]
async fn the_vhs_token_stays_out_of_the_log() {
    let token = "a-vhs-token-nobody-may-read";
    let config = HostConfig { vhs_token: Some(token.into()), ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let hb = heartbeat("h-1", "b-1", "GameName", "2026-11-23T10:00:00Z", &["v-1"]);
    assert_eq!(host.post_vhs(Some(token), &hb).await.0, 200);
    assert_eq!(host.post_vhs(Some("a-wrong-token-of-some-length"), &hb).await.0, 401);
    assert_eq!(host.get_text("/readyz").await, "ready");
    host.stop();
    let log = host.log();
    assert!(log.contains("/vhs/{token}"), "requests are logged, with the token redacted:\n{log}");
    assert!(!log.contains(token) && !log.contains("a-wrong-token"), "{log}");
}

#[test]
fn migrate_does_not_print_the_database_password() {
    let out = Command::new(env!("CARGO_BIN_EXE_drops-host"))
        .arg("migrate")
        .env("DROPS_HOST_DATABASE_URL", "mysql://app:hunter2-secret@127.0.0.1:1/drops")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("app:***@127.0.0.1:1") && !text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn a_stopped_engine_fails_readiness_refuses_events_and_exits_non_zero() {
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, HostConfig::default()).await else { return };
    let hb = heartbeat("h-1", "b-1", "GameName", "2026-11-23T10:00:00Z", &["v-1"]);
    assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    assert_eq!(host.get_text("/readyz").await, "ready");
    // A row no release of drops-host writes: the engine cannot go past it.
    sqlx::any::install_default_drivers();
    let pool = crate::helpers::open_database(&host.database_url).await;
    sqlx::query("INSERT INTO inbox (source, dedup_key, header, viewers, received_at) VALUES ('vhs', 'bad', '{not json', NULL, 0)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let status = host.wait_exit(std::time::Duration::from_secs(20));
    let status = status.unwrap_or_else(|| panic!("the host kept running without its engine:\n{}", host.log()));
    assert!(!status.success(), "a supervisor must see the failure: {status}");
    let log = host.log();
    assert!(log.contains("the engine stopped") && log.contains("corrupt"), "{log}");
}

/// A fake of Twitch's `GET /oauth2/validate` that counts the questions it gets.
async fn fake_twitch() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let asked = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let app = axum::Router::new().route(
        "/oauth2/validate",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!({"client_id": "client-e2e", "scopes": [], "expires_in": 3600})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), asked)
}

#[tokio::test]
async fn before_authentication_e2_costs_little_and_echoes_little() {
    use std::sync::atomic::Ordering;
    let (twitch, asked) = fake_twitch().await;
    let extra = format!(
        "verifier = \"twitch\"\ntwitch_auth_url = \"{twitch}\"\nconnect_timeout_secs = 1\nmax_broadcaster_ids = 3\n"
    );
    let Some(host) = e2_host(Backend::Sqlite, &extra).await else { return };

    // Not allowlisted, or too many broadcasters: refused before any call to Twitch.
    let mut unlisted = connect_message("some-token", Some(&["twitch-b1"]), json!({}));
    unlisted["game_id"] = json!("game-2");
    let mut ws = connect(&host).await;
    send(&mut ws, unlisted).await;
    assert_eq!(recv(&mut ws).await["code"], "not_allowlisted");
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("some-token", Some(&["a", "b", "c", "d"]), json!({}))).await;
    let answer = recv(&mut ws).await;
    assert_eq!(answer["code"], "too_many_broadcasters", "{answer}");
    assert_eq!(recv(&mut ws).await["closed"], 4003);
    assert_eq!(asked.load(Ordering::SeqCst), 0, "no outbound call for a refused connect");

    // A huge value is not echoed back (nor logged) whole.
    let mut huge = connect_message("some-token", Some(&["twitch-b1"]), json!({}));
    huge["client_id"] = json!("x".repeat(50_000));
    let mut ws = connect(&host).await;
    send(&mut ws, huge).await;
    let answer = recv(&mut ws).await;
    let message = answer["message"].as_str().unwrap();
    assert!(answer["code"] == "not_allowlisted" && message.len() < 400, "{} bytes echoed", message.len());

    // Frames before `connect` do not hold a slot past the connect deadline.
    let mut ws = connect(&host).await;
    let started = std::time::Instant::now();
    let closing = loop {
        send(&mut ws, json!({"type": "flush"})).await;
        let answer = recv(&mut ws).await;
        if answer["code"] != "not_connected" {
            break answer;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "still open after 5 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(closing["code"], "connect_timeout", "{closing}");
    assert_eq!(recv(&mut ws).await["closed"], 4008);

    // Binary frames count against the rate like any message.
    let mut ws = connect(&host).await;
    use futures_util::SinkExt;
    for _ in 0..70 {
        if ws.send(tokio_tungstenite::tungstenite::Message::binary(vec![0u8])).await.is_err() {
            break;
        }
    }
    let closed = loop {
        let answer = recv(&mut ws).await;
        if answer["code"] != "malformed" {
            break answer;
        }
    };
    assert_eq!(closed["code"], "rate_limited", "{closed}");

    // An honest game server: one question to Twitch, its broadcasters resolved in one go.
    let mut ws = connect(&host).await;
    send(&mut ws, connect_message("app-token", Some(&["twitch-b1", "twitch-b2"]), json!({"level": 1}))).await;
    assert_eq!(recv(&mut ws).await["type"], "ack");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    assert!(!host.log().contains(&"x".repeat(1000)), "the huge value reached the log");
    println!(
        "e2 before authentication (unlisted, 4 ids, 50 KB echo, connect deadline, binary flood): peak RSS {} MiB",
        host.peak_rss_mib()
    );
}

/// A gzip body of ~80 KB that inflates to one heartbeat of `ids` viewer ids.
fn gzip_bomb(ids: usize) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(br#"{"id":"bomb","broadcaster":"b","game":"G","time":"2026-11-23T10:00:00Z","viewer_list":["#)
        .unwrap();
    let chunk = "\"v\",".repeat(100_000);
    for _ in 0..ids / 100_000 {
        gz.write_all(chunk.as_bytes()).unwrap();
    }
    gz.write_all(br#""v"]}"#).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn an_unauthenticated_gzip_bomb_is_refused_before_it_is_inflated() {
    let secret = "vhs-signing-secret-0123";
    let config = HostConfig { vhs_token: Some(secret.into()), ..Default::default() };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let bomb = gzip_bomb(20_000_000);
    assert!(bomb.len() < 200_000, "{} bytes", bomb.len());
    let before = host.peak_rss_mib();
    let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
    let wrong = drops_host::ingest::vhs::auth::sign("not-the-secret-at-all", "m-1", &now, &bomb);
    let headers = [
        ("drops-message-id", "m-1".to_string()),
        ("drops-message-timestamp", now.clone()),
        ("drops-message-signature", wrong),
        ("content-encoding", "gzip".to_string()),
    ];
    let sends = (0..4).map(|_| host.post_vhs_raw(None, bomb.clone(), &headers));
    for (status, answer) in futures_util::future::join_all(sends).await {
        assert_eq!(status, 401, "{answer}");
    }
    let grown = host.peak_rss_mib().saturating_sub(before);
    // Before the fix the same four bodies were inflated and parsed first: +446 MiB.
    assert!(grown < 64, "peak resident memory grew by {grown} MiB for four refused bodies");

    // A signed body must say its length: it is buffered (within a budget) before its signature is checked.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(host.base.trim_start_matches("http://")).await.unwrap();
        let request = format!(
            "POST /vhs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\ndrops-message-id: m-9\r\n\
             drops-message-timestamp: {now}\r\ndrops-message-signature: sha256=00\r\n\r\n1\r\n[\r\n0\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 64];
        let n = s.read(&mut answer).await.unwrap();
        assert!(
            String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 411"),
            "{}",
            String::from_utf8_lossy(&answer[..n])
        );
    }

    // A correctly signed body still goes through.
    let body = serde_json::to_vec(&heartbeat("h-1", "b-1", "GameName", "2026-11-23T10:00:00Z", &["v-1"])).unwrap();
    let signature = drops_host::ingest::vhs::auth::sign(secret, "m-2", &now, &body);
    let headers = [
        ("drops-message-id", "m-2".to_string()),
        ("drops-message-timestamp", now),
        ("drops-message-signature", signature),
    ];
    assert_eq!(host.post_vhs_raw(None, body, &headers).await.0, 200);
    println!("gzip bomb x4, wrong signature: peak RSS {before} MiB -> {} MiB", host.peak_rss_mib());
}

#[tokio::test]
async fn slow_clients_cannot_lock_twitch_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let limits = "[http]\nheader_timeout_secs = 2\nmax_connections = 64\n";
    let config = HostConfig {
        extra_toml: format!("request_timeout_secs = 3\nmax_bodies_in_flight = 4\n{limits}"),
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let addr = host.base.trim_start_matches("http://").to_string();
    // 20 clients that connect and send nothing at all.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // 100 clients stalled in their headers, more than the connection limit.
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"POST /vhs HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        stalled.push(s);
    }
    // 10 clients trickling a body, more than the bodies allowed in flight.
    let mut tricklers = Vec::new();
    for _ in 0..10 {
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head =
                "POST /vhs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[";
            s.write_all(head.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            for _ in 0..20 {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if s.write_all(b" ").await.is_err() {
                    break;
                }
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).into_owned()
        }));
    }
    // Twitch's real heartbeat: retried on 503 with Retry-After, as Twitch does, until it is stored.
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(15)).build().unwrap();
    let hb = heartbeat("real", "b-1", "GameName", "2026-11-23T10:00:00Z", &["v-1"]);
    let mut answers = Vec::new();
    for _ in 0..15 {
        let answer = client.post(format!("{}/vhs", host.base)).json(&hb).send().await.expect("an answer, not a hang");
        answers.push(answer.status().as_u16());
        if answer.status() == 200 {
            break;
        }
        assert_eq!(answer.status(), 503, "busy is 503, which Twitch retries");
        assert!(answer.headers().contains_key("retry-after"));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(answers.last(), Some(&200), "answers: {answers:?}");
    for t in tricklers {
        let answer = t.await.unwrap();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
    }
    // The stalled clients were cut off at the header deadline.
    let mut cut = 0;
    for mut s in stalled {
        let mut buf = [0u8; 256];
        match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(_)) | Ok(Err(_)) => cut += 1,
            Err(_) => {}
        }
    }
    assert_eq!(cut, 100, "every stalled connection is closed by the host");
    for mut s in silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "a silent socket is closed at the header deadline");
    }
    assert_eq!(host.get_text("/healthz").await, "ok");
    println!("slow clients (20 silent, 100 stalled headers, 10 trickled bodies): peak RSS {} MiB", host.peak_rss_mib());
    host.stop();
}

#[tokio::test]
async fn viewer_lists_of_channels_gone_quiet_are_let_go() {
    let config = HostConfig { extra_toml: "[e2]\nwatching_window_secs = 1\n".into(), ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    for b in ["b-1", "b-2"] {
        let hb = heartbeat(&format!("{b}-h"), b, "GameName", "2026-11-23T10:00:00Z", &["v-1", "v-2"]);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let hb = heartbeat("b-3-h", "b-3", "GameName", "2026-11-23T10:01:00Z", &["v-3"]);
    assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    let started = std::time::Instant::now();
    loop {
        let metrics = host.get_text("/metrics").await;
        if metrics.lines().any(|l| l == "drops_engine_broadcasters_watching 1") {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    host.stop();
    sqlx::any::install_default_drivers();
    let pool = crate::helpers::open_database(&host.database_url).await;
    let watchers: Vec<String> =
        sqlx::query_scalar("SELECT broadcaster_id FROM watchers").fetch_all(&pool).await.unwrap();
    assert_eq!(watchers, ["b-3"]);
    let kept: Vec<String> =
        sqlx::query_scalar("SELECT dedup_key FROM inbox WHERE viewers IS NOT NULL").fetch_all(&pool).await.unwrap();
    assert_eq!(kept, ["b-3-h"], "only the latest channel's viewers are still stored");
    pool.close().await;
}

#[tokio::test]
async fn a_paused_campaigns_backlog_is_capped() {
    let broken = "id = \"broken\"\nname = \"b\"\ngame = \"GameName\"\nclient_id = \"c\"\n\
        starts_at = \"2026-11-01T00:00:00Z\"\nends_at = \"2026-12-01T00:00:00Z\"\n\
        [[rewards]]\nid = \"r\"\n[rule]\nplugin = \"hostile\"\nconfig = { mode = \"panic\" }\n";
    let config = HostConfig {
        campaigns: vec![("broken".into(), broken.into())],
        extra_plugins: vec!["hostile"],
        extra_toml: "[plugins]\nbreaker_failures = 1\n".into(),
        // The test host's [engine] table is written already; the environment sets the cap.
        env: vec![("DROPS_HOST_ENGINE__MAX_PAUSED_BACKLOG_EVENTS".into(), "2".into())],
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    for m in 0..6 {
        let hb = heartbeat(&format!("h{m}"), "b", "GameName", &format!("2026-11-23T10:0{m}:00Z"), &["v"]);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    }
    let started = std::time::Instant::now();
    loop {
        let metrics = host.get_text("/metrics").await;
        let dropped =
            metrics.lines().any(|l| l.starts_with("drops_breaker_backlog_dropped_total{campaign=\"broken\"}"));
        if dropped && metrics.lines().any(|l| l == "drops_engine_paused_backlog_events 2") {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(host.log().contains("max_paused_backlog_events"));
    host.stop();
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_trickling_client() {
    use tokio::io::AsyncWriteExt;
    let config = HostConfig { extra_toml: "[http]\nshutdown_timeout_secs = 1\n".into(), ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let mut s = tokio::net::TcpStream::connect(host.base.trim_start_matches("http://")).await.unwrap();
    let head = "POST /vhs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[";
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let pid = nix::unistd::Pid::from_raw(host.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // The request's own deadline is 30 s; the shutdown deadline (1 s) wins.
    let status = host.wait_exit(std::time::Duration::from_secs(10));
    let status = status.unwrap_or_else(|| panic!("still draining after 10 s:\n{}", host.log()));
    assert!(status.success(), "{status}");
    assert!(host.log().contains("shutting down without them"), "{}", host.log());
    drop(s);
}
