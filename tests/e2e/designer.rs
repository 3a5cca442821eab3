//! Tools for designers: a scaffolded plugin builds and checks; recorded
//! traffic replays through the rules to the grants the host made.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{heartbeat, tiers_campaign, Backend, HostConfig, TestHost};

/// The first JSON value in `out` (stdout, before the log lines on stderr).
fn first_json(out: &str) -> serde_json::Value {
    let from = out.find('{').expect("JSON in the output");
    serde_json::Deserializer::from_str(&out[from..]).into_iter().next().expect("a JSON value").expect("valid JSON")
}

fn drops_host(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_drops-host")).args(args).output().expect("run drops-host");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// A copy of the binary alone (no repository beside it) scaffolds a crate
/// that builds with its size profile and passes `plugin check`.
#[test]
fn a_scaffolded_plugin_builds_and_passes_plugin_check() {
    let dir = tempfile::tempdir().unwrap();
    let alone = dir.path().join("bin/drops-host");
    std::fs::create_dir_all(alone.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_drops-host"), &alone).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new(&alone).args(["plugin", "new", "my-rule"]).current_dir(&work).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let krate = work.join("my-rule");
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_str().unwrap().to_string();
    assert!(!manifest.contains(&repo), "no path into the build machine's tree:\n{manifest}");
    assert!(krate.join(".gitignore").exists() && krate.join("README.md").exists());
    // Share the workspace's target folder so dependencies compiled for wasm are reused.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--profile", "plugin", "--target", "wasm32-unknown-unknown"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(&krate)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stderr));
    let wasm = target.join("wasm32-unknown-unknown/plugin/my_rule.wasm");
    let size = std::fs::metadata(&wasm).unwrap().len();
    assert!(size < 150_000, "the size profile keeps it small: {size} bytes");
    let wasm = wasm.to_str().unwrap();
    let (ok, out) =
        drops_host(&["plugin", "check", wasm, "--config", r#"{"minutes": 30, "reward": "r"}"#, "--rewards", "r"]);
    assert!(ok && out.contains("implements drops:rules@0.4.0") && out.contains("config: ok"), "{out}");
    let (ok, out) =
        drops_host(&["plugin", "check", wasm, "--config", r#"{"minutes": 0, "reward": "r"}"#, "--rewards", "r"]);
    assert!(!ok && out.contains("config.minutes: must be at least 1"), "{out}");
    let (ok, out) = drops_host(&["plugin", "new", "other", "--dir", work.to_str().unwrap(), "--sdk", "/nonexistent"]);
    assert!(!ok && out.contains("--sdk /nonexistent"), "{out}");

    // `plugin watch --rules --once`: checked against the campaigns that use it, then installed; refused, not.
    let rules = work.join("rules");
    std::fs::create_dir_all(rules.join("campaigns")).unwrap();
    std::fs::create_dir_all(rules.join("plugins")).unwrap();
    let campaign = |minutes: u32| {
        format!(
            "id = \"c\"\nname = \"n\"\ngame = \"G\"\nclient_id = \"c\"\nstarts_at = \"2026-11-01T00:00:00Z\"\n\
             ends_at = \"2026-12-01T00:00:00Z\"\n[[rewards]]\nid = \"r\"\n[rule]\nplugin = \"my-rule\"\n\
             config = {{ minutes = {minutes}, reward = \"r\" }}\n"
        )
    };
    std::fs::write(rules.join("campaigns/c.toml"), campaign(0)).unwrap();
    let watch = |rules: &Path| {
        Command::new(&alone)
            .args(["plugin", "watch", krate.to_str().unwrap(), "--rules", rules.to_str().unwrap(), "--once"])
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap()
    };
    let out = watch(&rules);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && printed.contains("c.toml refuses it"), "{printed}");
    assert!(!rules.join("plugins/my-rule.wasm").exists(), "nothing installed");
    std::fs::write(rules.join("campaigns/c.toml"), campaign(30)).unwrap();
    let out = watch(&rules);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains("campaigns using it: c"), "{printed}");
    assert!(rules.join("plugins/my-rule.wasm").exists());

    // `cargo test`: the rule's native test, then its case through the wasm
    // build in the host's sandbox (`plugin test`, against its campaign.toml).
    let out = Command::new(env!("CARGO"))
        .args(["test", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env("DROPS_HOST", &alone)
        .current_dir(&krate)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("1 cases: 1 passed, 0 failed (Rust `my-rule`"), "{printed}");
}

/// The example rules, each in Rust and in TypeScript.
const EXAMPLES: [&str; 6] =
    ["watch-time-tiers", "boss-defeated", "streak", "official-channels-only", "active-play-only", "benefit-to-items"];

/// Every example rule has a TypeScript twin that decides what the Rust one
/// does: both pass the rule's cases (`plugin test`, one runner for both
/// languages, covering game state and entitlements), and the demo's
/// recording replays through either to the same grants (`replay --candidate`).
#[test]
fn the_typescript_examples_decide_what_the_rust_ones_do() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    for name in EXAMPLES {
        let cases = repo.join("plugins").join(name).join("tests/cases");
        let builds = [
            (repo.join("plugins").join(name), crate::helpers::plugin_path(name), "Rust"),
            (repo.join("plugins-ts").join(name), crate::helpers::plugin_path(&format!("{name}-ts")), "TypeScript"),
        ];
        for (dir, wasm, language) in builds {
            let (ok, out) = drops_host(&[
                "plugin",
                "test",
                dir.to_str().unwrap(),
                "--plugin",
                wasm.to_str().unwrap(),
                "--cases",
                cases.to_str().unwrap(),
            ]);
            assert!(ok && out.contains(" passed, 0 failed (") && out.contains(language), "{name} ({language}):\n{out}");
        }
    }

    // The demo (which serves one campaign with a TypeScript rule), sped up; then its recording.
    let data = tempfile::tempdir().unwrap();
    let plugins = crate::helpers::plugin_path("watch-time-tiers").parent().unwrap().to_path_buf();
    let (ok, out) = drops_host(&[
        "demo",
        "--minutes",
        "35",
        "--speed",
        "600",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--campaigns",
        repo.join("examples/rules/campaigns").to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let rules = data.path().join("rules");
    let campaign = std::fs::read_to_string(rules.join("campaigns/summer-boss-rush.toml")).unwrap();
    assert!(campaign.contains("plugin = \"watch-time-tiers-ts\""), "the demo serves a TypeScript rule");
    let (rules, events) = (rules.to_str().unwrap().to_string(), data.path().join("events.jsonl"));
    // Each Rust rule replaced by its TypeScript twin, and the demo's TypeScript rule by its Rust twin.
    let mut swaps: Vec<(String, std::path::PathBuf)> =
        EXAMPLES.iter().map(|n| (n.to_string(), crate::helpers::plugin_path(&format!("{n}-ts")))).collect();
    swaps.push(("watch-time-tiers-ts".into(), crate::helpers::plugin_path("watch-time-tiers")));
    for (name, wasm) in swaps {
        let candidate = format!("{name}={}", wasm.display());
        let args = ["replay", "--rules", &rules, "--events", events.to_str().unwrap(), "--candidate", &candidate];
        let (ok, out) = drops_host(&args);
        let summary = out.lines().find(|l| l.starts_with("candidate: ")).unwrap_or_default().to_string();
        assert!(ok && summary.starts_with("candidate: 0 grants gained, 0 lost, "), "{name}:\n{out}");
        assert!(summary.contains("(0 plugin errors, against 0)"), "{name}: {summary}");
        let unchanged: u64 =
            summary.split(" lost, ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
        assert!(unchanged > 100, "the recording earns grants: {summary}");
    }
}

/// `plugin new --lang ts` writes a TypeScript package that a designer builds
/// with npm alone (the host embeds the rules world in the module), tests
/// with `npm test`, checks, and watches into a rules folder; a compile error
/// is printed and nothing installed.
#[test]
fn a_typescript_plugin_scaffolds_builds_tests_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let alone = bin.join("drops-host");
    std::fs::copy(env!("CARGO_BIN_EXE_drops-host"), &alone).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out =
        Command::new(&alone).args(["plugin", "new", "my-ts-rule", "--lang", "ts"]).current_dir(&work).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let package = work.join("my-ts-rule");
    for file in ["package.json", "asconfig.json", "assembly/rule.ts", "sdk/assembly/abi.ts", "sdk/transform.mjs"] {
        assert!(package.join(file).exists(), "{file}");
    }
    for file in ["campaign.toml", "tests/cases/reaches-the-goal.json", ".gitignore", "README.md"] {
        assert!(package.join(file).exists(), "{file}");
    }
    let manifest = std::fs::read_to_string(package.join("package.json")).unwrap();
    assert!(manifest.contains("\"assemblyscript\": \"0.28.20\"") && manifest.contains("file:sdk"), "{manifest}");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let npm = |args: &[&str]| {
        let out = Command::new("npm").args(args).current_dir(&package).env("PATH", &path).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = npm(&["install", "--no-audit", "--no-fund"]);
    assert!(ok, "{out}");
    let (ok, out) = npm(&["test"]);
    assert!(ok && out.contains("1 cases: 1 passed, 0 failed (TypeScript `my-ts-rule`"), "{out}");
    let wasm = package.join("build/my-ts-rule.wasm");
    let size = std::fs::metadata(&wasm).unwrap().len();
    assert!(size < 40_000, "an AssemblyScript rule is small: {size} bytes");
    let wasm = wasm.to_str().unwrap();
    let (ok, out) =
        drops_host(&["plugin", "check", wasm, "--config", r#"{"minutes": 30, "reward": "r"}"#, "--rewards", "r"]);
    assert!(ok && out.contains("implements drops:rules@0.4.0") && out.contains("config: ok"), "{out}");
    let (ok, out) =
        drops_host(&["plugin", "check", wasm, "--config", r#"{"minutes": "x", "reward": "r"}"#, "--rewards", "r"]);
    assert!(!ok && out.contains("config.minutes: expected a whole number"), "{out}");
    let (ok, out) = drops_host(&[
        "plugin",
        "check",
        wasm,
        "--config",
        r#"{"minutes": 3, "reward": "r", "extra": 1}"#,
        "--rewards",
        "r",
    ]);
    assert!(!ok && out.contains("config.extra: unknown field"), "{out}");

    let rules = work.join("rules");
    std::fs::create_dir_all(rules.join("campaigns")).unwrap();
    let watch = || {
        Command::new(&alone)
            .args(["plugin", "watch", package.to_str().unwrap(), "--rules", rules.to_str().unwrap(), "--once"])
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let out = watch();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && printed.contains("built `my-ts-rule`"), "{printed}");
    let installed = std::fs::read(rules.join("plugins/my-ts-rule.wasm")).unwrap();
    // A compile error: printed with the file it is in; the installed build stays.
    let rule = package.join("assembly/rule.ts");
    let text = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(&rule, text.replace("grants.once(v, reward);", "grants.once(v, reward, 7);")).unwrap();
    let out = watch();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && printed.contains("the build failed") && printed.contains("rule.ts"), "{printed}");
    assert_eq!(std::fs::read(rules.join("plugins/my-ts-rule.wasm")).unwrap(), installed);
}

#[tokio::test]
async fn recorded_traffic_replays_to_the_same_grants() {
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let campaign = tiers_campaign("camp-replay", "GameName", window, &[], &[(2, "bronze"), (3, "silver")]);
    let config = HostConfig { campaigns: vec![("c".into(), campaign)], record_events: true, ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    for m in 0..4 {
        let hb = heartbeat(&format!("r{m}"), "b", "GameName", &format!("2026-11-07T10:0{m}:00Z"), &["v1", "v2", "v3"]);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200, "a redelivery is not recorded twice");
    }
    let started = Instant::now();
    while host.grants().await.len() < 6 {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.stop();
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    for g in host.grants_from_database().await {
        *live.entry(g).or_default() += 1;
    }
    let rules = host.dir.path().join("rules");
    let events = host.dir.path().join("events.jsonl");
    let (ok, out) = drops_host(&["replay", "--rules", rules.to_str().unwrap(), "--events", events.to_str().unwrap()]);
    assert!(ok, "{out}");
    for (reward, n) in &live {
        assert!(
            out.lines().any(|l| l.starts_with("camp-replay")
                && l.contains(reward.as_str())
                && l.trim_end().ends_with(&n.to_string())),
            "{reward} x{n} in:\n{out}"
        );
    }
    assert!(out.contains("4 events (0 duplicates), 12 viewer-minutes counted, 6 grants, 0 plugin errors"), "{out}");
}

#[tokio::test]
async fn replay_with_the_hosts_config_decides_as_the_host_did() {
    // A CPU budget that a 3-viewer heartbeat fits in and a 1,000-viewer one does not.
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let campaign = tiers_campaign("camp-fuel", "GameName", window, &[], &[(1, "bronze")]);
    let config = HostConfig {
        campaigns: vec![("c".into(), campaign)],
        record_events: true,
        extra_toml: "[plugins]\nmax_call_fuel = 50000\nmax_call_fuel_per_viewer = 0\n".into(),
        ..Default::default()
    };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let crowd: Vec<String> = (0..1000).map(|i| format!("crowd-{i}")).collect();
    let crowd: Vec<&str> = crowd.iter().map(String::as_str).collect();
    let big = heartbeat("big", "b-big", "GameName", "2026-11-07T10:00:00Z", &crowd);
    let small = heartbeat("small", "b-small", "GameName", "2026-11-07T10:00:00Z", &["v1", "v2", "v3"]);
    assert_eq!(host.post_vhs(None, &big).await.0, 200);
    assert_eq!(host.post_vhs(None, &small).await.0, 200);
    let started = Instant::now();
    // The inbox is evaluated in order: once the small channel's grants exist, the big one was judged.
    while host.grants().await.len() < 3 {
        assert!(started.elapsed() < Duration::from_secs(20), "{}", host.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    host.stop();
    assert_eq!(host.grants_from_database().await.len(), 3, "the big channel's call ran out of fuel");

    let rules = host.dir.path().join("rules");
    let events = host.dir.path().join("events.jsonl");
    let config = host.dir.path().join("drops-host.toml");
    let (rules, events, config) = (rules.to_str().unwrap(), events.to_str().unwrap(), config.to_str().unwrap());
    let (ok, out) = drops_host(&["replay", "--rules", rules, "--events", events, "--config", config]);
    assert!(ok, "{out}");
    assert!(out.contains("2 events (0 duplicates), 3 viewer-minutes counted, 3 grants, 1 plugin errors"), "{out}");
    assert!(!out.contains("judged under"), "same runtime and limits: nothing to note\n{out}");
    // With the default budget the same recording decides otherwise: the configured limit is what agrees,
    // and the replay says that it runs under other limits than the recording.
    let (ok, out) = drops_host(&["replay", "--rules", rules, "--events", events]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2 events (0 duplicates), 1003 viewer-minutes counted, 1003 grants, 0 plugin errors"),
        "{out}"
    );
    assert!(out.contains("were judged under wasmtime") && out.contains("fuel 50000+0/viewer"), "{out}");
}

/// `replay` against the live host (`--diff-against` its URL, then an export
/// with a planted difference), per grant (`--json`, `--grants-out`), with a
/// stricter candidate campaign (who loses what), and refusing rules that do
/// not load.
#[tokio::test]
async fn replay_compares_with_the_live_host_and_with_a_candidate() {
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let campaign = tiers_campaign("camp-replay", "GameName", window, &[], &[(2, "bronze"), (3, "silver")]);
    let config = HostConfig { campaigns: vec![("c".into(), campaign)], record_events: true, ..Default::default() };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    for m in 0..4 {
        let hb = heartbeat(&format!("d{m}"), "b", "GameName", &format!("2026-11-07T10:0{m}:00Z"), &["v1", "v2", "v3"]);
        assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    }
    let started = Instant::now();
    while host.grants().await.len() < 6 {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let path = |p: &str| host.dir.path().join(p).to_str().unwrap().to_string();
    let (rules, events) = (path("rules"), path("events.jsonl"));
    let base = host.base.clone();
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || drops_host(&args.iter().map(String::as_str).collect::<Vec<_>>()))
            .await
            .unwrap()
    };
    let replay = |extra: &[&str]| {
        let mut args: Vec<String> =
            vec!["replay".into(), "--rules".into(), rules.clone(), "--events".into(), events.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };

    // The live host made exactly what the replay makes.
    let (ok, out) = run(replay(&["--diff-against", &base, "--admin-token", crate::helpers::ADMIN_TOKEN])).await;
    assert!(ok, "{out}");
    assert!(out.contains("diff: 0 only in the replay, 0 only on the live host, 6 in both"), "{out}");

    // An export with one grant taken out and one planted: exactly those two, and exit 1.
    let mut exported = host.admin_get("/grants?limit=100000").await.as_array().cloned().unwrap();
    let taken = exported.iter().position(|g| g["user_id"] == "v1" && g["reward_id"] == "silver").unwrap();
    exported.remove(taken);
    exported
        .push(serde_json::json!({"campaign_id": "camp-replay", "reward_id": "gold", "user_id": "v9", "grant_key": ""}));
    let export = host.dir.path().join("export.json");
    std::fs::write(&export, serde_json::to_vec(&exported).unwrap()).unwrap();
    let (ok, out) = run(replay(&["--diff-against", export.to_str().unwrap()])).await;
    assert!(!ok, "differences exit non-zero\n{out}");
    let diff: Vec<&str> = out.lines().filter(|l| l.starts_with("+ ") || l.starts_with("- ")).collect();
    assert_eq!(diff.len(), 2, "{out}");
    assert!(diff[0].starts_with("+ camp-replay silver v1 "), "{out}");
    assert!(diff[1].starts_with("- camp-replay gold v9 "), "{out}");
    assert!(out.contains("diff: 1 only in the replay, 1 only on the live host, 5 in both"), "{out}");

    // Per grant, on stdout and in a file.
    let grants_out = path("replayed.jsonl");
    let (ok, out) = run(replay(&["--json", "--grants-out", &grants_out])).await;
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('{')).collect();
    let printed: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(printed.len(), 6, "{out}");
    assert!(printed.iter().any(|g| g["user_id"] == "v3" && g["reward_id"] == "silver"), "{out}");
    assert_eq!(std::fs::read_to_string(&grants_out).unwrap(), lines.join("\n") + "\n");

    // A stricter candidate campaign: silver at 5 minutes, so every viewer loses it.
    let stricter = tiers_campaign("camp-replay", "GameName", window, &[], &[(2, "bronze"), (5, "silver")]);
    let candidate = host.dir.path().join("stricter.toml");
    std::fs::write(&candidate, stricter).unwrap();
    let (ok, out) = run(replay(&["--candidate", &format!("c={}", candidate.display())])).await;
    assert!(ok, "{out}");
    let lost: Vec<&str> = out.lines().filter(|l| l.starts_with("- ")).collect();
    assert_eq!(lost.len(), 3, "{out}");
    for viewer in ["v1", "v2", "v3"] {
        assert!(lost.iter().any(|l| l.starts_with(&format!("- camp-replay silver {viewer} "))), "{out}");
    }
    assert!(out.contains("candidate: 0 grants gained, 3 lost, 3 unchanged"), "{out}");
    // The same plugin as a candidate changes nothing; a candidate for nothing is refused.
    let same = crate::helpers::plugin_path("watch-time-tiers");
    let (ok, out) = run(replay(&["--candidate", &format!("watch-time-tiers={}", same.display())])).await;
    assert!(ok && out.contains("candidate: 0 grants gained, 0 lost, 6 unchanged"), "{out}");
    assert!(out.contains("note: the candidate") && out.contains("compares it with itself"), "{out}");
    let (ok, out) = run(replay(&["--candidate", &format!("nope={}", same.display())])).await;
    assert!(!ok && out.contains("does not exist"), "{out}");

    // Rules that do not load, or no rules at all: a non-zero exit naming why.
    let (ok, out) = run(vec!["replay".into(), "--rules".into(), path("typo"), "--events".into(), events.clone()]).await;
    assert!(!ok && out.contains("not a directory"), "{out}");
    std::fs::write(host.dir.path().join("rules/campaigns/broken.toml"), "id = ").unwrap();
    let (ok, out) = run(replay(&[])).await;
    assert!(!ok && out.contains("broken.toml") && out.contains("failed to load"), "{out}");
}

/// `plugin check --campaign` checks the exact campaign file, and a config
/// error names the file and the line of the key; `--config` without
/// `--rewards` says the rewards are missing.
#[test]
fn plugin_check_names_the_campaign_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = crate::helpers::plugin_path("watch-time-tiers");
    let wasm = wasm.to_str().unwrap();
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let good = tiers_campaign("camp-check", "GameName", window, &[], &[(10, "bronze")]);
    let file = dir.path().join("check.toml");
    std::fs::write(&file, &good).unwrap();
    let (ok, out) = drops_host(&["plugin", "check", wasm, "--campaign", file.to_str().unwrap()]);
    assert!(ok && out.contains("config: ok"), "{out}");

    // The same file with a tier of 0 minutes on its own line, and with a misspelt key.
    let bad = "id = \"camp-check\"\nname = \"n\"\ngame = \"GameName\"\nclient_id = \"c\"\n\
               starts_at = \"2026-11-07T00:00:00Z\"\nends_at = \"2026-11-08T00:00:00Z\"\n\
               [[rewards]]\nid = \"bronze\"\n[rule]\nplugin = \"watch-time-tiers\"\n\
               [[rule.config.tiers]]\nreward = \"bronze\"\nminutes = 0\n";
    std::fs::write(&file, bad).unwrap();
    let (ok, out) = drops_host(&["plugin", "check", wasm, "--campaign", file.to_str().unwrap()]);
    let want = format!("{}:13: rule.config:", file.display());
    assert!(!ok && out.contains(&want) && out.contains("minutes"), "{want} in:\n{out}");
    assert!(!out.contains("rejected the input") && !out.contains("column"), "{out}");
    std::fs::write(&file, bad.replace("minutes = 0", "minutez = 10")).unwrap();
    let (ok, out) = drops_host(&["plugin", "check", wasm, "--campaign", file.to_str().unwrap()]);
    let want = format!("{}:13: rule.config: unknown field `minutez`", file.display());
    assert!(!ok && out.contains(&want), "{want} in:\n{out}");
    // A file that is not a campaign: named, with TOML's own line.
    std::fs::write(&file, "id = ").unwrap();
    let (ok, out) = drops_host(&["plugin", "check", wasm, "--campaign", file.to_str().unwrap()]);
    assert!(!ok && out.contains(&file.display().to_string()) && out.contains("line 1"), "{out}");

    // --config naming a reward without --rewards: the answer says what is missing.
    let config = r#"{"tiers": [{"minutes": 10, "reward": "bronze"}]}"#;
    let (ok, out) = drops_host(&["plugin", "check", wasm, "--config", config]);
    assert!(!ok && out.contains("no rewards were given") && out.contains("--rewards"), "{out}");
}

/// `plugin run` prints the grants of a known event exactly (text and JSON),
/// an entitlement's items, the plugin's log lines (bounded) and its fuel.
#[test]
fn plugin_run_prints_one_events_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let window = ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
    let campaign = dir.path().join("tiers.toml");
    std::fs::write(&campaign, tiers_campaign("camp-run", "GameName", window, &[], &[(10, "bronze"), (20, "silver")]))
        .unwrap();
    let event = dir.path().join("hb.json");
    let hb = heartbeat("h-1", "b-1", "GameName", "2026-11-23T10:00:00Z", &["v1", "v2", "v3"]);
    std::fs::write(&event, hb.to_string()).unwrap();
    let tiers = crate::helpers::plugin_path("watch-time-tiers");
    let (tiers, campaign_arg, event_arg) =
        (tiers.to_str().unwrap(), campaign.to_str().unwrap(), event.to_str().unwrap());
    let run = ["plugin", "run", tiers, "--campaign", campaign_arg, "--event", event_arg, "--minutes", "v1=9,v2=19"];
    let (ok, out) = drops_host(&run);
    assert!(ok, "{out}");
    assert!(out.contains("verdict: minutes count\ngrants: 2\n  v1 bronze\n  v2 silver\nfuel: "), "{out}");
    let (ok, out) = drops_host(&[&run[..], &["--json"]].concat());
    assert!(ok, "{out}");
    let report: serde_json::Value = first_json(&out);
    assert_eq!(
        report["grants"],
        serde_json::json!([{"viewer": "v1", "reward": "bronze"}, {"viewer": "v2", "reward": "silver"}])
    );
    assert!(report["fuel_used"].as_u64().unwrap() > 0 && report["fuel_used"].as_u64() < report["fuel_budget"].as_u64());

    // An entitlement through benefit-to-items.
    let drops = dir.path().join("drops.toml");
    std::fs::write(
        &drops,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules/campaigns/launch-drops.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let entitlement = dir.path().join("ent.json");
    std::fs::write(
        &entitlement,
        r#"{"entitlement": {"entitlement_id": "e-1", "campaign_id": "d1e2f3a4-launch-drops",
        "user_id": "u-1", "benefit_id": "benefit-sword", "created_at": "2026-11-23T10:00:00Z"}, "account": "acc-1"}"#,
    )
    .unwrap();
    let items = crate::helpers::plugin_path("benefit-to-items");
    let (ok, out) = drops_host(&[
        "plugin",
        "run",
        items.to_str().unwrap(),
        "--campaign",
        drops.to_str().unwrap(),
        "--event",
        entitlement.to_str().unwrap(),
    ]);
    assert!(ok && out.contains("deliver: iron-sword x1, gold x100"), "{out}");

    // A plugin that floods its log: 32 lines shown, each cut to 2 KiB.
    let flood = dir.path().join("flood.toml");
    let text: Vec<String> = std::fs::read_to_string(&campaign)
        .unwrap()
        .lines()
        .map(|l| match l {
            l if l.starts_with("plugin =") => "plugin = \"hostile\"".to_string(),
            l if l.starts_with("config =") => "config = { mode = \"log-flood\" }".to_string(),
            l => l.to_string(),
        })
        .collect();
    std::fs::write(&flood, text.join("\n")).unwrap();
    let hostile = crate::helpers::plugin_path("hostile");
    let (_, out) = drops_host(&[
        "plugin",
        "run",
        hostile.to_str().unwrap(),
        "--campaign",
        flood.to_str().unwrap(),
        "--event",
        event_arg,
        "--json",
    ]);
    let report: serde_json::Value = first_json(&out);
    let logs = report["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 32, "{report}");
    assert!(logs.iter().all(|l| l.as_str().unwrap().len() <= 2048 + 10));

    // Not an event: said plainly.
    std::fs::write(&event, "{\"hello\": 1}").unwrap();
    let (ok, out) = drops_host(&run);
    assert!(!ok && out.contains("not a heartbeat"), "{out}");
}

/// `plugin watch --host`: a scaffolded crate is built and installed on a
/// running host, then rebuilt and installed again when its source changes;
/// the host serves each version to the campaign that uses it.
#[tokio::test]
async fn plugin_watch_installs_a_changed_plugin_on_a_running_host() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out) = drops_host(&["plugin", "new", "watched-rule", "--dir", dir.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    let krate = dir.path().join("watched-rule");
    let campaign = "id = \"camp-watch\"\nname = \"w\"\ngame = \"GameName\"\nclient_id = \"c\"\n\
                    starts_at = \"2026-11-01T00:00:00Z\"\nends_at = \"2026-12-01T00:00:00Z\"\n[[rewards]]\nid = \"r\"\n\
                    [rule]\nplugin = \"watched-rule\"\nconfig = { minutes = 2, reward = \"r\" }\n";
    let config = HostConfig { campaigns: vec![("watch".into(), campaign.into())], ..Default::default() };
    let Some(host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let log = dir.path().join("watch.log");
    let mut watcher = Command::new(env!("CARGO_BIN_EXE_drops-host"))
        .args(["plugin", "watch", krate.to_str().unwrap(), "--host", &host.base])
        .args(["--admin-token", crate::helpers::ADMIN_TOKEN])
        .env("CARGO_TARGET_DIR", &target)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let served = |want_other_than: Option<String>| {
        let host = &host;
        async move {
            let started = Instant::now();
            loop {
                let campaigns = host.admin_get("/plugins").await;
                let hash = campaigns.as_array().unwrap().iter().find(|p| p["name"] == "watched-rule").and_then(|p| {
                    (p["campaigns"] == serde_json::json!(["camp-watch"]))
                        .then(|| p["hash"].as_str().unwrap().to_string())
                });
                if let Some(hash) = hash.filter(|h| Some(h) != want_other_than.as_ref()) {
                    return hash;
                }
                assert!(started.elapsed() < Duration::from_secs(300), "not served yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let first = served(None).await;
    let lib = krate.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, source.replace("v.minutes >= config.minutes", "v.minutes > config.minutes")).unwrap();
    let second = served(Some(first.clone())).await;
    assert_ne!(first, second);
    // The host serves the new version before the watcher has read the
    // answer and printed its line, so wait for the line rather than the hash.
    let started = Instant::now();
    let printed = loop {
        let printed = std::fs::read_to_string(&log).unwrap();
        if printed.matches("installed on").count() >= 2 || started.elapsed() > Duration::from_secs(60) {
            break printed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(printed.matches("installed on").count(), 2, "{printed}");
    assert!(printed.contains(&format!("sha256 {}", &second[..12])), "{printed}");

    // A rollback on the host, then a save that leaves the build as it was:
    // the watcher compares with what the host serves, not with its last
    // build, and installs the build again.
    let rollback = serde_json::to_vec(&serde_json::json!({"hash": first})).unwrap();
    let (status, answer) = host.admin_send(reqwest::Method::POST, "/plugins/watched-rule/rollback", rollback).await;
    assert_eq!(status, 200, "{answer}");
    let edited = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{edited}\n// saved again\n")).unwrap();
    let third = served(Some(first.clone())).await;
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(third, second, "the watcher's build serves again");
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(!printed.contains("nothing to install"), "{printed}");
}

/// `campaign reset` empties a development campaign, only when the config
/// allows it and no host serves the database.
#[tokio::test]
async fn a_development_campaign_is_reset_only_when_allowed_and_stopped() {
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let campaign = tiers_campaign("camp-dev", "GameName", window, &[], &[(1, "bronze")]);
    let config = HostConfig { campaigns: vec![("dev".into(), campaign)], ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let hb = heartbeat("dev-1", "b", "GameName", "2026-11-07T10:00:00Z", &["v1", "v2"]);
    assert_eq!(host.post_vhs(None, &hb).await.0, 200);
    assert_eq!(host.wait_for_grants(2).await.len(), 2);
    let config = host.dir.path().join("drops-host.toml");
    let reset = |allow: bool| {
        let out = Command::new(env!("CARGO_BIN_EXE_drops-host"))
            .args(["campaign", "reset", "camp-dev", "--config", config.to_str().unwrap()])
            .env("DROPS_HOST_ADMIN__ALLOW_CAMPAIGN_RESET", allow.to_string())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = reset(false);
    assert!(!ok && out.contains("admin.allow_campaign_reset"), "{out}");
    let (ok, out) = reset(true);
    assert!(!ok && out.contains("a host is serving this database"), "{out}");
    host.stop();
    let (ok, out) = reset(true);
    assert!(ok && out.contains("campaign camp-dev reset"), "{out}");
    assert!(host.grants_from_database().await.is_empty());
}

/// `replay --as-recorded` judges each event by the campaign revision that
/// was in force for it: a campaign changed between two events replays to
/// the live grants, where the current folder's revision does not.
#[tokio::test]
async fn a_replay_as_recorded_follows_the_revisions_in_force() {
    let window = ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z");
    let bronze = tiers_campaign("camp-rec", "GameName", window, &[], &[(1, "bronze")]);
    let silver = tiers_campaign("camp-rec", "GameName", window, &[], &[(1, "silver")]);
    let config = HostConfig { campaigns: vec![("rec".into(), bronze)], record_events: true, ..Default::default() };
    let Some(mut host) = TestHost::spawn(Backend::Sqlite, config).await else { return };
    let hb = |id: &str, viewer: &str| heartbeat(id, "b", "GameName", "2026-11-07T10:00:00Z", &[viewer]);
    assert_eq!(host.post_vhs(None, &hb("rec-1", "v1")).await.0, 200);
    assert_eq!(host.wait_for_grants(1).await.len(), 1);
    async fn revision(host: &TestHost) -> String {
        host.admin_get("/campaigns").await["campaigns"][0]["revision"].as_str().unwrap_or_default().to_string()
    }
    let before = revision(&host).await;
    std::fs::write(host.dir.path().join("rules/campaigns/rec.toml"), silver).unwrap();
    let started = Instant::now();
    while revision(&host).await == before {
        assert!(started.elapsed() < Duration::from_secs(20), "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(host.post_vhs(None, &hb("rec-2", "v2")).await.0, 200);
    assert_eq!(host.wait_for_grants(2).await.len(), 2);
    let exported = host.dir.path().join("live.json");
    std::fs::write(&exported, host.admin_get("/grants").await.to_string()).unwrap();
    host.stop();
    let path = |p: &str| host.dir.path().join(p).to_str().unwrap().to_string();
    let (rules, events, config, live) =
        (path("rules"), path("events.jsonl"), path("drops-host.toml"), path("live.json"));
    let replay = ["replay", "--rules", &rules, "--events", &events, "--config", &config, "--diff-against", &live];
    let (ok, out) = drops_host(&replay);
    assert!(!ok && out.contains("+ camp-rec silver v1") && out.contains("- camp-rec bronze v1"), "{out}");
    let (ok, out) = drops_host(&[&replay[..], &["--as-recorded"]].concat());
    assert!(ok && out.contains("diff: 0 only in the replay, 0 only on the live host, 2 in both"), "{out}");
    assert_eq!(out.matches("as recorded: camp-rec").count(), 2, "{out}");
}
