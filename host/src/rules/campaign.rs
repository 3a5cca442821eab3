//! A campaign file (`rules/campaigns/<name>.toml`), parsed and bound to its plugin.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use time::OffsetDateTime;

use super::RulesError;
use crate::domain::{GameStateEvent, Heartbeat};
use crate::plugins::{Plugin, PluginHash, PluginRuntime, WitCampaign};

/// The file format, exactly as designers write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignFile {
    /// Twitch campaign id; goes into manifests.
    pub id: String,
    pub name: String,
    /// Must equal the VHS game name exactly, case included.
    pub game: String,
    /// Twitch game (category) id that E2 game state is published for; a
    /// campaign without one gets no game-state events.
    #[serde(default)]
    pub game_id: Option<String>,
    pub client_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub ends_at: OffsetDateTime,
    #[serde(default = "enabled_default")]
    pub enabled: bool,
    /// Broadcaster ids; empty means every linked channel.
    #[serde(default)]
    pub allowlist: Vec<String>,
    pub rewards: Vec<RewardDef>,
    pub rule: RuleDef,
}

fn enabled_default() -> bool {
    true
}

/// A Twitch reward (item) the campaign gives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardDef {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// Which plugin decides grants, and its config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    /// `rules/plugins/<plugin>.wasm`.
    pub plugin: String,
    #[serde(default)]
    pub config: toml::Table,
}

/// A validated campaign, ready for the engine.
#[derive(Debug)]
pub struct LoadedCampaign {
    pub file: PathBuf,
    pub def: CampaignFile,
    /// SHA-256 of the file's bytes: which edit of the campaign made a grant.
    pub revision: String,
    pub plugin: Arc<Plugin>,
    /// What the plugin is handed about the campaign on every call.
    pub wit: WitCampaign,
    allowlist: HashSet<String>,
}

impl LoadedCampaign {
    /// Reads and parses a campaign file; errors name the field.
    pub fn parse(path: &Path) -> Result<(CampaignFile, String), RulesError> {
        let bytes = std::fs::read(path).map_err(|e| RulesError::read(path, e))?;
        Self::parse_bytes(&bytes)
    }

    /// Parses a campaign file's bytes; errors name the field.
    pub fn parse_bytes(bytes: &[u8]) -> Result<(CampaignFile, String), RulesError> {
        let text = std::str::from_utf8(bytes).map_err(|e| RulesError::Campaign(format!("not UTF-8: {e}")))?;
        let def: CampaignFile =
            toml::from_str(text).map_err(|e| RulesError::Campaign(e.to_string().trim_end().to_string()))?;
        def.validate().map_err(RulesError::Campaign)?;
        Ok((def, PluginHash::of(bytes).0))
    }

    /// What a plugin is handed about a campaign on every call.
    pub fn wit_campaign(def: &CampaignFile) -> Result<WitCampaign, RulesError> {
        let config = serde_json::to_string(&def.rule.config)
            .map_err(|e| RulesError::Campaign(format!("field `rule.config`: {e}")))?;
        Ok(WitCampaign { id: def.id.clone(), rewards: def.rewards.iter().map(|r| r.id.clone()).collect(), config })
    }

    /// Binds a parsed campaign to its plugin and runs the plugin's config check.
    pub fn bind(
        path: &Path,
        def: CampaignFile,
        revision: String,
        plugins: &HashMap<String, Arc<Plugin>>,
        runtime: &PluginRuntime,
    ) -> Result<LoadedCampaign, RulesError> {
        let plugin = plugins.get(&def.rule.plugin).cloned().ok_or_else(|| {
            let wanted = &def.rule.plugin;
            // Cargo names the built file with underscores; campaigns name plugins with dashes.
            let underscored = wanted.replace('-', "_");
            let hint = if underscored != *wanted && plugins.contains_key(&underscored) {
                format!(": plugins/{underscored}.wasm is there; rename it to {wanted}.wasm (Cargo writes underscores)")
            } else {
                String::new()
            };
            RulesError::Campaign(format!(
                "field `rule.plugin`: no loaded plugin `{wanted}` (expected plugins/{wanted}.wasm){hint}"
            ))
        })?;
        let wit = Self::wit_campaign(&def)?;
        runtime
            .validate_config(&plugin, &wit)
            .map_err(|source| RulesError::ConfigRefused { plugin: plugin.name.clone(), source })?;
        Ok(LoadedCampaign {
            file: path.to_path_buf(),
            revision,
            allowlist: def.allowlist.iter().cloned().collect(),
            def,
            plugin,
            wit,
        })
    }

    /// Whether a heartbeat counts for this campaign (the game is matched by the caller's index).
    pub fn matches(&self, hb: &Heartbeat) -> bool {
        self.def.enabled
            && hb.game.0 == self.def.game
            && self.def.starts_at <= hb.time.0
            && hb.time.0 < self.def.ends_at
            && (self.allowlist.is_empty() || self.allowlist.contains(&hb.broadcaster.0))
    }

    /// Whether a game-state change of `broadcaster` (a game account id)
    /// concerns this campaign: published by its client for its game id,
    /// inside the window, the broadcaster allowlisted when a list is set.
    pub fn matches_game_state(&self, event: &GameStateEvent, broadcaster: &str) -> bool {
        let at = event.time();
        self.def.enabled
            && self.def.client_id == event.client_id
            && self.def.game_id.as_deref() == Some(event.game_id.as_str())
            && self.def.starts_at <= at
            && at < self.def.ends_at
            && (self.allowlist.is_empty() || self.allowlist.contains(broadcaster))
    }
}

impl CampaignFile {
    fn validate(&self) -> Result<(), String> {
        for (field, value) in [("id", &self.id), ("game", &self.game), ("client_id", &self.client_id)] {
            if value.trim().is_empty() {
                return Err(format!("field `{field}`: must not be empty"));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("field `{field}`: must not contain control characters"));
            }
        }
        if self.id.len() > 64 {
            return Err("field `id`: longer than 64 characters".into());
        }
        if self.ends_at <= self.starts_at {
            return Err("field `ends_at`: must be after `starts_at`".into());
        }
        if self.rewards.is_empty() {
            return Err("field `rewards`: at least one reward is needed".into());
        }
        let mut seen = HashSet::new();
        for (i, reward) in self.rewards.iter().enumerate() {
            if reward.id.trim().is_empty() {
                return Err(format!("field `rewards[{i}].id`: must not be empty"));
            }
            if reward.id.chars().any(char::is_control) {
                return Err(format!("field `rewards[{i}].id`: must not contain control characters"));
            }
            if !seen.insert(&reward.id) {
                return Err(format!("field `rewards[{i}].id`: `{}` appears twice", reward.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "c-1"
name = "Summer"
game = "GameName"
client_id = "client"
starts_at = "2026-11-20T00:00:00Z"
ends_at = "2026-11-27T00:00:00Z"
[[rewards]]
id = "bronze"
[rule]
plugin = "watch-time-tiers"
config = { tiers = [ { minutes = 30, reward = "bronze" } ] }
"#;

    #[test]
    fn parses_the_documented_format() {
        let def: CampaignFile = toml::from_str(GOOD).unwrap();
        def.validate().unwrap();
        assert!(def.enabled);
        assert_eq!(serde_json::to_string(&def.rule.config).unwrap(), r#"{"tiers":[{"minutes":30,"reward":"bronze"}]}"#);
    }

    #[test]
    fn errors_name_the_field() {
        let err = toml::from_str::<CampaignFile>(&GOOD.replace("game = \"GameName\"\n", "")).unwrap_err();
        assert!(err.to_string().contains("missing field `game`"), "{err}");
        let err = toml::from_str::<CampaignFile>(&GOOD.replace("2026-11-27T00:00:00Z", "next week")).unwrap_err();
        assert!(err.to_string().contains("ends_at"), "{err}");
        let def: CampaignFile = toml::from_str(&GOOD.replace("2026-11-27", "2026-11-19")).unwrap();
        assert_eq!(def.validate().unwrap_err(), "field `ends_at`: must be after `starts_at`");
    }

    mod properties {
        use super::*;
        use crate::test_values::hostile_string;
        use proptest::prelude::*;

        const FIELDS: [&str; 8] = ["id", "name", "game", "game_id", "client_id", "starts_at", "ends_at", "enabled"];

        fn toml_value() -> impl Strategy<Value = String> {
            prop_oneof![
                hostile_string().prop_map(|s| toml::Value::String(s).to_string()),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<bool>().prop_map(|b| b.to_string()),
                Just("[1, 2]".to_string()),
                Just("\"2026-11-19T00:00:00Z\"".to_string()),
            ]
        }

        proptest! {
            #[test]
            fn a_campaign_file_loads_or_its_error_names_the_field(
                field in prop::sample::select(FIELDS.to_vec()),
                value in toml_value(),
            ) {
                let mut lines: Vec<String> =
                    GOOD.lines().filter(|l| !l.starts_with(&format!("{field} ="))).map(String::from).collect();
                lines.insert(1, format!("{field} = {value}"));
                let text = lines.join("\n");
                let result = toml::from_str::<CampaignFile>(&text)
                    .map_err(|e| e.to_string())
                    .and_then(|def| def.validate());
                if let Err(message) = result {
                    prop_assert!(message.contains(field) || message.contains("ends_at"), "{}", message);
                }
            }
        }
    }
}
