//! Rewards everyone watching a broadcaster when `boss_defeated` in the
//! broadcaster's E2 game state turns true.
//!
//! Config: `{ reward = "reward-id" }`, optionally `repeat_by = "boss_kills"`
//! (each new value of that state key is a new kill, granted again under its
//! own grant key) and `authoritative_only = true` (ignore state published by
//! game clients with user tokens, which players could forge).

use drops_plugin_sdk::{Campaign, GameState, Grant, Rule, Viewer};
use serde::Deserialize;
use serde_json::Value;

/// The state key that marks the event.
pub const DEFEATED: &str = "boss_defeated";

/// The campaign's `[rule] config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The reward for watching the kill.
    pub reward: String,
    /// A state key (such as a kill counter) whose value makes each kill a
    /// separate, repeatable grant; without it a viewer gets the reward once.
    #[serde(default)]
    pub repeat_by: Option<String>,
    /// Only believe game servers (app tokens).
    #[serde(default)]
    pub authoritative_only: bool,
}

/// The rule.
pub struct BossDefeated;

impl Rule for BossDefeated {
    type Config = Config;

    fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
        campaign.reward_index(&config.reward).map_err(|e| format!("config.reward: {e}"))?;
        if config.repeat_by.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err("config.repeat_by: must name a state key".into());
        }
        Ok(())
    }

    fn on_game_state(config: &Config, campaign: &Campaign, change: &GameState, viewers: &[Viewer]) -> Vec<Grant> {
        if !change.changed(DEFEATED) || (config.authoritative_only && !change.authoritative) {
            return Vec::new();
        }
        let (before, after) = (change.previous_value(), change.current_value());
        let defeated = |state: &Value| state.get(DEFEATED) == Some(&Value::Bool(true));
        if defeated(&before) || !defeated(&after) {
            return Vec::new();
        }
        let Ok(reward) = campaign.reward_index(&config.reward) else { return Vec::new() };
        let key = config.repeat_by.as_deref().map(|k| match after.get(k) {
            Some(Value::String(s)) => format!("{}:{k}={s}", change.broadcaster),
            Some(v) => format!("{}:{k}={v}", change.broadcaster),
            None => format!("{}:{k}@{}", change.broadcaster, change.minute),
        });
        viewers
            .iter()
            .map(|v| match &key {
                Some(key) => Grant::repeatable(v.handle, reward, key.clone()),
                None => Grant::once(v.handle, reward),
            })
            .collect()
    }
}

drops_plugin_sdk::export_rule!(BossDefeated);

#[cfg(test)]
mod tests {
    use super::*;
    use drops_plugin_sdk::testing::{game_state, watching};

    fn run(config: &str, previous: &str, current: &str, viewers: usize) -> Vec<Grant> {
        let campaign = Campaign::new("c1", &["trophy"], config);
        let config = drops_plugin_sdk::parse_config::<BossDefeated>(&campaign).unwrap();
        BossDefeated::validate(&config, &campaign).unwrap();
        let change = game_state("b1", 100, previous, current);
        BossDefeated::on_game_state(&config, &campaign, &change, &watching(&vec![5; viewers]))
    }

    #[test]
    fn everyone_watching_gets_the_reward_when_the_boss_falls() {
        let grants = run(r#"{"reward":"trophy"}"#, r#"{"boss_defeated":false}"#, r#"{"boss_defeated":true}"#, 3);
        assert_eq!(grants, vec![Grant::once(0, 0), Grant::once(1, 0), Grant::once(2, 0)]);
    }

    #[test]
    fn only_the_turn_to_true_counts() {
        let config = r#"{"reward":"trophy"}"#;
        assert!(run(config, r#"{"boss_defeated":true}"#, r#"{"boss_defeated":true,"level":2}"#, 2).is_empty());
        assert!(run(config, r#"{"boss_defeated":true}"#, r#"{"boss_defeated":false}"#, 2).is_empty());
        assert!(run(config, r#"{}"#, r#"{"level":1}"#, 2).is_empty());
        assert_eq!(run(config, r#"{}"#, r#"{"boss_defeated":true}"#, 1).len(), 1);
    }

    #[test]
    fn each_kill_is_its_own_grant_with_repeat_by() {
        let config = r#"{"reward":"trophy","repeat_by":"boss_kills"}"#;
        let third =
            run(config, r#"{"boss_defeated":false,"boss_kills":2}"#, r#"{"boss_defeated":true,"boss_kills":3}"#, 1);
        assert_eq!(third, vec![Grant::repeatable(0, 0, "b1:boss_kills=3")]);
    }

    #[test]
    fn client_published_state_can_be_ignored() {
        let campaign = Campaign::new("c1", &["trophy"], r#"{"reward":"trophy","authoritative_only":true}"#);
        let config = drops_plugin_sdk::parse_config::<BossDefeated>(&campaign).unwrap();
        let mut change = game_state("b1", 100, "{}", r#"{"boss_defeated":true}"#);
        change.authoritative = false;
        assert!(BossDefeated::on_game_state(&config, &campaign, &change, &watching(&[1])).is_empty());
    }

    #[test]
    fn validation_names_the_bad_field() {
        let campaign = Campaign::new("c1", &["trophy"], r#"{"reward":"gold"}"#);
        let config = drops_plugin_sdk::parse_config::<BossDefeated>(&campaign).unwrap();
        assert!(BossDefeated::validate(&config, &campaign).unwrap_err().starts_with("config.reward"));
    }
}
