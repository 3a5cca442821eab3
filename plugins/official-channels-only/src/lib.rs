//! Grants a reward for watching the studio's official channels only, at most
//! `daily_cap` grants per UTC day (Twitch's advice against farming: reward on
//! your own channel, and control the campaign's pace day by day).
//!
//! Config: `{ channels = ["broadcaster-id"], minutes = 15, reward = "reward-id", daily_cap = 1000 }`.

use drops_plugin_sdk::{state, viewer_id, Campaign, Grant, Heartbeat, Rule, Viewer};
use serde::{Deserialize, Serialize};

/// The campaign's `[rule] config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Broadcaster ids whose channels count.
    pub channels: Vec<String>,
    /// Minutes in those channels that earn the reward.
    pub minutes: u32,
    pub reward: String,
    /// Most grants per UTC day; viewers past it earn the reward on a later day.
    pub daily_cap: u32,
}

/// What the rule remembers per viewer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    minutes: u32,
    last_minute: u32,
    granted: bool,
}

/// The rule.
pub struct OfficialChannelsOnly;

impl Rule for OfficialChannelsOnly {
    type Config = Config;

    fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
        if config.channels.is_empty() {
            return Err("config.channels: name at least one broadcaster id".into());
        }
        if config.minutes == 0 {
            return Err("config.minutes: must be at least 1".into());
        }
        campaign.reward_index(&config.reward).map_err(|e| format!("config.reward: {e}"))?;
        Ok(())
    }

    fn on_heartbeat(config: &Config, campaign: &Campaign, heartbeat: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        if !config.channels.contains(&heartbeat.broadcaster) {
            return Vec::new();
        }
        let Ok(reward) = campaign.reward_index(&config.reward) else { return Vec::new() };
        let day_key = format!("granted-on-day:{}", heartbeat.minute / 1440);
        let mut granted_today: u32 = state::get_json(&day_key).unwrap_or(0);
        let mut grants = Vec::new();
        for viewer in viewers {
            let Some(id) = viewer_id(viewer.handle) else { continue };
            let key = format!("viewer:{id}");
            let mut progress: Progress = state::get_json(&key).unwrap_or_default();
            // Count each minute once, however many official channels report it.
            if progress.minutes > 0 && heartbeat.minute <= progress.last_minute {
                continue;
            }
            progress.minutes += 1;
            progress.last_minute = heartbeat.minute;
            if !progress.granted && progress.minutes >= config.minutes && granted_today < config.daily_cap {
                progress.granted = true;
                granted_today += 1;
                grants.push(Grant::once(viewer.handle, reward));
            }
            let _ = state::set_json(&key, &progress);
        }
        let _ = state::set_json(&day_key, &granted_today);
        grants
    }
}

drops_plugin_sdk::export_rule!(OfficialChannelsOnly);

#[cfg(test)]
mod tests {
    use super::*;
    use drops_plugin_sdk::testing;

    fn run(broadcaster: &str, minute: u32, ids: &[&str]) -> Vec<u32> {
        let campaign =
            Campaign::new("c", &["badge"], r#"{"channels":["official"],"minutes":2,"reward":"badge","daily_cap":2}"#);
        let config = drops_plugin_sdk::parse_config::<OfficialChannelsOnly>(&campaign).unwrap();
        testing::set_viewer_ids(ids);
        let viewers = testing::viewers(&vec![1; ids.len()]);
        OfficialChannelsOnly::on_heartbeat(&config, &campaign, &testing::heartbeat(broadcaster, "G", minute), &viewers)
            .iter()
            .map(|g| g.viewer)
            .collect()
    }

    #[test]
    fn only_official_minutes_count_and_the_daily_cap_holds() {
        testing::clear_state();
        assert!(run("other", 10, &["a", "b", "c"]).is_empty());
        assert!(run("other", 11, &["a", "b", "c"]).is_empty(), "other channels never count");
        assert!(run("official", 12, &["a", "b", "c"]).is_empty());
        assert_eq!(run("official", 12, &["a", "b", "c"]), Vec::<u32>::new(), "the same minute counts once");
        assert_eq!(run("official", 13, &["a", "b", "c"]), vec![0, 1], "cap of 2 for the day");
        assert!(run("official", 14, &["a", "b", "c"]).is_empty(), "c waits for tomorrow");
        assert_eq!(run("official", 1440 + 5, &["a", "b", "c"]), vec![2], "a new day, c is granted");
    }
}
