//! `drops-host plugin new NAME`: a plugin crate that builds, with a rule and its tests.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Where the SDK is: the copy this binary was built from, as a relative path
/// when the new crate sits in the same tree (so the two move together).
fn default_sdk_path(root: &Path) -> PathBuf {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
    let sdk = std::fs::canonicalize(&built_from).unwrap_or(built_from);
    let Ok(root) = std::fs::canonicalize(root) else { return sdk };
    let shares_a_folder = root.ancestors().filter(|a| sdk.starts_with(a)).any(|a| a.parent().is_some());
    if shares_a_folder {
        relative(&root.join("Cargo.toml"), &sdk).unwrap_or(sdk)
    } else {
        sdk
    }
}

/// The path to `to` from the directory `from_file` will be in.
fn relative(from_file: &Path, to: &Path) -> Option<PathBuf> {
    let from = from_file.parent()?;
    let common = from.ancestors().find(|a| to.starts_with(a))?;
    let ups = from.strip_prefix(common).ok()?.components().count();
    let mut out = PathBuf::new();
    for _ in 0..ups {
        out.push("..");
    }
    out.push(to.strip_prefix(common).ok()?);
    Some(out)
}

/// Whether `dir` lies inside a Cargo workspace, which then owns the new crate.
fn inside_workspace(dir: &Path) -> bool {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    dir.ancestors().skip(1).any(|a| {
        std::fs::read_to_string(a.join("Cargo.toml")).is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
    })
}

/// Creates the crate `name` in `dir/name`.
pub fn new_plugin(dir: &Path, name: &str, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
        "plugin names are lowercase letters, digits and dashes (they become file names): `{name}`"
    );
    let root = dir.join(name);
    anyhow::ensure!(!root.exists(), "{} already exists", root.display());
    std::fs::create_dir_all(root.join("src")).with_context(|| format!("creating {}", root.display()))?;
    let sdk = sdk.unwrap_or_else(|| default_sdk_path(&root));
    let workspace = if inside_workspace(&root) {
        ""
    } else {
        "\n# Its own workspace: not part of any enclosing one.\n[workspace]\n"
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
    std::fs::write(root.join("src/lib.rs"), LIB_RS.replace("NAME", name).replace("TypeName", &type_name))?;
    Ok(root)
}

const LIB_RS: &str = r##"//! NAME: a drops-host reward rule.
//!
//! Build: `cargo build --release --target wasm32-unknown-unknown`, then copy
//! `target/wasm32-unknown-unknown/release/*.wasm` to the host's `rules/plugins/NAME.wasm`.
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
    fn on_heartbeat(config: &Config, campaign: &Campaign, _heartbeat: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        let Ok(reward) = campaign.reward_index(&config.reward) else { return Vec::new() };
        viewers
            .iter()
            .filter(|v| v.counted && v.minutes == config.minutes)
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
    fn grants_on_the_minute_that_reaches_the_goal() {
        let campaign = Campaign::new("c", &["r"], r#"{"minutes": 2, "reward": "r"}"#);
        let config = drops_plugin_sdk::parse_config::<TypeName>(&campaign).unwrap();
        let grants = TypeName::on_heartbeat(&config, &campaign, &testing::heartbeat("b", "G", 1), &testing::viewers(&[1, 2, 3]));
        assert_eq!(grants.iter().map(|g| g.viewer).collect::<Vec<_>>(), vec![1]);
    }
}
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(Path::new("/a/b/c/x"), Path::new("/a/sdk")).unwrap(), PathBuf::from("../../sdk"));
    }

    #[test]
    fn refuses_bad_names_and_existing_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert!(new_plugin(dir.path(), "Bad Name", None).is_err());
        new_plugin(dir.path(), "my-rule", Some(PathBuf::from("/sdk"))).unwrap();
        let lib = std::fs::read_to_string(dir.path().join("my-rule/src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct MyRule;") && lib.contains("export_rule!(MyRule)"));
        assert!(std::fs::read_to_string(dir.path().join("my-rule/Cargo.toml")).unwrap().contains("[workspace]"));
        assert!(new_plugin(dir.path(), "my-rule", None).is_err());
    }
}
