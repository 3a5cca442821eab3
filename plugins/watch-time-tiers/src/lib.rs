//! Grants a reward the first time a viewer's campaign watch-time reaches a tier.
//!
//! Config: `{ tiers = [ { minutes = 30, reward = "reward-id" }, ... ] }`.

use drops_plugin_sdk::tiers::{self, Tier};
use drops_plugin_sdk::{Campaign, Grant, Heartbeat, Rule, Viewer};
use serde::Deserialize;

/// The campaign's `[rule] config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Minutes of watch-time and the reward each one earns.
    pub tiers: Vec<Tier>,
}

/// The rule.
pub struct WatchTimeTiers;

impl Rule for WatchTimeTiers {
    type Config = Config;

    fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
        tiers::validate(&config.tiers, campaign)
    }

    fn on_heartbeat(config: &Config, campaign: &Campaign, _: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        tiers::grants(&config.tiers, campaign, viewers)
    }
}

drops_plugin_sdk::export_rule!(WatchTimeTiers);

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign() -> Campaign {
        Campaign::new(
            "c1",
            &["bronze", "silver"],
            r#"{"tiers":[{"minutes":2,"reward":"bronze"},{"minutes":3,"reward":"silver"}]}"#,
        )
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat { broadcaster: "b".into(), game: "G".into(), minute: 1, viewers_reported: 3, state_changed: None }
    }

    fn viewer(handle: u32, minutes: u32, counted: bool) -> Viewer {
        Viewer { handle, minutes, counted }
    }

    fn run(viewers: &[Viewer]) -> Vec<(u32, u32)> {
        let campaign = campaign();
        let config = drops_plugin_sdk::parse_config::<WatchTimeTiers>(&campaign).unwrap();
        WatchTimeTiers::on_heartbeat(&config, &campaign, &heartbeat(), viewers)
            .into_iter()
            .map(|g| (g.viewer, g.reward))
            .collect()
    }

    #[test]
    fn grants_each_tier_on_the_minute_that_reaches_it() {
        assert_eq!(run(&[viewer(0, 1, true), viewer(1, 2, true), viewer(2, 3, true)]), vec![(1, 0), (2, 1)]);
    }

    #[test]
    fn a_minute_counted_elsewhere_grants_nothing() {
        assert_eq!(run(&[viewer(0, 2, false)]), vec![]);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let campaign = Campaign::new("c1", &["bronze"], r#"{"tiers":[{"minutes":5,"reward":"gold"}]}"#);
        let config = drops_plugin_sdk::parse_config::<WatchTimeTiers>(&campaign).unwrap();
        let err = WatchTimeTiers::validate(&config, &campaign).unwrap_err();
        assert!(err.starts_with("config.tiers[0].reward"), "{err}");
        let bad = Campaign::new("c1", &["bronze"], r#"{"tier":[]}"#);
        assert!(drops_plugin_sdk::parse_config::<WatchTimeTiers>(&bad).unwrap_err().contains("tier"));
    }
}
