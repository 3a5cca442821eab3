//! `drops-host plugin new NAME`: a plugin crate that builds, with a rule and
//! its tests, and the SDK it needs written beside it from this binary (so a
//! binary shipped on its own scaffolds crates that build), at the version
//! this host speaks.

use std::path::{Path, PathBuf};

use anyhow::Context;

#[cfg(test)]
mod ts_glue;
pub mod typescript;

/// The campaign a new plugin's test cases run against (`plugin test`).
const TEST_CAMPAIGN: &str = r#"# The campaign NAME's test cases (tests/cases/*.json) run against.
id = "NAME-test-campaign"
name = "A campaign for NAME's test cases"
game = "GameName"
client_id = "test-client-id"
starts_at = "2025-01-01T00:00:00Z"
ends_at = "2035-01-01T00:00:00Z"

[[rewards]]
id = "reward-id"
name = "The reward"

[rule]
plugin = "NAME"
config = { minutes = 30, reward = "reward-id" }
"#;

/// A new plugin's first test case: a heartbeat in which one viewer reaches the goal.
const TEST_CASE: &str = r#"{
  "description": "v1 reaches 30 minutes in this heartbeat and earns the reward; v2 is not there yet",
  "campaign": "../../campaign.toml",
  "minutes": { "v1": 29, "v2": 10 },
  "event": {
    "id": "heartbeat-1", "version": 1, "time": "2026-12-01T10:00:00Z", "retries": 0,
    "broadcaster": "b1", "broadcast_id": 1, "game": "GameName", "viewers": 5,
    "viewer_list": ["v1", "v2"]
  },
  "expect": {
    "count_minutes": true,
    "grants": [{ "viewer": "v1", "reward": "reward-id" }]
  }
}
"#;

/// Creates `dir/name` with its source folder `first`, and the SDK it builds
/// with: `sdk` when given (returned, canonical), else `files` written into
/// `dir/name/sdk` from this binary (None returned).
fn create_package(
    dir: &Path,
    name: &str,
    first: &str,
    files: &[(&str, &str)],
    sdk: Option<PathBuf>,
) -> anyhow::Result<(PathBuf, Option<PathBuf>)> {
    let root = dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(root.join(first)).with_context(|| format!("creating {}", root.display()))?;
    if let Some(sdk) = sdk {
        return Ok((root, Some(std::fs::canonicalize(&sdk).unwrap_or(sdk))));
    }
    for (file, text) in files {
        let path = root.join("sdk").join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok((root, None))
}

/// Plugin names become file and package names.
fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "plugin names are lowercase letters, digits and dashes (they become file names): `{name}`"
    );
    Ok(())
}

/// The SDK's sources, as this binary was built with them.
const SDK_FILES: [(&str, &str); 8] = [
    ("src/lib.rs", include_str!("../../../plugin-sdk/src/lib.rs")),
    ("src/arena.rs", include_str!("../../../plugin-sdk/src/arena.rs")),
    ("src/state.rs", include_str!("../../../plugin-sdk/src/state.rs")),
    ("src/sys.rs", include_str!("../../../plugin-sdk/src/sys.rs")),
    ("src/testing.rs", include_str!("../../../plugin-sdk/src/testing.rs")),
    ("src/tiers.rs", include_str!("../../../plugin-sdk/src/tiers.rs")),
    ("wit/rules.wit", include_str!("../../../plugin-sdk/wit/rules.wit")),
    ("README.md", "The drops-host plugin SDK, written by `drops-host plugin new` from the host binary: the interface version that host speaks.\n"),
];

/// The SDK's manifest, standalone (the repository's inherits from its workspace).
const SDK_CARGO_TOML: &str = r#"[package]
name = "drops-plugin-sdk"
version = "0.1.0"
description = "Write drops-host reward rules as plain Rust functions"
edition = "2021"
license = "Apache-2.0"
publish = false

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
wit-bindgen = { version = "0.63.0", default-features = false, features = ["macros", "realloc", "std"] }
"#;

/// The versions the host's own plugins are built and tested with: Cargo
/// keeps the entries the new crate uses and drops the rest.
const LOCKFILE: &str = include_str!("../../../Cargo.lock");

/// Whether an enclosing Cargo workspace lists `dir` among its members (an
/// exact path or a `folder/*` glob), so it owns the new crate. A workspace
/// that does not list it would refuse to build it: the crate then gets a
/// workspace of its own.
fn inside_workspace(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir.parent().unwrap_or(dir))
        .map(|parent| parent.join(dir.file_name().unwrap_or_default()))
        .unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors().skip(1).any(|root| {
        let Ok(text) = std::fs::read_to_string(root.join("Cargo.toml")) else { return false };
        let Ok(manifest) = text.parse::<toml::Table>() else { return false };
        let Some(members) = manifest.get("workspace").and_then(|w| w.get("members")).and_then(|m| m.as_array()) else {
            return false;
        };
        let Ok(relative) = dir.strip_prefix(root) else { return false };
        members.iter().filter_map(|m| m.as_str()).any(|member| match member.strip_suffix("/*") {
            Some(folder) => relative.parent() == Some(Path::new(folder)),
            None => relative == Path::new(member),
        })
    })
}

/// Checks that `--sdk` points at the plugin SDK.
fn check_sdk(sdk: &Path) -> anyhow::Result<()> {
    let manifest = sdk.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("--sdk {}: no Cargo.toml there ({})", sdk.display(), manifest.display()))?;
    anyhow::ensure!(
        text.lines().any(|l| l.trim() == "name = \"drops-plugin-sdk\""),
        "--sdk {}: its Cargo.toml is not drops-plugin-sdk's",
        sdk.display()
    );
    Ok(())
}

/// Creates the crate `name` in `dir/name`: with `sdk`, depending on that
/// SDK; without, on the SDK written into `dir/name/sdk` from this binary.
pub fn new_plugin(dir: &Path, name: &str, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    check_name(name)?;
    if let Some(sdk) = &sdk {
        check_sdk(sdk)?;
    }
    let (root, given) = create_package(dir, name, "src", &SDK_FILES, sdk)?;
    let sdk = match given {
        Some(sdk) => sdk,
        None => {
            std::fs::write(root.join("sdk/Cargo.toml"), SDK_CARGO_TOML)?;
            PathBuf::from("sdk")
        }
    };
    // Profiles live at a workspace's root: a crate of its own carries the
    // size profile the host's example plugins are built with.
    let standalone = !inside_workspace(&root);
    let workspace = if standalone {
        "\n# Its own workspace: not part of any enclosing one.\n[workspace]\n\n\
         # `cargo build --profile plugin --target wasm32-unknown-unknown`: the smallest plugin.\n\
         [profile.plugin]\ninherits = \"release\"\nopt-level = \"s\"\nlto = true\ncodegen-units = 1\n\
         panic = \"abort\"\nstrip = true\ndebug = false\n"
    } else {
        ""
    };
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    std::fs::write(
        root.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
drops-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
{workspace}"#,
            sdk = sdk.display()
        ),
    )?;
    if standalone {
        std::fs::write(root.join("Cargo.lock"), LOCKFILE)?;
    }
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    let file_name = name.replace('-', "_");
    let profile = if standalone { "--profile plugin" } else { "--release" };
    let out = if standalone { "plugin" } else { "release" };
    std::fs::write(
        root.join("README.md"),
        // PROFILE first: it contains FILE.
        README.replace("PROFILE", profile).replace("NAME", name).replace("FILE", &file_name).replace("OUT", out),
    )?;
    std::fs::write(root.join("src/lib.rs"), LIB_RS.replace("NAME", name).replace("TypeName", &type_name))?;
    std::fs::write(root.join("campaign.toml"), TEST_CAMPAIGN.replace("NAME", name))?;
    std::fs::create_dir_all(root.join("tests/cases"))?;
    std::fs::write(root.join("tests/cases/reaches-the-goal.json"), TEST_CASE)?;
    std::fs::write(root.join("tests/cases.rs"), CASES_RS)?;
    Ok(root)
}

const README: &str = r#"# NAME

A drops-host reward rule (see the host's docs/plugin-guide.md).

1. `cargo test`: the rule's tests, natively, and its cases in the host's sandbox (step 5).
2. `cargo build PROFILE --target wasm32-unknown-unknown`
   (once: `rustup target add wasm32-unknown-unknown`).
3. Check it against the campaign file that will use it:
   `drops-host plugin check target/wasm32-unknown-unknown/OUT/FILE.wasm --campaign my-campaign.toml`
4. Try it on one event: `drops-host plugin run target/wasm32-unknown-unknown/OUT/FILE.wasm --campaign my-campaign.toml --event heartbeat.json`
5. `drops-host plugin test .`: builds it and runs every case in `tests/cases/` (an event, the
   viewers' minutes before it, what the rule must grant) in the host's sandbox, against
   `campaign.toml`; the same runner tests TypeScript rules. `cargo test` runs it too
   (`tests/cases.rs`; drops-host on PATH, or DROPS_HOST set to it).
6. Install it as `rules/plugins/NAME.wasm` (the host names plugins with dashes; Cargo names the
   file with underscores), or upload it: `curl -X PUT --data-binary @target/.../FILE.wasm
   -H "Authorization: Bearer $TOKEN" $HOST/v1/plugins/NAME`.

`sdk/` is the plugin SDK written by `drops-host plugin new` from the host binary: the
interface version that host speaks. Regenerate the crate with a newer host to move to a newer one.
"#;

/// The Rust template's `cargo test` runs the cases through the wasm build, in the host's sandbox.
const CASES_RS: &str = r#"//! The cases in tests/cases/, run through the plugin's wasm build in
//! drops-host's own sandbox (`drops-host plugin test`), as part of `cargo test`.
//! Set DROPS_HOST to the binary when it is not on PATH.

#[test]
fn cases_pass_in_the_hosts_sandbox() {
    let host = std::env::var("DROPS_HOST").unwrap_or_else(|_| "drops-host".to_string());
    let status = std::process::Command::new(&host)
        .args(["plugin", "test", env!("CARGO_MANIFEST_DIR")])
        .status()
        .unwrap_or_else(|e| panic!("running `{host} plugin test`: {e} (put drops-host on PATH or set DROPS_HOST)"));
    assert!(status.success(), "a case failed: its differences are printed above");
}
"#;

const LIB_RS: &str = r##"//! NAME: a drops-host reward rule.
//!
//! See README.md for building, checking and installing it.
//! Test: `cargo test` (natively, no wasm needed).

use drops_plugin_sdk::{Campaign, Grant, Heartbeat, Rule, Viewer};
use serde::Deserialize;

/// The campaign's `[rule] config`, e.g. `config = { minutes = 30, reward = "reward-id" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub minutes: u32,
    pub reward: String,
}

pub struct TypeName;

impl Rule for TypeName {
    type Config = Config;

    /// Runs when the campaign loads: say which field is wrong.
    fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
        if config.minutes == 0 {
            return Err("config.minutes: must be at least 1".into());
        }
        campaign.reward_index(&config.reward).map(|_| ()).map_err(|e| format!("config.reward: {e}"))
    }

    /// Runs for every heartbeat of the campaign: return the grants to make.
    /// `>=` with a grant made once: a viewer who passed the goal while the
    /// rule ignored them (a channel it filtered, a minute that did not count)
    /// still gets it, and the host keeps one grant per viewer however often
    /// it is returned.
    fn on_heartbeat(config: &Config, campaign: &Campaign, _heartbeat: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        let Ok(reward) = campaign.reward_index(&config.reward) else { return Vec::new() };
        viewers
            .iter()
            .filter(|v| v.minutes >= config.minutes)
            .map(|v| Grant::once(v.handle, reward))
            .collect()
    }
}

drops_plugin_sdk::export_rule!(TypeName);

#[cfg(test)]
mod tests {
    use super::*;
    use drops_plugin_sdk::testing;

    #[test]
    fn grants_everyone_at_or_past_the_goal() {
        let campaign = Campaign::new("c", &["r"], r#"{"minutes": 2, "reward": "r"}"#);
        let config = drops_plugin_sdk::parse_config::<TypeName>(&campaign).unwrap();
        let grants = TypeName::on_heartbeat(&config, &campaign, &testing::heartbeat("b", "G", 1), &testing::viewers(&[1, 2, 3]));
        assert_eq!(grants.iter().map(|g| g.viewer).collect::<Vec<_>>(), vec![1, 2]);
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_source_is_embedded() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk/src");
        let mut on_disk: Vec<String> = std::fs::read_dir(sdk)
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<&str> = SDK_FILES.iter().map(|(f, _)| *f).filter(|f| f.starts_with("src/")).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add the SDK's new file to SDK_FILES");
    }

    #[test]
    fn refuses_bad_names_existing_folders_and_a_missing_sdk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(new_plugin(dir.path(), "Bad Name", None).is_err());
        let err = new_plugin(dir.path(), "my-rule", Some(PathBuf::from("/nonexistent"))).unwrap_err();
        assert!(err.to_string().contains("--sdk /nonexistent"), "{err}");
        new_plugin(dir.path(), "my-rule", None).unwrap();
        let root = dir.path().join("my-rule");
        // A workspace that lists it owns it; one that does not leaves it a workspace of its own.
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\nmembers = [\"plugins/*\"]\n").unwrap();
        assert!(inside_workspace(&dir.path().join("plugins/new-rule")));
        assert!(!inside_workspace(&dir.path().join("play/new-rule")));
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyRule;") && lib.contains("export_rule!(MyRule)"));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]") && manifest.contains("[profile.plugin]"), "{manifest}");
        assert!(manifest.contains(r#"path = "sdk""#), "{manifest}");
        assert!(root.join("sdk/wit/rules.wit").exists() && root.join(".gitignore").exists());
        assert!(root.join("README.md").exists() && root.join("Cargo.lock").exists());
        assert!(new_plugin(dir.path(), "my-rule", None).is_err());
    }
}
