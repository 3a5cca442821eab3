//! The cost of a rule decision: the watch-time-tiers rule as a sandboxed wasm
//! component against the same rule done the ways a studio could pick instead
//! (the very same Rust code called natively, the limit; a core wasm module fed
//! JSON in linear memory, the Extism-style ABI; a Rhai script), and a whole
//! engine step (watch-time counting plus the plugin call).
//!
//! Needs the example plugin and the JSON-ABI peer: `scripts/build-plugins.sh`
//! and `cargo build --profile plugin --target wasm32-unknown-unknown -p json-abi-tiers`,
//! then `cargo bench -p drops-host --bench engine --features bench-peers`
//! (without the feature the Rhai peer is left out).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use drops_host::domain::{Event, Heartbeat, InboxEvent};
use drops_host::engine::{evaluate, Evaluation, Judgement, Lookups, State};
use drops_host::plugins::{PluginRuntime, WitCampaign, WitHeartbeat, WitViewers};
use drops_host::rules::RuleSet;
use drops_plugin_sdk::Rule;

const CONFIG: &str =
    r#"{"tiers":[{"minutes":10,"reward":"bronze"},{"minutes":20,"reward":"silver"},{"minutes":30,"reward":"gold"}]}"#;
const REWARDS: [&str; 3] = ["bronze", "silver", "gold"];

fn wasm_file(name: &str, how: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-unknown-unknown/plugin").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; {how}", path.display()))
}

fn plugin_bytes() -> Vec<u8> {
    wasm_file("watch_time_tiers.wasm", "run scripts/build-plugins.sh")
}

/// The grants as (viewer handle, reward index), in the order the rule made them.
type Grants = Vec<(u32, u32)>;

/// The tiers rule as a core module behind a JSON ABI (`benches/json-abi-tiers`),
/// run as the host runs plugins: a fresh pooled instance per call, fuel on.
struct JsonAbi {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<()>,
}

impl JsonAbi {
    fn new() -> JsonAbi {
        let bytes = wasm_file(
            "json_abi_tiers.wasm",
            "run cargo build --profile plugin --target wasm32-unknown-unknown -p json-abi-tiers",
        );
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(Default::default()));
        let engine = wasmtime::Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, bytes).unwrap();
        let pre = wasmtime::Linker::new(&engine).instantiate_pre(&module).unwrap();
        JsonAbi { engine, pre }
    }

    /// One call: the host writes the input JSON, the guest parses it, decides
    /// and writes JSON back, the host parses that.
    fn call(&self, viewers: &[drops_plugin_sdk::Viewer]) -> Grants {
        #[derive(serde::Serialize)]
        struct Viewer {
            handle: u32,
            minutes: u32,
            counted: bool,
        }
        let mut input = Vec::with_capacity(64 + CONFIG.len() + viewers.len() * 48);
        input.extend_from_slice(br#"{"rewards":["bronze","silver","gold"],"config":"#);
        input.extend_from_slice(CONFIG.as_bytes());
        input.extend_from_slice(br#","viewers":"#);
        let viewers = viewers.iter().map(|v| Viewer { handle: v.handle, minutes: v.minutes, counted: v.counted });
        serde_json::to_writer(&mut input, &viewers.collect::<Vec<_>>()).unwrap();
        input.push(b'}');
        let mut store = wasmtime::Store::new(&self.engine, ());
        store.set_fuel(u64::MAX / 2).unwrap();
        let instance = self.pre.instantiate(&mut store).unwrap();
        let memory = instance.get_memory(&mut store, "memory").unwrap();
        let alloc = instance.get_typed_func::<u32, u32>(&mut store, "alloc").unwrap();
        let decide = instance.get_typed_func::<(u32, u32), u64>(&mut store, "on_heartbeat").unwrap();
        let len = input.len() as u32;
        let ptr = alloc.call(&mut store, len).unwrap();
        memory.write(&mut store, ptr as usize, &input).unwrap();
        let out = decide.call(&mut store, (ptr, len)).unwrap();
        assert_ne!(out, 0, "the JSON-ABI guest refused its input");
        let (at, len) = ((out >> 32) as usize, (out & 0xffff_ffff) as usize);
        serde_json::from_slice(&memory.data(&store)[at..at + len]).unwrap()
    }
}

/// The tiers rule as a Rhai script, embedded the cheap way: viewers are a
/// registered Rust type read through getters, not maps built per viewer.
#[cfg(feature = "bench-peers")]
struct RhaiTiers {
    engine: rhai::Engine,
    ast: rhai::AST,
    tiers: rhai::Array,
}

#[cfg(feature = "bench-peers")]
impl RhaiTiers {
    const SCRIPT: &str = r#"
        fn on_heartbeat(tiers, viewers) {
            let grants = [];
            for v in viewers {
                if v.counted {
                    for t in tiers {
                        if v.minutes == t.minutes {
                            grants.push(v.handle);
                            grants.push(t.reward);
                        }
                    }
                }
            }
            grants
        }
    "#;

    fn new() -> RhaiTiers {
        let mut engine = rhai::Engine::new();
        engine
            .register_type_with_name::<drops_plugin_sdk::Viewer>("Viewer")
            .register_get("handle", |v: &mut drops_plugin_sdk::Viewer| v.handle as rhai::INT)
            .register_get("minutes", |v: &mut drops_plugin_sdk::Viewer| v.minutes as rhai::INT)
            .register_get("counted", |v: &mut drops_plugin_sdk::Viewer| v.counted);
        let ast = engine.compile(Self::SCRIPT).unwrap();
        let tiers = [(10, 0), (20, 1), (30, 2)]
            .into_iter()
            .map(|(minutes, reward): (rhai::INT, rhai::INT)| {
                let mut tier = rhai::Map::new();
                tier.insert("minutes".into(), minutes.into());
                tier.insert("reward".into(), reward.into());
                rhai::Dynamic::from_map(tier)
            })
            .collect();
        RhaiTiers { engine, ast, tiers }
    }

    fn call(&self, viewers: &[drops_plugin_sdk::Viewer]) -> Grants {
        let viewers: rhai::Array = viewers.iter().map(|v| rhai::Dynamic::from(*v)).collect();
        let mut scope = rhai::Scope::new();
        let flat: rhai::Array =
            self.engine.call_fn(&mut scope, &self.ast, "on_heartbeat", (self.tiers.clone(), viewers)).unwrap();
        let flat: Vec<u32> = flat.into_iter().map(|x| x.as_int().unwrap() as u32).collect();
        flat.chunks_exact(2).map(|g| (g[0], g[1])).collect()
    }
}

fn plugin_call(c: &mut Criterion) {
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let plugin = runtime.load("watch-time-tiers", &plugin_bytes()).unwrap();
    let campaign =
        WitCampaign { id: "c".into(), rewards: REWARDS.iter().map(|r| r.to_string()).collect(), config: CONFIG.into() };
    let native_campaign = drops_plugin_sdk::Campaign::new("c", &REWARDS, CONFIG);
    let native_config = drops_plugin_sdk::parse_config::<watch_time_tiers::WatchTimeTiers>(&native_campaign).unwrap();
    // The same rule written in TypeScript (plugins-ts/watch-time-tiers, AssemblyScript).
    let typescript = runtime
        .load("watch-time-tiers-ts", &wasm_file("watch_time_tiers_ts.wasm", "run scripts/build-plugins.sh"))
        .unwrap();
    let json_abi = JsonAbi::new();
    #[cfg(feature = "bench-peers")]
    let rhai = RhaiTiers::new();
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
        // The peers must decide what the rule decides, or their figures mean nothing.
        let expected: Grants = watch_time_tiers::WatchTimeTiers::on_heartbeat(
            &native_config,
            &native_campaign,
            &native_hb,
            &native_viewers,
        )
        .into_iter()
        .map(|g| (g.viewer, g.reward))
        .collect();
        let mut kv = Default::default();
        let from_typescript: Grants = runtime
            .on_heartbeat(&typescript, &campaign, &hb, &viewers, Arc::clone(&ids), &mut kv)
            .unwrap()
            .grants
            .into_iter()
            .map(|g| (g.viewer, g.reward))
            .collect();
        assert_eq!(from_typescript, expected, "TypeScript, {n} viewers");
        group.bench_with_input(BenchmarkId::new("wasm_typescript", n), &viewers, |b, viewers| {
            let mut kv = Default::default();
            b.iter(|| {
                runtime
                    .on_heartbeat(&typescript, &campaign, &hb, black_box(viewers), Arc::clone(&ids), &mut kv)
                    .unwrap()
            })
        });
        assert_eq!(json_abi.call(&native_viewers), expected, "JSON ABI, {n} viewers");
        group.bench_with_input(BenchmarkId::new("json_abi", n), &native_viewers, |b, viewers| {
            b.iter(|| json_abi.call(black_box(viewers)))
        });
        #[cfg(feature = "bench-peers")]
        {
            assert_eq!(rhai.call(&native_viewers), expected, "Rhai, {n} viewers");
            group.bench_with_input(BenchmarkId::new("rhai", n), &native_viewers, |b, viewers| {
                b.iter(|| rhai.call(black_box(viewers)))
            });
        }
    }
    group.finish();
}

/// One entitlement decided by `benefit-to-items` (a benefit mapped to two
/// items, the account's daily count and received items kept as campaign
/// state), as the host calls it, against the same rule compiled natively.
fn entitlement_call(c: &mut Criterion) {
    use drops_host::plugins::WitEntitlement;
    const ITEMS: &str = r#"{"benefits":{"b-sword":{"items":[{"id":"iron-sword"},{"id":"gold","quantity":100}]}},"daily_cap":1000000000}"#;
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let bytes = wasm_file("benefit_to_items.wasm", "run scripts/build-plugins.sh");
    let plugin = runtime.load("benefit-to-items", &bytes).unwrap();
    let campaign = WitCampaign { id: "c".into(), rewards: vec!["b-sword".into()], config: ITEMS.into() };
    let entitlement = WitEntitlement {
        id: "ent-1".into(),
        benefit_id: "b-sword".into(),
        campaign_id: "c".into(),
        category_id: "game".into(),
        user_id: "twitch-1".into(),
        user_login: "viewer".into(),
        created_at: 1_795_000_000,
        account: "acc-1".into(),
    };
    let native_campaign = drops_plugin_sdk::Campaign::new("c", &["b-sword"], ITEMS);
    let native_entitlement = drops_plugin_sdk::testing::entitlement("ent-1", "b-sword", "acc-1", 1_795_000_000);
    let decide = |campaign, entitlement| {
        drops_plugin_sdk::decide_entitlement::<benefit_to_items::BenefitToItems>(campaign, entitlement).unwrap()
    };
    let mut kv = Default::default();
    let wasm = runtime.on_entitlement(&plugin, &campaign, &entitlement, &mut kv).unwrap();
    assert!(matches!(&wasm, drops_host::plugins::WitEntitlementVerdict::Deliver(items) if items.len() == 2));
    assert!(matches!(
        decide(native_campaign.clone(), native_entitlement.clone()),
        drops_plugin_sdk::EntitlementVerdict::Deliver(items) if items.len() == 2
    ));
    let mut group = c.benchmark_group("entitlement_call");
    group.throughput(Throughput::Elements(1));
    group.bench_function("wasm", |b| {
        b.iter(|| runtime.on_entitlement(&plugin, &campaign, black_box(&entitlement), &mut kv).unwrap())
    });
    group.bench_function("native", |b| {
        b.iter(|| decide(native_campaign.clone(), black_box(native_entitlement.clone())))
    });
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
                evaluate(&mut state, &rules, &runtime, &events[i % events.len()], &Lookups::default(), &mut out);
                i += 1;
                out.viewer_minutes
            })
        });
    }
    group.finish();
}

/// A new plugin version's load (validate, componentize, compile with
/// cranelift, pre-instantiate): what a hot reload waits for, for the tiers
/// rule written in Rust and in TypeScript. No compile cache.
fn plugin_load(c: &mut Criterion) {
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let mut group = c.benchmark_group("plugin_load");
    group.sample_size(10);
    let builds = [
        ("rust", plugin_bytes()),
        ("typescript", wasm_file("watch_time_tiers_ts.wasm", "run scripts/build-plugins.sh")),
    ];
    for (language, bytes) in builds {
        group.bench_function(BenchmarkId::new(language, bytes.len()), |b| {
            b.iter(|| runtime.load("watch-time-tiers", black_box(&bytes)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, plugin_call, entitlement_call, engine_step, plugin_load);
criterion_main!(benches);
