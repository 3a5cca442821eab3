//! `drops-host plugin check`: loads a plugin as the host would and runs its
//! config check, against a config given inline or the exact campaign file
//! that will go live. A config error names the file and line of the key
//! it is about, not a position in the JSON the host hands the plugin.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::plugins::{PluginError, PluginRuntime, WitCampaign, INTERFACE_VERSION};
use crate::rules::LoadedCampaign;

/// What the config is checked from.
pub enum CheckedConfig<'a> {
    /// `--config` JSON and `--rewards`.
    Inline { config: &'a str, rewards: Vec<String> },
    /// `--campaign FILE.toml`.
    CampaignFile(&'a Path),
}

/// Runs the check and prints the verdict; the exit code says whether it passed.
pub fn run(file: &Path, checked: CheckedConfig<'_>) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let runtime = PluginRuntime::new(Default::default())?;
    let plugin = match runtime.load(&name, &bytes) {
        Ok(p) => p,
        Err(e) => {
            println!("{}: not loadable: {e}", file.display());
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("{}: implements drops:rules@{INTERFACE_VERSION} (sha256 {})", file.display(), plugin.hash);
    let (campaign, source) = match checked {
        CheckedConfig::Inline { config, rewards } => {
            let config: serde_json::Value = serde_json::from_str(config).context("--config is not JSON")?;
            (WitCampaign { id: "check".into(), rewards, config: config.to_string() }, None)
        }
        CheckedConfig::CampaignFile(path) => {
            let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let (def, _) = match LoadedCampaign::parse_bytes(&text) {
                Ok(parsed) => parsed,
                Err(e) => {
                    println!("{}: {e}", path.display());
                    return Ok(ExitCode::FAILURE);
                }
            };
            if def.rule.plugin != name.replace('_', "-") {
                println!(
                    "note: {} binds plugin `{}`; the file checked is `{name}` (the host loads plugins/{}.wasm)",
                    path.display(),
                    def.rule.plugin,
                    def.rule.plugin
                );
            }
            let campaign = LoadedCampaign::wit_campaign(&def)?;
            (campaign, Some((path, String::from_utf8_lossy(&text).into_owned())))
        }
    };
    match runtime.validate_config(&plugin, &campaign) {
        Ok(()) => {
            println!("config: ok");
            Ok(ExitCode::SUCCESS)
        }
        Err(PluginError::Rejected(message)) => {
            let message = plain(&message);
            match &source {
                Some((path, text)) => {
                    let line = config_line(text, &message);
                    println!("{}:{line}: rule.config: {message}", path.display());
                }
                None if campaign.rewards.is_empty() && message.contains("is not one of the campaign's rewards") => {
                    println!(
                        "config: {message} (no rewards were given: pass them with --rewards a,b, or check the campaign file with --campaign)"
                    );
                }
                None => println!("config: {message}"),
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            println!("config check failed: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A config error as a designer reads it: without the SDK's `config: `
/// prefix and without serde's position in the JSON the host passes.
fn plain(message: &str) -> String {
    let message = message.strip_prefix("config: ").unwrap_or(message);
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => message[..at].to_string(),
        _ => message.to_string(),
    }
}

/// The line of the campaign file the error is about: the line assigning the
/// last key the message names (`config.tiers[0].minutes`, or serde's
/// `` `reward` ``), else the line where the rule's config starts.
fn config_line(text: &str, message: &str) -> usize {
    let start = text
        .lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("[rule.config]") || l.starts_with("config")
        })
        .unwrap_or(0);
    let key = named_key(message);
    if let Some(key) = key {
        for (i, line) in text.lines().enumerate().skip(start) {
            if assigns(line, &key) {
                return i + 1;
            }
        }
    }
    start + 1
}

/// The key a message is about: the text between the first backticks, else
/// the last segment of a `config.a.b` path.
fn named_key(message: &str) -> Option<String> {
    if let Some(path) = message.split_whitespace().next().and_then(|w| w.strip_suffix(':')) {
        if let Some(path) = path.strip_prefix("config.") {
            let last = path.rsplit('.').next().unwrap_or(path);
            return Some(last.split('[').next().unwrap_or(last).to_string());
        }
    }
    let (_, rest) = message.split_once('`')?;
    let (key, _) = rest.split_once('`')?;
    (!key.is_empty()).then(|| key.to_string())
}

/// Whether a TOML line assigns `key` (`key = ...`, or `key = ...` inside an inline table).
fn assigns(line: &str, key: &str) -> bool {
    line.match_indices(key).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + key.len()..].trim_start();
        before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-')) && after.starts_with('=')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "id = \"c\"\nname = \"n\"\n[rule]\nplugin = \"p\"\n[rule.config]\nminutes = 0\nrewrd = \"r\"\n";

    #[test]
    fn errors_point_at_the_key_in_the_campaign_file() {
        assert_eq!(plain("config: missing field `reward` at line 1 column 42"), "missing field `reward`");
        assert_eq!(config_line(FILE, "config.minutes: must be at least 1"), 6);
        assert_eq!(config_line(FILE, "unknown field `rewrd`, expected `minutes` or `reward`"), 7);
        assert_eq!(config_line(FILE, "missing field `reward`"), 5, "a missing key: where the config starts");
        let inline = "id = \"c\"\n[rule]\nplugin = \"p\"\nconfig = { tiers = [ { minutes = 0, reward = \"r\" } ] }\n";
        assert_eq!(config_line(inline, "config.tiers[0].minutes: must be at least 1"), 4);
        assert!(!assigns("max_minutes = 3", "minutes"), "a longer key is another key");
    }
}
