//! Time-based tiers, shared by rules that grant on watch-time.

use serde::Deserialize;

use crate::{Campaign, Grant, Viewer};

/// One tier: `minutes` of campaign watch-time earns `reward`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub minutes: u32,
    pub reward: String,
}

/// Checks `config.tiers`: at least one, each at least a minute, each reward the campaign's.
pub fn validate(tiers: &[Tier], campaign: &Campaign) -> Result<(), String> {
    if tiers.is_empty() {
        return Err("config.tiers: at least one tier is needed".into());
    }
    for (i, tier) in tiers.iter().enumerate() {
        if tier.minutes == 0 {
            return Err(format!("config.tiers[{i}].minutes: must be at least 1"));
        }
        campaign.reward_index(&tier.reward).map_err(|e| format!("config.tiers[{i}].reward: {e}"))?;
    }
    Ok(())
}

/// Grants each tier's reward the first time a viewer's watch-time reaches
/// it. A tier is reached by the minute that crosses it; earlier minutes
/// were judged by earlier calls, so each tier is granted once.
pub fn grants(tiers: &[Tier], campaign: &Campaign, viewers: &[Viewer]) -> Vec<Grant> {
    let tiers: Vec<(u32, u32)> =
        tiers.iter().filter_map(|t| campaign.reward_index(&t.reward).ok().map(|r| (t.minutes, r))).collect();
    let mut grants = Vec::new();
    for viewer in viewers.iter().filter(|v| v.counted) {
        for &(minutes, reward) in &tiers {
            if viewer.minutes == minutes {
                grants.push(Grant::once(viewer.handle, reward));
            }
        }
    }
    grants
}
