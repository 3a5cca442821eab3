//! Per-campaign watch-time per viewer, in memory.
//!
//! A SQL write per viewer per heartbeat cannot reach a million viewer-minutes
//! a second, so this state lives in memory and is checkpointed together with
//! the inbox position; after a crash the engine loads the checkpoint and
//! replays the inbox from there. A checkpoint takes a [`WatchTime::snapshot`]:
//! each changed campaign's changed viewers (or all of them, as a base)
//! encoded into compressed column segments (`store::WatchTimeColumns`), which
//! the store then writes while evaluation goes on.
//!
//! One minute counts once per viewer and campaign, whichever channels report
//! it: each viewer keeps its newest counted minute and a 64-bit mask of the 64
//! minutes up to it, so retries, other channels and late reports within an
//! hour are recognised. A report older than that window behind the viewer's
//! newest minute cannot be told apart and is not counted (never counted twice).

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::quality::RandomState;

use hashbrown::HashTable;

use super::viewer_table::{ViewerSet, ViewerTable};
use crate::store::{CampaignViewers, StoreError, WatchTimeColumns, WatchTimeRow, ROWS_PER_SEGMENT, TOP_VIEWERS_KEPT};

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

/// One campaign's share of a checkpoint, encoded and ready to store.
#[derive(Debug)]
pub struct CampaignSnapshot {
    pub campaign_id: String,
    /// Whether `segments` hold every viewer (older segments are then dropped)
    /// or only those changed since the last snapshot.
    pub base: bool,
    /// (rows, stored form) of each segment, in order.
    pub segments: Vec<(usize, Vec<u8>)>,
    /// What the console shows of the campaign's viewers.
    pub viewers: CampaignViewers,
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
    viewers: ViewerTable<Progress>,
    dirty: ViewerSet,
    /// Every viewer's minutes added up.
    minutes: u64,
    /// Rows in the stored segments (a restart reads them all).
    stored_rows: u64,
    /// Restored from the rows of an older host: the next snapshot writes a base.
    needs_base: bool,
}

impl CampaignProgress {
    /// Sets a viewer's progress, keeping the minutes' total.
    fn set(&mut self, viewer: u32, p: Progress) {
        let old = self.viewers.insert(viewer, p).map_or(0, |o| u64::from(o.minutes));
        self.minutes = (self.minutes + u64::from(p.minutes)).saturating_sub(old);
    }

    /// Encodes the rows a snapshot takes (all, or the changed ones) into
    /// segments. Evaluation waits meanwhile, so a campaign of more than one
    /// segment is a pipeline: this thread fills columns, walking the map
    /// once, and a thread per core encodes and compresses each full one.
    fn encode(&self, interner: &Interner, base: bool) -> Result<Vec<(usize, Vec<u8>)>, StoreError> {
        let total = if base { self.viewers.len() } else { self.dirty.len() };
        let mut rows: Box<dyn Iterator<Item = (u32, &Progress)> + '_> = if base {
            Box::new(self.viewers.iter())
        } else {
            Box::new(self.dirty.iter().filter_map(|v| self.viewers.get(v).map(|p| (v, p))))
        };
        let fill = |rows: &mut dyn Iterator<Item = (u32, &Progress)>| {
            let mut columns = WatchTimeColumns::with_capacity(SEGMENT_ROWS.min(total));
            for (viewer, p) in rows.take(SEGMENT_ROWS) {
                columns.push(interner.id(viewer), p.minutes, p.last_minute, p.recent_mask);
            }
            columns
        };
        if total <= SEGMENT_ROWS {
            let columns = fill(&mut rows);
            return Ok(vec![(columns.len(), columns.encode()?)]);
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let (to_encode, queue) = std::sync::mpsc::sync_channel::<(usize, WatchTimeColumns)>(threads);
        let queue = std::sync::Mutex::new(queue);
        let mut done: Vec<(usize, usize, Result<Vec<u8>, StoreError>)> = std::thread::scope(|scope| {
            let encoders: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            // A poisoned lock still hands out work: the producer must not wait on a full queue.
                            let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).recv();
                            let Ok((i, columns)) = next else { break };
                            out.push((i, columns.len(), columns.encode()));
                        }
                        out
                    })
                })
                .collect();
            for i in 0.. {
                let columns = fill(&mut rows);
                if columns.is_empty() || to_encode.send((i, columns)).is_err() {
                    break;
                }
            }
            drop(to_encode);
            encoders.into_iter().flat_map(|e| e.join().unwrap_or_default()).collect()
        });
        done.sort_unstable_by_key(|(i, ..)| *i);
        let segments: Vec<(usize, Vec<u8>)> =
            done.into_iter().map(|(_, rows, data)| data.map(|d| (rows, d))).collect::<Result<_, _>>()?;
        if segments.iter().map(|(rows, _)| rows).sum::<usize>() != total {
            return Err(StoreError::Encode("a watch-time segment's encoder failed".into()));
        }
        Ok(segments)
    }

    /// The longest watchers, longest first (ties by id), at most [`TOP_VIEWERS_KEPT`].
    fn top(&self, interner: &Interner) -> Vec<(String, u32)> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut heap: BinaryHeap<Reverse<(u32, Reverse<&str>)>> = BinaryHeap::with_capacity(TOP_VIEWERS_KEPT + 1);
        for (viewer, p) in self.viewers.iter() {
            let entry = (p.minutes, Reverse(interner.id(viewer)));
            // Most viewers rank below the hundredth: one comparison, no push and pop.
            if heap.len() == TOP_VIEWERS_KEPT && heap.peek().is_some_and(|Reverse(least)| entry <= *least) {
                continue;
            }
            heap.push(Reverse(entry));
            if heap.len() > TOP_VIEWERS_KEPT {
                heap.pop();
            }
        }
        let mut top: Vec<(String, u32)> =
            heap.into_iter().map(|Reverse((minutes, Reverse(id)))| (id.to_string(), minutes)).collect();
        top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top
    }
}

/// Rows per segment (the store's; smaller in unit tests, so they cover several).
#[cfg(not(test))]
const SEGMENT_ROWS: usize = ROWS_PER_SEGMENT;
#[cfg(test)]
const SEGMENT_ROWS: usize = ROWS_PER_SEGMENT / 4096;

/// All watch-time the engine keeps.
#[derive(Debug, Default)]
pub struct WatchTime {
    interner: Interner,
    campaigns: HashMap<String, CampaignProgress>,
}

impl WatchTime {
    /// Rebuilds the state from rows an older host stored a row at a time;
    /// their campaigns' next snapshot writes a base, which replaces them.
    pub fn restore(rows: Vec<WatchTimeRow>) -> WatchTime {
        let mut state = WatchTime::default();
        for row in rows {
            let viewer = state.interner.intern(&row.viewer_id);
            let progress =
                Progress { minutes: row.minutes, last_minute: row.last_minute, recent_mask: row.recent_mask };
            let campaign = state.campaigns.entry(row.campaign_id).or_default();
            campaign.set(viewer, progress);
            campaign.needs_base = true;
        }
        state
    }

    /// Applies a stored segment of `campaign`: its rows replace what the
    /// state held for those viewers (segments are applied oldest first).
    pub fn apply_segment(&mut self, campaign: &str, segment: &WatchTimeColumns) {
        let WatchTime { interner, campaigns } = self;
        let progress = match campaigns.get_mut(campaign) {
            Some(p) => p,
            None => campaigns.entry(campaign.to_string()).or_default(),
        };
        for (id, minutes, last_minute, recent_mask) in segment.rows() {
            progress.set(interner.intern(id), Progress { minutes, last_minute, recent_mask });
        }
        progress.stored_rows += segment.len() as u64;
    }

    /// Encodes what changed since the last snapshot, campaign by campaign, and
    /// forgets that it changed. A campaign whose stored segments would
    /// otherwise hold more than twice its viewers is written whole (a base),
    /// so a restart reads at most that and a change is written about twice;
    /// so is one where half its viewers or more changed, since such a delta
    /// costs about what a base does and a base lets the restart read half.
    pub fn snapshot(&mut self) -> Result<Vec<CampaignSnapshot>, StoreError> {
        let WatchTime { interner, campaigns } = self;
        let mut out = Vec::new();
        for (campaign_id, progress) in campaigns.iter_mut() {
            if progress.dirty.is_empty() && !progress.needs_base {
                continue;
            }
            let (viewers, dirty) = (progress.viewers.len() as u64, progress.dirty.len() as u64);
            let base = progress.needs_base
                || progress.stored_rows == 0
                || progress.stored_rows + dirty > 2 * viewers
                || 2 * dirty >= viewers;
            let segments = progress.encode(interner, base)?;
            progress.stored_rows = if base { viewers } else { progress.stored_rows + dirty };
            progress.needs_base = false;
            progress.dirty.clear();
            out.push(CampaignSnapshot {
                campaign_id: campaign_id.clone(),
                base,
                segments,
                viewers: CampaignViewers {
                    campaign_id: campaign_id.clone(),
                    viewers,
                    minutes: progress.minutes,
                    top: progress.top(interner),
                },
            });
        }
        Ok(out)
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
            let mut p = progress.and_then(|c| c.viewers.get(viewer)).copied().unwrap_or_default();
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
            if new && progress.viewers.get(viewer) != Some(&p) {
                progress.set(viewer, p);
                progress.dirty.insert(viewer);
                counted += 1;
            }
        }
        counted
    }

    /// A viewer's progress in a campaign.
    pub fn progress(&self, campaign: &str, viewer_id: &str) -> Progress {
        let Some(viewer) = self.interner.get(viewer_id) else { return Progress::default() };
        self.campaigns.get(campaign).and_then(|c| c.viewers.get(viewer)).copied().unwrap_or_default()
    }

    /// Viewers changed since the last snapshot, over every campaign.
    pub fn dirty_count(&self) -> usize {
        self.campaigns.values().map(|c| c.dirty.len()).sum()
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
        let mut held = ViewerSet::default();
        for c in self.campaigns.values() {
            for (v, _) in c.viewers.iter() {
                held.insert(v);
            }
        }
        let unheld = self.interner.len() - held.len();
        if unheld <= held.len().max(1024) {
            return 0;
        }
        // Renumbered in the old order, so each campaign's viewers stay together.
        let mut fresh = Interner::default();
        let mut renumber = vec![u32::MAX; self.interner.len()];
        for old in held.iter() {
            renumber[old as usize] = fresh.intern(self.interner.id(old));
        }
        for progress in self.campaigns.values_mut() {
            let mut viewers = ViewerTable::default();
            for (v, p) in progress.viewers.iter() {
                viewers.insert(renumber[v as usize], *p);
            }
            let mut dirty = ViewerSet::default();
            for v in progress.dirty.iter() {
                dirty.insert(renumber[v as usize]);
            }
            progress.viewers = viewers;
            progress.dirty = dirty;
        }
        self.interner = fresh;
        unheld
    }

    /// Total minutes counted over every campaign and viewer.
    pub fn total_minutes(&self) -> u64 {
        self.campaigns.values().map(|c| c.minutes).sum()
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
        assert_eq!(wt.dirty_count(), 1, "dirty rows survive the renumbering");
        let snapshot = wt.snapshot().unwrap();
        let rows = WatchTimeColumns::decode(&snapshot[0].segments[0].1, 0).unwrap();
        assert_eq!(rows.rows().next(), Some(("keep", 1, 100, 1)), "written under its id, not its old number");
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

    /// Restores a state from snapshots' segments, as a restart does.
    fn restored(snapshots: &[Vec<CampaignSnapshot>]) -> WatchTime {
        let mut state = WatchTime::default();
        for snapshot in snapshots {
            for campaign in snapshot {
                for (_, data) in &campaign.segments {
                    state.apply_segment(&campaign.campaign_id, &WatchTimeColumns::decode(data, 0).unwrap());
                }
            }
        }
        state
    }

    #[test]
    fn snapshots_round_trip_through_restore() {
        let mut state = WatchTime::default();
        state.count("c", "v1", 10);
        state.count("c", "v1", 11);
        state.count("d", "v1", 11);
        let first = state.snapshot().unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|c| c.base), "a new campaign's first snapshot is whole");
        assert_eq!(state.dirty_count(), 0);
        assert!(state.snapshot().unwrap().is_empty(), "nothing changed, nothing written");
        let restored = restored(&[first]);
        assert_eq!(restored.progress("c", "v1").minutes, 2);
        assert_eq!(restored.progress("d", "v1").minutes, 1);
        assert_eq!(restored.total_minutes(), 3);
    }

    #[test]
    fn deltas_carry_only_changed_viewers_until_a_base_is_cheaper() {
        let mut state = WatchTime::default();
        let ids: Vec<String> = (0..3000).map(|i| format!("v{i}")).collect();
        for id in &ids {
            state.count("c", id, 100);
        }
        let mut snapshots = vec![state.snapshot().unwrap()];
        assert_eq!(snapshots[0][0].segments.iter().map(|s| s.0).sum::<usize>(), 3000);
        assert!(snapshots[0][0].segments.len() > 1, "several segments");
        // A tenth of the viewers watch on: deltas of 300 rows...
        for minute in 101..=111 {
            for id in ids.iter().take(300) {
                state.count("c", id, minute);
            }
            let snapshot = state.snapshot().unwrap();
            let rows: usize = snapshot[0].segments.iter().map(|s| s.0).sum();
            if snapshot[0].base {
                // ...until the log would pass twice the viewers: 3000 + 11 x 300 > 6000.
                assert_eq!((minute, rows), (111, 3000));
            } else {
                assert_eq!(rows, 300, "minute {minute}");
            }
            snapshots.push(snapshot);
        }
        // When most viewers watch on, every snapshot is a base.
        for id in ids.iter().take(1500) {
            state.count("c", id, 112);
        }
        assert!(state.snapshot().unwrap()[0].base, "half the viewers changed: a base");
        let everything = restored(&snapshots);
        let from_base = restored(&snapshots[snapshots.len() - 1..]);
        for restored in [everything, from_base] {
            assert_eq!(restored.progress("c", "v0").minutes, 12);
            assert_eq!(restored.progress("c", "v2999").minutes, 1);
            assert_eq!(restored.total_minutes(), 300 * 12 + 2700);
        }
        let top = &snapshots[snapshots.len() - 1][0].viewers.top;
        assert_eq!(top.len(), TOP_VIEWERS_KEPT);
        assert_eq!(top[0], ("v0".to_string(), 12), "longest first, ties by id");
        assert_eq!(top[1], ("v1".to_string(), 12));
    }

    #[test]
    fn rows_of_an_older_host_are_replaced_by_a_base() {
        let old = vec![WatchTimeRow {
            campaign_id: "c".into(),
            viewer_id: "v1".into(),
            minutes: 5,
            last_minute: 10,
            recent_mask: 0b11111,
        }];
        let mut state = WatchTime::restore(old);
        let snapshot = state.snapshot().unwrap();
        assert!(snapshot[0].base, "the first snapshot after an older host's rows is whole");
        assert_eq!(restored(&[snapshot]).progress("c", "v1").minutes, 5);
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
