//! Engine partitions: campaigns are hashed over a fixed number of
//! partitions, and each partition is evaluated by one engine at a time (one
//! host holds its lease). Everything a campaign's decisions depend on (its
//! watch-time, rules' state, circuit breaker) lives in one partition; what
//! every campaign reads per broadcaster (game state, who is watching) is
//! derived from the shared inbox, so each partition keeps its own copy.

use std::sync::Arc;

pub use crate::domain::partition_of;
use crate::rules::RuleSet;
use crate::store::PartitionKey;

/// Whether `campaign_id` is in the partition.
pub fn owns(key: &PartitionKey, campaign_id: &str) -> bool {
    key.count <= 1 || partition_of(campaign_id, key.count) == key.index
}

/// A partition's share of the rules in force, rebuilt only when the set changes.
pub struct RulesView {
    key: PartitionKey,
    source: Option<Arc<RuleSet>>,
    view: Arc<RuleSet>,
}

impl RulesView {
    /// A view for the partition `key`.
    pub fn new(key: &PartitionKey) -> RulesView {
        RulesView { key: key.clone(), source: None, view: Arc::default() }
    }

    /// The campaigns of `rules` in this partition (the set itself when there is one partition).
    pub fn of(&mut self, rules: Arc<RuleSet>) -> Arc<RuleSet> {
        if self.key.count <= 1 {
            return rules;
        }
        if !self.source.as_ref().is_some_and(|s| Arc::ptr_eq(s, &rules)) {
            self.view = Arc::new(rules.only(|id| owns(&self.key, id)));
            self.source = Some(rules);
        }
        self.view.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_cover_every_campaign_once() {
        // Fixed values: a host of another version must agree.
        assert_eq!(partition_of("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as u32);
        assert_eq!(partition_of("anything", 1), 0);
        for id in ["tiers", "boss-kill", "launch-week", "ünïcødé"] {
            let owners: Vec<u32> =
                (0..4).filter(|&index| owns(&PartitionKey { index, count: 4, fence: None }, id)).collect();
            assert_eq!(owners, vec![partition_of(id, 4)], "{id}");
        }
    }
}
