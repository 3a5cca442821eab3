//! Loading and reloading rules directories with the example `watch-time-tiers`
//! plugin (built by `scripts/build-plugins.sh`, as the test command does).

use std::path::{Path, PathBuf};

use super::*;
use crate::plugins::PluginError;

fn tiers_wasm() -> Vec<u8> {
    crate::test_values::example_plugin("watch_time_tiers.wasm")
}

fn campaign(id: &str, game: &str, extra: &str) -> String {
    format!(
        "id = \"{id}\"\nname = \"n\"\ngame = \"{game}\"\nclient_id = \"client\"\ngame_id = \"g-1\"\n\
         starts_at = \"2026-11-20T00:00:00Z\"\nends_at = \"2026-11-27T00:00:00Z\"\n{extra}\n\
         [[rewards]]\nid = \"bronze\"\n[rule]\nplugin = \"tiers\"\n\
         config = {{ tiers = [ {{ minutes = 30, reward = \"bronze\" }} ] }}\n"
    )
}

fn rules_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    std::fs::create_dir_all(root.join("campaigns")).unwrap();
    std::fs::write(root.join("plugins/tiers.wasm"), tiers_wasm()).unwrap();
    (dir, root)
}

fn heartbeat(broadcaster: &str, game: &str, time: &str) -> Heartbeat {
    serde_json::from_value(serde_json::json!({"id": "h", "broadcaster": broadcaster, "game": game,
        "time": time, "viewer_list": ["v-1"]}))
    .unwrap()
}

#[test]
fn campaigns_match_by_game_window_and_allowlist() {
    let (_dir, root) = rules_dir();
    std::fs::write(root.join("campaigns/a.toml"), campaign("a", "Game", "allowlist = [\"b-1\"]")).unwrap();
    std::fs::write(root.join("campaigns/b.toml"), campaign("b", "game", "")).unwrap();
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let set = RuleSet::load(&root, &runtime);
    assert!(set.errors().is_empty(), "{:?}", set.errors());
    let ids = |hb: &Heartbeat| set.matching(hb).map(|c| c.def.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&heartbeat("b-1", "Game", "2026-11-21T00:00:00Z")), ["a"]);
    assert!(ids(&heartbeat("b-2", "Game", "2026-11-21T00:00:00Z")).is_empty(), "not allowlisted");
    assert!(ids(&heartbeat("b-1", "Game", "2026-11-28T00:00:00Z")).is_empty(), "after the window");
    assert_eq!(ids(&heartbeat("b-9", "game", "2026-11-21T00:00:00Z")), ["b"], "game names are case-sensitive");
}

#[test]
fn a_bad_file_is_named_and_the_rest_load() {
    let (_dir, root) = rules_dir();
    std::fs::write(root.join("campaigns/good.toml"), campaign("good", "G", "")).unwrap();
    std::fs::write(root.join("campaigns/z-dup.toml"), campaign("good", "G", "")).unwrap();
    std::fs::write(root.join("campaigns/window.toml"), campaign("w", "G", "").replace("2026-11-27", "2026-11-19"))
        .unwrap();
    std::fs::write(root.join("campaigns/plugin.toml"), campaign("p", "G", "").replace("\"tiers\"", "\"nope\""))
        .unwrap();
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let set = RuleSet::load(&root, &runtime);
    assert_eq!(set.campaigns().iter().map(|c| c.def.id.as_str()).collect::<Vec<_>>(), ["good"]);
    let error_of =
        |file: &str| set.errors().iter().find(|e| e.file.ends_with(file)).map(|e| e.error.clone()).unwrap_or_default();
    assert!(error_of("z-dup.toml").contains("field `id`"), "{}", error_of("z-dup.toml"));
    assert_eq!(error_of("window.toml"), "field `ends_at`: must be after `starts_at`");
    assert!(error_of("plugin.toml").contains("field `rule.plugin`"), "{}", error_of("plugin.toml"));

    // An edit the plugin's config check refuses keeps the campaign's last good revision.
    std::fs::write(root.join("campaigns/good.toml"), campaign("good", "G", "").replace("\"bronze\" }", "\"gold\" }"))
        .unwrap();
    let next = RuleSet::reload(&root, &runtime, &set);
    assert!(std::sync::Arc::ptr_eq(&set.campaigns()[0], &next.campaigns()[0]));
    let error = next.errors().iter().find(|e| e.file.ends_with("good.toml")).map(|e| e.error.clone());
    assert!(error.as_deref().unwrap_or_default().starts_with("field `rule.config`: plugin `tiers`"), "{error:?}");
}

#[test]
fn a_reload_keeps_the_last_good_version_of_a_broken_file() {
    let (_dir, root) = rules_dir();
    std::fs::write(root.join("campaigns/a.toml"), campaign("a", "G", "")).unwrap();
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let first = RuleSet::load(&root, &runtime);
    std::fs::write(root.join("plugins/tiers.wasm"), b"not wasm").unwrap();
    std::fs::write(root.join("campaigns/a.toml"), "id = ").unwrap();
    let second = RuleSet::reload(&root, &runtime, &first);
    assert_eq!(second.errors().len(), 2, "{:?}", second.errors());
    let (old, new) = (&first.campaigns()[0], &second.campaigns()[0]);
    assert!(std::sync::Arc::ptr_eq(old, new), "the campaign in force stays");
    assert_eq!(second.plugins()["tiers"].hash, first.plugins()["tiers"].hash);
    assert_eq!(second.fingerprint().len(), first.fingerprint().len() + 2);
}

#[test]
fn a_plugin_version_is_refused_with_a_typed_error() {
    let (_dir, root) = rules_dir();
    std::fs::write(root.join("campaigns/a.toml"), campaign("a", "G", "")).unwrap();
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let err = validate_plugin(&root, &runtime, "tiers", b"not wasm").unwrap_err();
    assert!(matches!(err, RulesError::Plugin(PluginError::NotWasm)) && err.is_refusal(), "{err:?}");
    std::fs::write(root.join("campaigns/a.toml"), campaign("a", "G", "").replace("\"bronze\" }", "\"gold\" }"))
        .unwrap();
    let err = validate_plugin(&root, &runtime, "tiers", &tiers_wasm()).unwrap_err();
    assert!(matches!(&err, RulesError::VersionRefused { campaign, .. } if campaign == "a"), "{err:?}");
    let io = RulesError::read(Path::new("x"), std::io::Error::other("disk"));
    assert!(!io.is_refusal());
}

#[test]
fn a_plugin_file_named_as_cargo_builds_it_is_pointed_out() {
    let (_dir, root) = rules_dir();
    std::fs::write(root.join("plugins/channel_minutes.wasm"), tiers_wasm()).unwrap();
    std::fs::write(root.join("campaigns/c.toml"), campaign("c", "G", "").replace("\"tiers\"", "\"channel-minutes\""))
        .unwrap();
    let runtime = PluginRuntime::new(Default::default()).unwrap();
    let set = RuleSet::load(&root, &runtime);
    let error = set.errors().iter().find(|e| e.file.ends_with("c.toml")).map(|e| e.error.clone()).unwrap_or_default();
    assert!(error.contains("rename it to channel-minutes.wasm"), "{error}");
}
