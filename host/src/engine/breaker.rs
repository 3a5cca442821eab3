//! The per-campaign circuit breaker.
//!
//! A campaign whose plugin fails `threshold` calls in a row is paused alone:
//! the engine stops evaluating it (its watch-time included) and remembers the
//! first event it skipped. When a new plugin version or campaign revision
//! serves it, the engine evaluates the skipped events for that campaign, in
//! inbox order, then resumes it: nothing seen while paused is lost, and the
//! campaign's state ends up as if it had never stopped.

use std::collections::{BTreeMap, HashMap};

use crate::domain::Paused;
use crate::rules::RuleSet;

/// Failure counts and paused campaigns.
#[derive(Debug, Clone)]
pub struct Breakers {
    threshold: u32,
    failures: HashMap<String, u32>,
    paused: BTreeMap<String, Paused>,
}

impl Breakers {
    /// Breakers that open after `threshold` failures in a row.
    pub fn new(threshold: u32) -> Breakers {
        Breakers { threshold: threshold.max(1), failures: HashMap::new(), paused: BTreeMap::new() }
    }

    /// Whether a campaign is paused.
    pub fn is_paused(&self, campaign: &str) -> bool {
        self.paused.contains_key(campaign)
    }

    /// A call succeeded.
    pub fn success(&mut self, campaign: &str) {
        if self.failures.get(campaign).is_some_and(|&n| n > 0) {
            self.failures.remove(campaign);
        }
    }

    /// A call failed at event `seq`; returns true if this opened the breaker.
    pub fn failure(&mut self, campaign: &str, seq: i64, plugin_hash: &str, revision: &str, reason: String) -> bool {
        let n = self.failures.entry(campaign.to_string()).or_default();
        *n += 1;
        if *n < self.threshold {
            return false;
        }
        self.failures.remove(campaign);
        let paused = Paused {
            since_seq: seq + 1,
            plugin_hash: plugin_hash.to_string(),
            campaign_revision: revision.to_string(),
            reason,
        };
        self.paused.insert(campaign.to_string(), paused);
        true
    }

    /// Paused campaigns that can resume under `rules` (a new plugin version or
    /// campaign revision), or are gone from it.
    pub fn resumable(&self, rules: &RuleSet) -> Vec<(String, Paused)> {
        self.paused
            .iter()
            .filter(|(id, p)| {
                rules.campaign(id).is_none_or(|c| c.plugin.hash.0 != p.plugin_hash || c.revision != p.campaign_revision)
            })
            .map(|(id, p)| (id.clone(), p.clone()))
            .collect()
    }

    /// Resumes a campaign.
    pub fn resume(&mut self, campaign: &str) {
        self.paused.remove(campaign);
        self.failures.remove(campaign);
    }

    /// The paused campaigns.
    pub fn paused(&self) -> &BTreeMap<String, Paused> {
        &self.paused
    }

    /// Restores a pause from a checkpoint.
    pub fn restore(&mut self, campaign: String, paused: Paused) {
        self.paused.insert(campaign, paused);
    }

    /// The oldest event a paused campaign still needs (its viewer lists must be kept).
    pub fn oldest_needed(&self) -> Option<i64> {
        self.paused.values().map(|p| p.since_seq).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_of_failures_in_a_row() {
        let mut b = Breakers::new(3);
        assert!(!b.failure("c", 1, "h", "r", "trap".into()));
        b.success("c");
        assert!(!b.failure("c", 2, "h", "r", "trap".into()));
        assert!(!b.failure("c", 3, "h", "r", "trap".into()));
        assert!(b.failure("c", 4, "h", "r", "trap".into()), "third in a row");
        assert!(b.is_paused("c") && !b.is_paused("d"));
        assert_eq!(b.oldest_needed(), Some(5));
        b.resume("c");
        assert!(!b.is_paused("c"));
    }
}
