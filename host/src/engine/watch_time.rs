//! Per-campaign watch-time per viewer, in memory.
//!
//! A SQL write per viewer per heartbeat cannot reach a million viewer-minutes
//! a second, so this state lives in memory and is checkpointed (changed rows
//! only) together with the inbox position; after a crash the engine loads the
//! checkpoint and replays the inbox from there.
//!
//! One minute counts once per viewer and campaign, whichever channels report
//! it: each viewer keeps its newest counted minute and a 64-bit mask of the 64
//! minutes up to it, so retries, other channels and late reports within an
//! hour are recognised. A report older than that window behind the viewer's
//! newest minute cannot be told apart and is not counted (never counted twice).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::store::WatchTimeRow;

/// A viewer's progress in one campaign.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Minutes counted.
    pub minutes: u32,
    /// Newest minute counted (unix minutes).
    pub last_minute: u32,
    /// Bit i set: minute `last_minute - i` was counted. Zero: nothing yet.
    pub recent_mask: u64,
}

impl Progress {
    /// Counts `minute` unless it was counted already; returns whether it counted.
    pub fn count(&mut self, minute: u32) -> bool {
        if self.recent_mask == 0 {
            *self = Progress { minutes: 1, last_minute: minute, recent_mask: 1 };
            return true;
        }
        if minute > self.last_minute {
            let shift = minute - self.last_minute;
            self.recent_mask = if shift >= 64 { 0 } else { self.recent_mask << shift };
            self.recent_mask |= 1;
            self.last_minute = minute;
        } else {
            let behind = self.last_minute - minute;
            if behind >= 64 {
                return false;
            }
            let bit = 1u64 << behind;
            if self.recent_mask & bit != 0 {
                return false;
            }
            self.recent_mask |= bit;
        }
        self.minutes = self.minutes.saturating_add(1);
        true
    }
}

/// Viewer ids interned to dense numbers: every campaign's map keys on a `u32`.
#[derive(Debug, Default)]
pub struct Interner {
    index: HashMap<Arc<str>, u32>,
    ids: Vec<Arc<str>>,
}

impl Interner {
    /// The number for an id, assigned on first sight.
    pub fn intern(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.index.get(id) {
            return n;
        }
        let n = self.ids.len() as u32;
        let id: Arc<str> = Arc::from(id);
        self.ids.push(id.clone());
        self.index.insert(id, n);
        n
    }

    /// The id for a number.
    pub fn id(&self, n: u32) -> &str {
        &self.ids[n as usize]
    }
}

/// Each viewer's progress were a minute counted, in the order given.
#[derive(Debug, Default)]
pub struct Tentative {
    rows: Vec<(u32, Progress, bool)>,
}

impl Tentative {
    /// (progress after the minute, whether the minute is new), per viewer.
    pub fn iter(&self) -> impl Iterator<Item = (Progress, bool)> + '_ {
        self.rows.iter().map(|&(_, p, new)| (p, new))
    }
}

#[derive(Debug, Default)]
struct CampaignProgress {
    viewers: HashMap<u32, Progress>,
    dirty: HashSet<u32>,
}

/// All watch-time the engine keeps.
#[derive(Debug, Default)]
pub struct WatchTime {
    interner: Interner,
    campaigns: HashMap<String, CampaignProgress>,
}

impl WatchTime {
    /// Rebuilds the state from checkpoint rows.
    pub fn restore(rows: Vec<WatchTimeRow>) -> WatchTime {
        let mut state = WatchTime::default();
        for row in rows {
            let viewer = state.interner.intern(&row.viewer_id);
            let progress =
                Progress { minutes: row.minutes, last_minute: row.last_minute, recent_mask: row.recent_mask };
            state.campaigns.entry(row.campaign_id).or_default().viewers.insert(viewer, progress);
        }
        state
    }

    /// What counting `minute` would make of each viewer's progress, without
    /// counting it: a rule decides first whether the minutes count.
    pub fn tentative<'a>(
        &mut self,
        campaign: &str,
        viewer_ids: impl Iterator<Item = &'a str>,
        minute: u32,
    ) -> Tentative {
        let progress = self.campaigns.get(campaign);
        let mut rows = Vec::with_capacity(viewer_ids.size_hint().0);
        for id in viewer_ids {
            let viewer = self.interner.intern(id);
            let mut p = progress.and_then(|c| c.viewers.get(&viewer)).copied().unwrap_or_default();
            let counted = p.count(minute);
            rows.push((viewer, p, counted));
        }
        Tentative { rows }
    }

    /// Stores the minutes of a [`WatchTime::tentative`]; returns how many were new.
    pub fn commit(&mut self, campaign: &str, tentative: &Tentative) -> u64 {
        let progress = match self.campaigns.get_mut(campaign) {
            Some(p) => p,
            None => self.campaigns.entry(campaign.to_string()).or_default(),
        };
        let mut counted = 0;
        for &(viewer, p, new) in &tentative.rows {
            // A viewer listed twice in one heartbeat is one minute.
            if new && progress.viewers.get(&viewer) != Some(&p) {
                progress.viewers.insert(viewer, p);
                progress.dirty.insert(viewer);
                counted += 1;
            }
        }
        counted
    }

    /// A viewer's progress in a campaign.
    pub fn progress(&self, campaign: &str, viewer_id: &str) -> Progress {
        let Some(&viewer) = self.interner.index.get(viewer_id) else { return Progress::default() };
        self.campaigns.get(campaign).and_then(|c| c.viewers.get(&viewer)).copied().unwrap_or_default()
    }

    /// Rows changed since the last [`WatchTime::clear_dirty`].
    pub fn dirty_rows(&self) -> Vec<WatchTimeRow> {
        let mut rows = Vec::new();
        for (campaign, progress) in &self.campaigns {
            for viewer in &progress.dirty {
                let p = progress.viewers[viewer];
                rows.push(WatchTimeRow {
                    campaign_id: campaign.clone(),
                    viewer_id: self.interner.id(*viewer).to_string(),
                    minutes: p.minutes,
                    last_minute: p.last_minute,
                    recent_mask: p.recent_mask,
                });
            }
        }
        rows
    }

    /// Forgets what changed, after a checkpoint saved it.
    pub fn clear_dirty(&mut self) {
        for progress in self.campaigns.values_mut() {
            progress.dirty.clear();
        }
    }

    /// Ids interned, whether or not any campaign counts a minute of theirs.
    pub fn interned(&self) -> usize {
        self.interner.ids.len()
    }

    /// Drops interned ids that no campaign holds progress for (viewers of
    /// heartbeats whose minutes did not count, or whose call failed), once
    /// they are most of the interner: it would otherwise only grow. Run at
    /// checkpoints, where no [`Tentative`] is alive.
    pub fn compact(&mut self) -> usize {
        let held: HashSet<u32> = self.campaigns.values().flat_map(|c| c.viewers.keys().copied()).collect();
        let unheld = self.interner.ids.len() - held.len();
        if unheld <= held.len().max(1024) {
            return 0;
        }
        let mut fresh = Interner::default();
        let mut renumber: HashMap<u32, u32> = HashMap::with_capacity(held.len());
        for &old in &held {
            renumber.insert(old, fresh.intern(&self.interner.ids[old as usize]));
        }
        for progress in self.campaigns.values_mut() {
            progress.viewers = progress.viewers.drain().map(|(v, p)| (renumber[&v], p)).collect();
            progress.dirty = progress.dirty.drain().map(|v| renumber[&v]).collect();
        }
        self.interner = fresh;
        unheld
    }

    /// Total minutes counted over every campaign and viewer.
    pub fn total_minutes(&self) -> u64 {
        self.campaigns.values().flat_map(|c| c.viewers.values()).map(|p| p.minutes as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_no_campaign_holds_are_compacted_away() {
        let mut wt = WatchTime::default();
        let kept = wt.tentative("c", ["keep"].into_iter(), 100);
        wt.commit("c", &kept);
        let ids: Vec<String> = (0..5000).map(|i| format!("idle-{i}")).collect();
        // Minutes the rule did not count: interned, never committed.
        let _ = wt.tentative("c", ids.iter().map(String::as_str), 101);
        assert_eq!(wt.interned(), 5001);
        assert_eq!(wt.compact(), 5000);
        assert_eq!(wt.interned(), 1);
        assert_eq!(wt.progress("c", "keep").minutes, 1);
        assert_eq!(wt.dirty_rows().len(), 1, "dirty rows survive the renumbering");
    }

    impl WatchTime {
        /// Counts one viewer's minute, as the engine does when a rule lets it count.
        fn count(&mut self, campaign: &str, viewer_id: &str, minute: u32) {
            let tentative = self.tentative(campaign, std::iter::once(viewer_id), minute);
            self.commit(campaign, &tentative);
        }
    }

    #[test]
    fn a_minute_counts_once_in_any_order() {
        let mut p = Progress::default();
        assert!(p.count(100));
        assert!(!p.count(100), "same minute, another channel");
        assert!(p.count(102));
        assert!(p.count(101), "a late report of a missed minute");
        assert!(!p.count(101));
        assert_eq!(p.minutes, 3);
        assert!(!p.count(102 - 64), "older than the window: never double-counted");
        assert!(p.count(102 + 200));
        assert_eq!(p.minutes, 4);
    }

    #[test]
    fn dirty_rows_round_trip_through_restore() {
        let mut state = WatchTime::default();
        state.count("c", "v1", 10);
        state.count("c", "v1", 11);
        state.count("d", "v1", 11);
        let rows = state.dirty_rows();
        assert_eq!(rows.len(), 2);
        let restored = WatchTime::restore(rows);
        assert_eq!(restored.progress("c", "v1").minutes, 2);
        assert_eq!(restored.progress("d", "v1").minutes, 1);
        state.clear_dirty();
        assert!(state.dirty_rows().is_empty());
    }

    #[test]
    fn tentative_minutes_count_only_when_committed() {
        let mut state = WatchTime::default();
        state.count("c", "v1", 10);
        let t = state.tentative("c", ["v1", "v2", "v1"].into_iter(), 11);
        let seen: Vec<_> = t.iter().map(|(p, new)| (p.minutes, new)).collect();
        assert_eq!(seen, [(2, true), (1, true), (2, true)]);
        assert_eq!(state.progress("c", "v1").minutes, 1, "nothing stored before the commit");
        assert_eq!(state.commit("c", &t), 2, "v1 listed twice is one minute");
        assert_eq!(state.progress("c", "v1").minutes, 2);
        assert_eq!(state.progress("c", "v2").minutes, 1);
    }

    #[test]
    fn counting_matches_a_set_of_minutes() {
        // Any order of reports within the window counts each distinct minute once.
        let minutes = [5u32, 3, 5, 9, 1, 3, 40, 2, 9, 60, 61, 30];
        let mut p = Progress::default();
        let counted = minutes.iter().filter(|&&m| p.count(m)).count();
        let distinct: std::collections::BTreeSet<_> = minutes.iter().collect();
        assert_eq!(counted, distinct.len());
        assert_eq!(p.minutes as usize, distinct.len());
    }
}
