//! Grants a reward for watching at least `minutes_per_day` minutes on each of
//! `days` different UTC days.
//!
//! Config: `{ minutes_per_day = 30, days = 3, reward = "reward-id" }`.

use drops_plugin_sdk::{state, viewer_id, Campaign, Grant, Heartbeat, Rule, Viewer};
use serde::{Deserialize, Serialize};

/// The campaign's `[rule] config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub minutes_per_day: u32,
    pub days: u32,
    pub reward: String,
}

/// What the rule remembers per viewer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Streak {
    day: u32,
    minutes_today: u32,
    days_done: u32,
}

/// The rule.
pub struct DailyStreak;

impl Rule for DailyStreak {
    type Config = Config;

    fn validate(config: &Config, campaign: &Campaign) -> Result<(), String> {
        if config.minutes_per_day == 0 || config.minutes_per_day > 1440 {
            return Err("config.minutes_per_day: must be 1 to 1440".into());
        }
        if config.days == 0 {
            return Err("config.days: must be at least 1".into());
        }
        campaign.reward_index(&config.reward).map_err(|e| format!("config.reward: {e}"))?;
        Ok(())
    }

    fn on_heartbeat(config: &Config, campaign: &Campaign, heartbeat: &Heartbeat, viewers: &[Viewer]) -> Vec<Grant> {
        let Ok(reward) = campaign.reward_index(&config.reward) else { return Vec::new() };
        let day = heartbeat.minute / 1440;
        let mut grants = Vec::new();
        // The host counts each viewer-minute once per campaign: `counted` is false
        // for a minute already seen through another channel.
        for viewer in viewers.iter().filter(|v| v.counted) {
            let Some(id) = viewer_id(viewer.handle) else { continue };
            let key = format!("viewer:{id}");
            let mut streak: Streak = state::get_json(&key).unwrap_or_default();
            if streak.days_done >= config.days || day < streak.day {
                continue;
            }
            if day != streak.day {
                streak = Streak { day, minutes_today: 0, ..streak };
            }
            streak.minutes_today += 1;
            if streak.minutes_today == config.minutes_per_day {
                streak.days_done += 1;
                if streak.days_done == config.days {
                    grants.push(Grant::once(viewer.handle, reward));
                }
            }
            let _ = state::set_json(&key, &streak);
        }
        grants
    }
}

drops_plugin_sdk::export_rule!(DailyStreak);

#[cfg(test)]
mod tests {
    use super::*;
    use drops_plugin_sdk::testing;

    #[test]
    fn two_minutes_on_each_of_two_days() {
        testing::clear_state();
        let campaign = Campaign::new("c", &["r"], r#"{"minutes_per_day":2,"days":2,"reward":"r"}"#);
        let config = drops_plugin_sdk::parse_config::<DailyStreak>(&campaign).unwrap();
        testing::set_viewer_ids(&["a", "b"]);
        let run = |minute: u32, who: &[u32]| {
            let viewers: Vec<Viewer> = who.iter().map(|&h| Viewer { handle: h, minutes: 0, counted: true }).collect();
            DailyStreak::on_heartbeat(&config, &campaign, &testing::heartbeat("b", "G", minute), &viewers)
                .iter()
                .map(|g| g.viewer)
                .collect::<Vec<_>>()
        };
        assert!(run(0, &[0, 1]).is_empty());
        assert!(run(1, &[0, 1]).is_empty(), "day 0 done for both");
        assert!(run(1440, &[0]).is_empty());
        assert!(run(1441 + 1440, &[1]).is_empty(), "b skips day 1 and starts day 2");
        assert_eq!(run(1441, &[0]), vec![0], "a's second day is complete");
        assert_eq!(run(1442 + 1440, &[1]), vec![1], "different days need not be consecutive");
        assert!(run(1443 + 1440, &[0, 1]).is_empty(), "granted once");
    }
}
