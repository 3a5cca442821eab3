//! Hostile plugins: each attack is stopped, the plugin stays usable, and the
//! host and the other campaigns carry on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use drops_host::config::PluginSettings;
use drops_host::plugins::{PluginError, PluginRuntime, WitCampaign, WitHeartbeat, WitViewers};
use serde_json::json;

use crate::helpers::{heartbeat, plugin_path, tiers_campaign, Backend, HostConfig, TestHost};

fn call(runtime: &PluginRuntime, plugin: &drops_host::plugins::Plugin, mode: &str) -> Result<usize, PluginError> {
    let campaign =
        WitCampaign { id: "c".into(), rewards: vec!["r".into()], config: json!({ "mode": mode }).to_string() };
    let hb =
        WitHeartbeat { broadcaster: "b".into(), game: "G".into(), minute: 1, viewers_reported: 2, state_changed: None };
    let viewers = WitViewers::from_progress([(1, true), (1, true)].into_iter());
    let ids = Arc::new(["v0".to_string(), "v1".to_string()].into_iter().collect());
    runtime.on_heartbeat(plugin, &campaign, &hb, &viewers, ids, &mut Default::default()).map(|v| v.grants.len())
}

/// A campaign `id` run by the hostile plugin in `mode`, over `window`.
fn hostile_campaign(id: &str, mode: &str, window: (&str, &str)) -> String {
    format!(
        "id = \"{id}\"\nname = \"{id}\"\ngame = \"GameName\"\nclient_id = \"c\"\nstarts_at = \"{}\"\nends_at = \"{}\"\n\
         [[rewards]]\nid = \"r\"\n[rule]\nplugin = \"hostile\"\nconfig = {{ mode = \"{mode}\" }}\n",
        window.0, window.1
    )
}

#[test]
fn each_attack_is_stopped_and_the_plugin_still_works() {
    let settings = PluginSettings { max_call_fuel: 200_000_000, max_memory_bytes: 32 << 20, ..Default::default() };
    let runtime = PluginRuntime::new(settings).unwrap();
    let plugin = runtime.load("hostile", &std::fs::read(plugin_path("hostile")).unwrap()).unwrap();
    assert_eq!(call(&runtime, &plugin, "ok"), Ok(2));

    let started = Instant::now();
    // 2 viewers: 200,000,000 fuel plus 5,000 each.
    assert_eq!(call(&runtime, &plugin, "loop"), Err(PluginError::CpuBudget(200_010_000)));
    assert!(started.elapsed() < Duration::from_secs(2), "an endless loop is stopped by its CPU budget");
    let bomb = call(&runtime, &plugin, "memory");
    assert!(matches!(bomb, Err(PluginError::OutOfMemory(_))), "memory bomb: {bomb:?}");
    match call(&runtime, &plugin, "recursion") {
        Err(PluginError::Trap(msg)) => assert!(msg.contains("stack") || msg.contains("out of bounds"), "{msg}"),
        other => panic!("deep recursion: {other:?}"),
    }
    match call(&runtime, &plugin, "flood") {
        Err(PluginError::BadOutput(msg)) => assert!(msg.contains("cap"), "{msg}"),
        other => panic!("flood of grants: {other:?}"),
    }
    assert!(matches!(call(&runtime, &plugin, "panic"), Err(PluginError::Trap(_))), "panic");

    // A trap poisons only its own instance: the next call gets a fresh one.
    assert_eq!(call(&runtime, &plugin, "ok"), Ok(2));
    // Big channels get proportionally more CPU (and wall-clock backstop).
    assert_eq!(runtime.fuel_budget(10_000_000), 200_000_000 + 10_000_000 * 5_000);
    assert_eq!(runtime.deadline_ms(10_000_000), 1_000 + 10_000);

    // The wall-clock backstop still stops what fuel would not (a budget set absurdly high).
    let lax = PluginSettings { max_call_fuel: u64::MAX / 2, max_call_ms: 30, ..Default::default() };
    let runtime = PluginRuntime::new(lax).unwrap();
    let plugin = runtime.load("hostile", &std::fs::read(plugin_path("hostile")).unwrap()).unwrap();
    assert_eq!(call(&runtime, &plugin, "loop"), Err(PluginError::Timeout(30)));
}

#[test]
fn plugins_that_reach_outside_the_rules_world_are_refused() {
    let runtime = PluginRuntime::new(PluginSettings::default()).unwrap();
    let wasi = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32))))"#,
    )
    .unwrap();
    let err = runtime.load("wasi", &wasi).unwrap_err();
    assert_eq!(err, PluginError::ForbiddenImport("wasi_snapshot_preview1#fd_write".into()));
    let future =
        wat::parse_str(r#"(module (import "drops:rules/host@0.9.0" "log" (func (param i32 i32 i32))))"#).unwrap();
    let err = runtime.load("future", &future).unwrap_err();
    assert_eq!(err.to_string(), "built for interface drops:rules@0.9.0, but this host supports drops:rules@0.4.0");
    assert_eq!(runtime.load("junk", b"not wasm").unwrap_err(), PluginError::NotWasm);
    let bare = wat::parse_str("(module)").unwrap();
    assert_eq!(runtime.load("bare", &bare).unwrap_err(), PluginError::MissingExport);
    // A module without the world's metadata (as AssemblyScript builds them)
    // that exports another interface version is named as such too.
    let newer = wat::parse_str(r#"(module (func (export "drops:rules/rule@0.9.0#on-heartbeat")))"#).unwrap();
    let err = runtime.load("newer", &newer).unwrap_err();
    assert_eq!(err.to_string(), "built for interface drops:rules@0.9.0, but this host supports drops:rules@0.4.0");
}

#[tokio::test]
async fn a_hostile_campaign_does_not_stop_the_others() {
    let window = ("2026-11-06T00:00:00Z", "2026-11-07T00:00:00Z");
    let hostile = |mode: &str| hostile_campaign(&format!("evil-{mode}"), mode, window);
    let mut campaigns = vec![("good".to_string(), tiers_campaign("good", "GameName", window, &[], &[(2, "t2")]))];
    for mode in ["loop", "memory", "recursion", "flood", "panic"] {
        campaigns.push((format!("evil-{mode}"), hostile(mode)));
    }
    let config = HostConfig { campaigns, extra_plugins: vec!["hostile"], ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    for m in 0..2 {
        let hb = heartbeat(&format!("h{m}"), "b", "GameName", &format!("2026-11-06T10:0{m}:00Z"), &["v1", "v2"]);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    }
    let grants = host.wait_for_grants(2).await;
    let rewards: Vec<(&str, &str)> =
        grants.iter().map(|g| (g["campaign_id"].as_str().unwrap(), g["user_id"].as_str().unwrap())).collect();
    assert_eq!(rewards, vec![("good", "v1"), ("good", "v2")], "only the good campaign grants");
    assert_eq!(host.get_text("/healthz").await, "ok");
    let metrics = host.get_text("/metrics").await;
    // Failed calls are counted by plugin, version and the failure's kind.
    let failed: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("drops_plugin_calls_total")
                && l.contains("plugin=\"hostile\"")
                && !l.contains("outcome=\"ok\"")
        })
        .collect();
    let total: u64 = failed.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum();
    assert_eq!(total, 10, "5 hostile campaigns x 2 heartbeats: {failed:?}");
    for kind in ["out_of_memory", "trap"] {
        assert!(failed.iter().any(|l| l.contains(&format!("outcome=\"{kind}\""))), "{kind}: {failed:?}");
    }
    assert!(host.log().contains("panic: panicked at"), "the panic message reaches the host's log");
    host.stop();
}

#[tokio::test]
async fn a_failing_campaign_pauses_alone_and_catches_up_when_fixed() {
    let window = ("2026-11-08T00:00:00Z", "2026-11-09T00:00:00Z");
    let flaky = |mode: &str| hostile_campaign("flaky", mode, window);
    let config = HostConfig {
        campaigns: vec![
            ("flaky".into(), flaky("panic")),
            ("good".into(), tiers_campaign("good", "GameName", window, &[], &[(1, "t1")])),
        ],
        extra_plugins: vec!["hostile"],
        extra_toml: "[plugins]\nbreaker_failures = 3\n".into(),
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let send = |m: u32, viewer: &str| {
        heartbeat(&format!("h{m}"), "b", "GameName", &format!("2026-11-08T10:0{m}:00Z"), &[viewer])
    };
    let paused = |host_view: &serde_json::Value| {
        host_view["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == "flaky").map(|c| !c["paused"].is_null())
    };
    async fn wait<F: Fn(&serde_json::Value) -> bool>(host: &TestHost, what: &str, pred: F) {
        let started = Instant::now();
        while !pred(&host.admin_get("/campaigns").await) {
            assert!(started.elapsed() < Duration::from_secs(20), "waiting for {what}\n{}", host.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Three failures in a row open the breaker.
    for (m, viewer) in [(0, "a0"), (1, "a1"), (2, "a2")] {
        assert_eq!(host.post_vhs(None, &send(m, viewer)).await.0, 200);
    }
    wait(&host, "the breaker to open", |v| paused(v) == Some(true)).await;
    // While paused, events keep coming; the other campaign keeps granting.
    for (m, viewer) in [(3, "b"), (4, "c")] {
        assert_eq!(host.post_vhs(None, &send(m, viewer)).await.0, 200);
    }
    let started = Instant::now();
    while host.grants().await.len() < 5 {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = host.get_text("/metrics").await;
    assert!(metrics.lines().any(|l| l == "drops_campaigns_paused 1"), "{metrics}");
    // The pause survives a restart.
    host.stop();
    host.restart();
    wait(&host, "the breaker to be restored", |v| paused(v) == Some(true)).await;
    // A fixed campaign resumes, and the events seen while paused are evaluated.
    std::fs::write(host.dir.path().join("rules/campaigns/flaky.toml"), flaky("ok")).unwrap();
    wait(&host, "the breaker to close", |v| paused(v) == Some(false)).await;
    let started = Instant::now();
    let flaky_grants = loop {
        let users: Vec<String> = host
            .grants()
            .await
            .iter()
            .filter(|g| g["campaign_id"] == "flaky")
            .map(|g| g["user_id"].as_str().unwrap().to_string())
            .collect();
        if users.len() >= 5 || started.elapsed() > Duration::from_secs(20) {
            break users;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        flaky_grants,
        vec!["a0", "a1", "a2", "b", "c"],
        "the failing streak's events and those kept while paused were evaluated once, in order"
    );
    let good: usize = host.grants().await.iter().filter(|g| g["campaign_id"] == "good").count();
    assert_eq!(good, 5, "a0 a1 a2 b c");
    host.stop();
}

#[test]
fn what_a_plugin_sends_the_host_is_counted_and_bounded() {
    // CPU enough to build 48 MiB of grant keys: the byte budget, not fuel, must stop them.
    let settings = PluginSettings { max_call_fuel: 2_000_000_000, ..Default::default() };
    let runtime = PluginRuntime::new(settings).unwrap();
    let plugin = runtime.load("hostile", &std::fs::read(plugin_path("hostile")).unwrap()).unwrap();
    // 2 viewers: 16 MiB plus 1 KiB each.
    let budget = (16 << 20) + 2 * 1024;
    // Through imports: counted by the host.
    assert_eq!(call(&runtime, &plugin, "log-flood"), Err(PluginError::HostBudget(budget)));
    // Counted, not timed: the same verdict every time.
    assert_eq!(call(&runtime, &plugin, "log-flood"), Err(PluginError::HostBudget(budget)), "again");
    // In the answer: wasmtime's own copy limit, set to the same budget, stops
    // the lift itself (48 MiB of keys, or 100 keys aliasing one 8 MiB string:
    // 800 MiB if lifted whole).
    for mode in ["big-keys", "aliased-keys", "big-keys"] {
        match call(&runtime, &plugin, mode) {
            Err(PluginError::Trap(message)) => assert!(message.contains("hostcalls"), "{mode}: {message}"),
            other => panic!("{mode}: {other:?}"),
        }
    }
    // A 1 MiB state key is refused outright, before the budget even fills.
    let flood = Err(PluginError::BadOutput("state key is 1048576 bytes, more than 256".into()));
    assert_eq!(call(&runtime, &plugin, "state-flood"), flood);
    // A huge error string is cut before it reaches a log or an answer.
    let campaign =
        WitCampaign { id: "c".into(), rewards: vec!["r".into()], config: json!({"mode": "huge-error"}).to_string() };
    match runtime.validate_config(&plugin, &campaign) {
        Err(PluginError::Rejected(message)) => assert!(message.len() < 2048, "{} bytes kept", message.len()),
        other => panic!("huge error: {other:?}"),
    }
    assert_eq!(call(&runtime, &plugin, "ok"), Ok(2), "the plugin still works");
}

#[tokio::test]
async fn plugins_flooding_the_host_leave_its_memory_and_the_other_campaigns_alone() {
    let window = ("2026-11-09T00:00:00Z", "2026-11-10T00:00:00Z");
    let hostile = |mode: &str| hostile_campaign(&format!("evil-{mode}"), mode, window);
    let mut campaigns = vec![("good".to_string(), tiers_campaign("good", "GameName", window, &[], &[(3, "t3")]))];
    for mode in ["state-flood", "log-flood", "big-keys", "aliased-keys", "state-hoard"] {
        campaigns.push((format!("evil-{mode}"), hostile(mode)));
    }
    let config = HostConfig {
        campaigns,
        extra_plugins: vec!["hostile"],
        extra_toml: "[plugins]\nmax_campaign_state_bytes = 1048576\n".into(),
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let before = host.peak_rss_mib();
    for m in 0..3 {
        let hb = heartbeat(&format!("h{m}"), "b", "GameName", &format!("2026-11-09T10:0{m}:00Z"), &["v1", "v2"]);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    }
    let started = Instant::now();
    while host.grants().await.iter().filter(|g| g["campaign_id"] == "good").count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak = host.peak_rss_mib();
    println!("flooding plugins: peak RSS {before} MiB -> {peak} MiB");
    // Three calls of each flood: a 1 MiB key 2,000 times, 10,000 log lines of
    // 100 KB, 48 MiB of grant keys, 100 keys aliasing one 8 MiB string.
    // Without the copy limit set to the budget, the aliased keys alone took it up by ~130 MiB.
    assert!(peak < before + 100, "peak resident memory {before} -> {peak} MiB");
    // A campaign whose config the plugin refuses with 10 MiB of error: cut before the API and the log.
    std::fs::write(host.dir.path().join("rules/campaigns/evil-huge-error.toml"), hostile("huge-error")).unwrap();
    let started = Instant::now();
    let huge = loop {
        let view = host.admin_get("/campaigns").await;
        let found = view["errors"].as_array().unwrap().iter().find_map(|e| {
            e["file"].as_str().unwrap().contains("huge-error").then(|| e["error"].as_str().unwrap().len())
        });
        if let Some(len) = found {
            break len;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(huge < 2048, "the refused config's error is {huge} bytes");
    let paused = host.admin_get("/campaigns").await;
    assert_eq!(host.get_text("/healthz").await, "ok", "{paused}");
    host.stop();
    let hoarded: usize = host
        .campaign_state()
        .await
        .iter()
        .filter(|(c, _, _)| c == "evil-state-hoard")
        .map(|(_, k, v)| k.len() + v.len())
        .sum();
    assert!(hoarded > 0 && hoarded <= 1 << 20, "a campaign's state is capped: {hoarded} bytes");
    assert!(!host.log().contains(&"l".repeat(3000)), "log lines are cut");
}

#[tokio::test]
async fn a_heartbeat_larger_than_one_call_is_decided_in_parts() {
    // 3,000 viewers, at most 1,024 per call: three calls, handles from 0 in
    // each; every viewer must get their own grant, none twice, none lost.
    let window = ("2026-11-06T00:00:00Z", "2026-11-07T00:00:00Z");
    let campaign = tiers_campaign("parts", "GameName", window, &[], &[(1, "first-minute")]);
    let config = HostConfig {
        campaigns: vec![("parts".into(), campaign)],
        extra_toml: "[plugins]\nmax_viewers_per_call = 1024\n".into(),
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let crowd: Vec<String> = (0..3000).map(|i| format!("viewer-{i}")).collect();
    let crowd: Vec<&str> = crowd.iter().map(String::as_str).collect();
    let hb = heartbeat("huge", "b-huge", "GameName", "2026-11-06T10:00:00Z", &crowd);
    assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    let grants = host.wait_for_grants(crowd.len()).await;
    let mut users: Vec<&str> = grants.iter().map(|g| g["user_id"].as_str().unwrap()).collect();
    users.sort_unstable();
    let mut expected = crowd.clone();
    expected.sort_unstable();
    assert_eq!(users, expected, "each viewer granted once\n{}", host.log());
    let metrics = host.get_text("/metrics").await;
    let calls = metrics
        .lines()
        .find(|l| l.starts_with("drops_plugin_calls_total") && l.contains("outcome=\"ok\""))
        .unwrap_or_else(|| panic!("no call count in /metrics:\n{metrics}"));
    assert!(calls.ends_with(" 3"), "three calls of at most 1,024 viewers: {calls}");
    host.stop();
}
