//! Watch-time tiers that count a minute only while the broadcaster is really
//! playing: their E2 game state changed within the last `active_within_minutes`.
//! Against farming with streams left on a menu, a static image or a replay.
//!
//! Config: `{ active_within_minutes = 5, tiers = [ { minutes = 30, reward = "reward-id" }, ... ] }`.

use drops_plugin_sdk::tiers::{self, Tier};
use drops_plugin_sdk::{Campaign, Grant, Heartbeat, Rule, Viewer};
use serde::Deserialize;

/// The campaign's `[rule] config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A heartbeat's minute counts when the game state changed less than this
    /// many minutes from it (the minute of the change itself included).
    pub active_within_minutes: u32,
    pub tiers: Vec<Tier>,
}

/// The rule.
pub struct ActivePlayOnly;

impl Rule for ActivePlayOnly {
    type Config = Config;

    fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
        if config.active_within_minutes == 0 {
            return Err("config.active_within_minutes: must be at least 1".into());
        }
        tiers::validate(&config.tiers, campaign)
    }

    fn minutes_count(config: &Config, _: &Campaign, heartbeat: &Heartbeat) -> bool {
        // No game state at all: nothing shows the broadcaster is playing. A
        // change far from the heartbeat's minute, before or after, says
        // nothing about that minute either.
        heartbeat.state_changed.is_some_and(|changed| heartbeat.minute.abs_diff(changed) < config.active_within_minutes)
    }

    fn on_heartbeat(config: &Config, campaign: &Campaign, _: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        tiers::grants(&config.tiers, campaign, viewers)
    }
}

drops_plugin_sdk::export_rule!(ActivePlayOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use drops_plugin_sdk::testing::{heartbeat, viewers};

    const CONFIG: &str = r#"{"active_within_minutes":3,"tiers":[{"minutes":2,"reward":"bronze"}]}"#;

    fn decide(minute: u32, state_changed: Option<u32>, minutes: &[u32]) -> (bool, Vec<Grant>) {
        let campaign = Campaign::new("c1", &["bronze"], CONFIG);
        let mut hb = heartbeat("b1", "G", minute);
        hb.state_changed = state_changed;
        let verdict = drops_plugin_sdk::decide_heartbeat::<ActivePlayOnly>(campaign, hb, viewers(minutes)).unwrap();
        (verdict.count_minutes, verdict.grants)
    }

    #[test]
    fn minutes_count_while_the_game_state_moves() {
        assert_eq!(decide(100, Some(100), &[2]), (true, vec![Grant::once(0, 0)]));
        assert_eq!(decide(102, Some(100), &[2]), (true, vec![Grant::once(0, 0)]));
    }

    #[test]
    fn a_stream_idle_on_a_menu_earns_nothing() {
        // Three minutes without a change: the minute does not count, and the
        // tier it would have crossed is not granted.
        assert_eq!(decide(103, Some(100), &[2]), (false, vec![]));
        assert_eq!(decide(103, None, &[2]), (false, vec![]), "no game state at all");
        assert_eq!(decide(97, Some(100), &[2]), (false, vec![]), "a change long after says nothing");
    }

    #[test]
    fn validation_names_the_bad_field() {
        let campaign = Campaign::new("c1", &["bronze"], r#"{"active_within_minutes":0,"tiers":[]}"#);
        let config = drops_plugin_sdk::parse_config::<ActivePlayOnly>(&campaign).unwrap();
        assert!(ActivePlayOnly::validate(&config, &campaign).unwrap_err().starts_with("config.active_within_minutes"));
    }
}
