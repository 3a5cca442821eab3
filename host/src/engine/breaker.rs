//! The per-campaign circuit breaker.
//!
//! A campaign whose plugin fails `threshold` calls in a row is paused alone:
//! the engine stops evaluating it (its watch-time included) and remembers the
//! first event of the failing streak. When a new plugin version or campaign
//! revision serves it, the engine evaluates the events from there for that
//! campaign, in inbox order, then resumes it: the failed calls changed
//! nothing (their state writes were discarded), so nothing of the streak or
//! of the pause is lost, and the campaign's state ends up as if it had never
//! stopped.

use std::collections::{BTreeMap, HashMap};

use crate::domain::Paused;
use crate::rules::RuleSet;

/// Failure counts and paused campaigns.
#[derive(Debug, Clone)]
pub struct Breakers {
    threshold: u32,
    /// Per campaign: failures in a row, and the event of the first.
    failures: HashMap<String, (u32, i64)>,
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
        if self.failures.contains_key(campaign) {
            self.failures.remove(campaign);
        }
    }

    /// A call failed at event `seq`; returns true if this opened the breaker.
    pub fn failure(&mut self, campaign: &str, seq: i64, plugin_hash: &str, revision: &str, reason: String) -> bool {
        let (n, first) = self.failures.entry(campaign.to_string()).or_insert((0, seq));
        *n += 1;
        if *n < self.threshold {
            return false;
        }
        let since_seq = *first;
        self.failures.remove(campaign);
        let paused =
            Paused { since_seq, plugin_hash: plugin_hash.to_string(), campaign_revision: revision.to_string(), reason };
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

    /// Keeps each paused campaign's backlog to at most `max_events` behind
    /// `cursor`: the inbox keeps viewer lists for a paused campaign, so a
    /// campaign left broken for weeks would otherwise keep them all. The
    /// oldest events beyond the cap are given up for that campaign; returns
    /// (campaign, events given up).
    pub fn cap_backlog(&mut self, cursor: i64, max_events: u64) -> Vec<(String, u64)> {
        let floor = cursor.saturating_sub(i64::try_from(max_events).unwrap_or(i64::MAX)) + 1;
        let mut dropped = Vec::new();
        for (campaign, paused) in &mut self.paused {
            if paused.since_seq < floor {
                dropped.push((campaign.clone(), (floor - paused.since_seq) as u64));
                paused.since_seq = floor;
            }
        }
        dropped
    }

    /// Events kept for paused campaigns: the longest backlog, as of `cursor`.
    pub fn backlog(&self, cursor: i64) -> u64 {
        self.oldest_needed().map_or(0, |since| (cursor - since + 1).max(0) as u64)
    }

    /// The oldest event a paused campaign, or one failing now (which may
    /// pause from its first failure), still needs: its viewer lists must be kept.
    pub fn oldest_needed(&self) -> Option<i64> {
        let failing = self.failures.values().map(|(_, first)| *first);
        self.paused.values().map(|p| p.since_seq).chain(failing).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_of_failures_in_a_row() {
        let mut b = Breakers::new(3);
        assert!(!b.failure("c", 1, "h", "r", "trap".into()));
        assert_eq!(b.oldest_needed(), Some(1), "a failing streak keeps its events");
        b.success("c");
        assert_eq!(b.oldest_needed(), None);
        assert!(!b.failure("c", 2, "h", "r", "trap".into()));
        assert!(!b.failure("c", 3, "h", "r", "trap".into()));
        assert!(b.failure("c", 4, "h", "r", "trap".into()), "third in a row");
        assert!(b.is_paused("c") && !b.is_paused("d"));
        assert_eq!(b.oldest_needed(), Some(2), "from the first failure of the streak");
        assert_eq!(b.backlog(104), 103);
        assert_eq!(b.cap_backlog(104, 10), vec![("c".to_string(), 93)]);
        assert_eq!((b.oldest_needed(), b.backlog(104)), (Some(95), 10));
        b.resume("c");
        assert!(!b.is_paused("c"));
    }
}
