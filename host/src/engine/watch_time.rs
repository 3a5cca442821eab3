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
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use crate::store::{WatchTimeRow, WatchTimeRows};

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
/// The ids live end to end in one buffer, indexed by a table of numbers:
/// about 12 bytes per id besides its own, where a map of strings costs about
/// 90, which is most of the difference at ten million viewers.
#[derive(Debug, Default)]
pub struct Interner {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<u64>,
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Interner {
    /// The number for an id, assigned on first sight.
    pub fn intern(&mut self, id: &str) -> u32 {
        let Interner { text, ends, index, hasher } = self;
        let hash = hasher.hash_one(id);
        if let Some(&n) = index.find(hash, |&n| slice(text, ends, n) == id) {
            return n;
        }
        let n = ends.len() as u32;
        text.push_str(id);
        ends.push(text.len() as u64);
        index.insert_unique(hash, n, |&m| hasher.hash_one(slice(text, ends, m)));
        n
    }

    /// The number of an id already interned.
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.find(self.hasher.hash_one(id), |&n| self.id(n) == id).copied()
    }

    /// The id for a number.
    pub fn id(&self, n: u32) -> &str {
        slice(&self.text, &self.ends, n)
    }

    /// Ids interned.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether no id is interned.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Id `n` of an interner's buffer (empty for a number never given out).
fn slice<'a>(text: &'a str, ends: &[u64], n: u32) -> &'a str {
    let n = n as usize;
    let end = ends.get(n).map_or(0, |&e| e as usize);
    let start = if n == 0 { 0 } else { ends.get(n - 1).map_or(0, |&e| e as usize) };
    text.get(start..end).unwrap_or_default()
}

/// The changed rows of a checkpoint: 8 bytes per row until the store asks
/// for a statement's worth of them.
pub struct DirtyRows<'a> {
    watch_time: &'a WatchTime,
    campaigns: Vec<(&'a str, &'a CampaignProgress)>,
    /// (index into `campaigns`, viewer).
    changed: Vec<(u32, u32)>,
}

impl WatchTimeRows for DirtyRows<'_> {
    fn count(&self) -> usize {
        self.changed.len()
    }

    fn rows(&self, range: std::ops::Range<usize>) -> Vec<WatchTimeRow> {
        let changed = self.changed.get(range).unwrap_or_default();
        changed
            .iter()
            .filter_map(|&(c, viewer)| {
                let (campaign, progress) = self.campaigns.get(c as usize)?;
                let p = progress.viewers.get(&viewer)?;
                Some(WatchTimeRow {
                    campaign_id: campaign.to_string(),
                    viewer_id: self.watch_time.interner.id(viewer).to_string(),
                    minutes: p.minutes,
                    last_minute: p.last_minute,
                    recent_mask: p.recent_mask,
                })
            })
            .collect()
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
        let Some(viewer) = self.interner.get(viewer_id) else { return Progress::default() };
        self.campaigns.get(campaign).and_then(|c| c.viewers.get(&viewer)).copied().unwrap_or_default()
    }

    /// Rows changed since the last [`WatchTime::clear_dirty`], made on demand.
    pub fn dirty_rows(&self) -> DirtyRows<'_> {
        let campaigns: Vec<(&str, &CampaignProgress)> = self.campaigns.iter().map(|(c, p)| (c.as_str(), p)).collect();
        let changed = campaigns
            .iter()
            .enumerate()
            .flat_map(|(c, (_, progress))| progress.dirty.iter().map(move |&viewer| (c as u32, viewer)))
            .collect();
        DirtyRows { watch_time: self, campaigns, changed }
    }

    /// Forgets what changed, after a checkpoint saved it.
    pub fn clear_dirty(&mut self) {
        for progress in self.campaigns.values_mut() {
            progress.dirty.clear();
        }
    }

    /// Ids interned, whether or not any campaign counts a minute of theirs.
    pub fn interned(&self) -> usize {
        self.interner.len()
    }

    /// Drops interned ids that no campaign holds progress for (viewers of
    /// heartbeats whose minutes did not count, or whose call failed), once
    /// they are most of the interner: it would otherwise only grow. Run at
    /// checkpoints, where no [`Tentative`] is alive.
    pub fn compact(&mut self) -> usize {
        let held: HashSet<u32> = self.campaigns.values().flat_map(|c| c.viewers.keys().copied()).collect();
        let unheld = self.interner.len() - held.len();
        if unheld <= held.len().max(1024) {
            return 0;
        }
        let mut fresh = Interner::default();
        let mut renumber: HashMap<u32, u32> = HashMap::with_capacity(held.len());
        for &old in &held {
            renumber.insert(old, fresh.intern(self.interner.id(old)));
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
        assert_eq!(wt.dirty_rows().count(), 1, "dirty rows survive the renumbering");
    }

    impl WatchTime {
        /// Counts one viewer's minute, as the engine does when a rule lets it count.
        fn count(&mut self, campaign: &str, viewer_id: &str, minute: u32) {
            let tentative = self.tentative(campaign, std::iter::once(viewer_id), minute);
            self.commit(campaign, &tentative);
        }
    }

    #[test]
    fn the_interner_gives_each_id_one_number() {
        let mut interner = Interner::default();
        let ids: Vec<String> =
            (0..10_000).map(|i| format!("viewer-{i}")).chain(["é✓".to_string(), String::new()]).collect();
        let numbers: Vec<u32> = ids.iter().map(|id| interner.intern(id)).collect();
        assert_eq!(numbers, (0..ids.len() as u32).collect::<Vec<_>>());
        for (id, n) in ids.iter().zip(&numbers) {
            assert_eq!((interner.intern(id), interner.get(id), interner.id(*n)), (*n, Some(*n), id.as_str()));
        }
        assert_eq!(interner.get("never-seen"), None);
        assert_eq!(interner.len(), ids.len());
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
        let dirty = state.dirty_rows();
        assert_eq!(dirty.count(), 2);
        let restored = WatchTime::restore(dirty.rows(0..2));
        assert_eq!(restored.progress("c", "v1").minutes, 2);
        assert_eq!(restored.progress("d", "v1").minutes, 1);
        state.clear_dirty();
        assert_eq!(state.dirty_rows().count(), 0);
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
