//! The cost of a rule decision: the watch-time-tiers rule as a sandboxed wasm
//! component against the very same Rust code called natively, and a whole
//! engine step (watch-time counting plus the plugin call).
//!
//! Needs the example plugin: `scripts/build-plugins.sh`, then
//! `cargo bench -p drops-host --bench engine`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use drops_host::domain::{Event, Heartbeat, InboxEvent};
use drops_host::engine::{evaluate, Evaluation, Judgement, State};
use drops_host::plugins::{PluginRuntime, WitCampaign, WitHeartbeat, WitViewers};
use drops_host::rules::RuleSet;
use drops_plugin_sdk::Rule;

const CONFIG: &str =
    r#"{"tiers":[{"minutes":10,"reward":"bronze"},{"minutes":20,"reward":"silver"},{"minutes":30,"reward":"gold"}]}"#;
const REWARDS: [&str; 3] = ["bronze", "silver", "gold"];

fn plugin_bytes() -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-unknown-unknown/plugin/watch_time_tiers.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins.sh", path.display()))
}

fn plugin_call(c: &mut Criterion) {
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let plugin = runtime.load("watch-time-tiers", &plugin_bytes()).unwrap();
    let campaign =
        WitCampaign { id: "c".into(), rewards: REWARDS.iter().map(|r| r.to_string()).collect(), config: CONFIG.into() };
    let native_campaign = drops_plugin_sdk::Campaign::new("c", &REWARDS, CONFIG);
    let native_config = drops_plugin_sdk::parse_config::<watch_time_tiers::WatchTimeTiers>(&native_campaign).unwrap();
    let mut group = c.benchmark_group("plugin_call");
    for n in [1usize, 1000, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        let viewers = WitViewers::from_progress((0..n).map(|i| ((i % 40) as u32, true)));
        let hb = WitHeartbeat {
            broadcaster: "b".into(),
            game: "G".into(),
            minute: 1,
            viewers_reported: n as u32,
            state_changed: None,
        };
        let ids = Arc::new((0..n).map(|i| format!("viewer-{i}")).collect());
        group.bench_with_input(BenchmarkId::new("wasm", n), &viewers, |b, viewers| {
            let mut kv = Default::default();
            b.iter(|| {
                runtime.on_heartbeat(&plugin, &campaign, &hb, black_box(viewers), Arc::clone(&ids), &mut kv).unwrap()
            })
        });
        let native_viewers: Vec<drops_plugin_sdk::Viewer> = (0..n)
            .map(|i| drops_plugin_sdk::Viewer { handle: i as u32, minutes: (i % 40) as u32, counted: true })
            .collect();
        let native_hb = drops_plugin_sdk::Heartbeat {
            broadcaster: "b".into(),
            game: "G".into(),
            minute: 1,
            viewers_reported: n as u32,
            state_changed: None,
        };
        group.bench_with_input(BenchmarkId::new("native", n), &native_viewers, |b, viewers| {
            // The wasm call parses the config each time too (a fresh instance per call).
            b.iter(|| {
                let config =
                    drops_plugin_sdk::parse_config::<watch_time_tiers::WatchTimeTiers>(&native_campaign).unwrap();
                let _ = &native_config;
                watch_time_tiers::WatchTimeTiers::on_heartbeat(
                    &config,
                    &native_campaign,
                    &native_hb,
                    black_box(viewers),
                )
            })
        });
    }
    group.finish();
}

fn engine_step(c: &mut Criterion) {
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("plugins")).unwrap();
    std::fs::create_dir_all(dir.path().join("campaigns")).unwrap();
    std::fs::write(dir.path().join("plugins/watch-time-tiers.wasm"), plugin_bytes()).unwrap();
    let campaign = format!(
        "id = \"c\"\nname = \"c\"\ngame = \"G\"\nclient_id = \"x\"\nstarts_at = \"2020-01-01T00:00:00Z\"\n\
         ends_at = \"2030-01-01T00:00:00Z\"\n{}[rule]\nplugin = \"watch-time-tiers\"\nconfig = {}\n",
        REWARDS.iter().map(|r| format!("[[rewards]]\nid = \"{r}\"\n")).collect::<String>(),
        "{ tiers = [ { minutes = 10, reward = \"bronze\" }, { minutes = 20, reward = \"silver\" }, { minutes = 30, reward = \"gold\" } ] }"
    );
    std::fs::write(dir.path().join("campaigns/c.toml"), campaign).unwrap();
    let rules = RuleSet::load(dir.path(), &runtime);
    assert!(rules.errors().is_empty(), "{:?}", rules.errors());
    let mut group = c.benchmark_group("engine_step");
    for n in [1000usize, 10_000] {
        group.throughput(Throughput::Elements(n as u64));
        let viewers: Vec<String> = (0..n).map(|i| format!("viewer-{i}")).collect();
        let events: Vec<InboxEvent> = (0..600)
            .map(|m| {
                let json = serde_json::json!({"id": format!("h{m}"), "broadcaster": "b", "game": "G",
                    "time": format!("2026-11-01T{:02}:{:02}:00Z", m / 60, m % 60), "viewer_list": viewers});
                let heartbeat = serde_json::from_value::<Heartbeat>(json).unwrap();
                InboxEvent { seq: m as i64, received_at_ms: 0, event: Event::Heartbeat(heartbeat) }
            })
            .collect();
        let mut state = State::new(&Judgement::default());
        let mut i = 0;
        group.bench_function(BenchmarkId::new("count_and_decide", n), |b| {
            b.iter(|| {
                // Each iteration is the next minute of the same channel: every viewer-minute counts.
                let mut out = Evaluation::default();
                evaluate(&mut state, &rules, &runtime, &events[i % events.len()], &mut out);
                i += 1;
                out.viewer_minutes
            })
        });
    }
    group.finish();
}

criterion_group!(benches, plugin_call, engine_step);
criterion_main!(benches);
