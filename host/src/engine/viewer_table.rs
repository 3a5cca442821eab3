//! Per-campaign tables keyed by interned viewer numbers (see
//! `watch_time::Interner`): dense pages instead of hash maps.
//!
//! Profiling the record channel (9.3 M viewers a minute, `perf record` of
//! `benches/record_channel.sh`) put a third of the engine's time in hash
//! lookups and inserts that miss the cache: one map per campaign for the
//! progress, one set for what changed. Interned numbers are dense and a
//! channel's viewers are interned together, so a page of consecutive numbers
//! is mostly full: a lookup is an index, a heartbeat walks its pages in
//! order, and an entry costs its own 16 bytes rather than a hash slot's ~30.

/// Entries per page: 16 KiB of progress, so a campaign whose viewers are
/// scattered over the interner wastes at most that per viewer it holds.
const PAGE: usize = 1024;
const WORDS: usize = PAGE / 64;

#[derive(Debug, Clone)]
struct Page<T> {
    values: Box<[T; PAGE]>,
    present: [u64; WORDS],
}

/// A map from viewer number to `T`, paged and dense.
#[derive(Debug, Clone)]
pub struct ViewerTable<T> {
    pages: Vec<Option<Page<T>>>,
    len: usize,
}

impl<T> Default for ViewerTable<T> {
    fn default() -> Self {
        ViewerTable { pages: Vec::new(), len: 0 }
    }
}

fn split(viewer: u32) -> (usize, usize, u64) {
    let v = viewer as usize;
    (v / PAGE, v % PAGE, 1u64 << (v % 64))
}

impl<T: Copy + Default> ViewerTable<T> {
    /// The entry for `viewer`, if any.
    pub fn get(&self, viewer: u32) -> Option<&T> {
        let (page, slot, bit) = split(viewer);
        let page = self.pages.get(page)?.as_ref()?;
        (page.present[slot / 64] & bit != 0).then(|| &page.values[slot])
    }

    /// Sets `viewer`'s entry; returns the one it replaces.
    pub fn insert(&mut self, viewer: u32, value: T) -> Option<T> {
        let (index, slot, bit) = split(viewer);
        if self.pages.len() <= index {
            self.pages.resize_with(index + 1, || None);
        }
        let page = self.pages[index]
            .get_or_insert_with(|| Page { values: Box::new([T::default(); PAGE]), present: [0; WORDS] });
        let word = &mut page.present[slot / 64];
        let old = (*word & bit != 0).then_some(page.values[slot]);
        *word |= bit;
        page.values[slot] = value;
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in viewer-number order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &T)> + '_ {
        self.pages.iter().enumerate().filter_map(|(i, p)| p.as_ref().map(|p| (i, p))).flat_map(|(i, page)| {
            page.present.iter().enumerate().flat_map(move |(w, &word)| {
                Bits(word).map(move |b| {
                    let slot = w * 64 + b;
                    ((i * PAGE + slot) as u32, &page.values[slot])
                })
            })
        })
    }
}

/// The viewer numbers of a set, as a bitmap with its count.
#[derive(Debug, Clone, Default)]
pub struct ViewerSet {
    words: Vec<u64>,
    len: usize,
}

impl ViewerSet {
    /// Adds `viewer`; returns whether it was new.
    pub fn insert(&mut self, viewer: u32) -> bool {
        let (w, bit) = (viewer as usize / 64, 1u64 << (viewer % 64));
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & bit == 0;
        self.words[w] |= bit;
        self.len += usize::from(new);
        new
    }

    /// Viewers in the set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the set, keeping its memory (the same viewers come back next minute).
    pub fn clear(&mut self) {
        self.words.fill(0);
        self.len = 0;
    }

    /// The viewers, in number order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| Bits(word).map(move |b| (w * 64 + b) as u32))
    }
}

/// The set bits of a word, lowest first.
struct Bits(u64);

impl Iterator for Bits {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_keeps_entries_across_pages_in_number_order() {
        let mut t = ViewerTable::<u64>::default();
        assert_eq!(t.insert(5000, 1), None);
        assert_eq!(t.insert(3, 2), None);
        assert_eq!(t.insert(63, 3), None);
        assert_eq!(t.insert(64, 4), None);
        assert_eq!(t.insert(3, 5), Some(2));
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(3), Some(&5));
        assert_eq!(t.get(4), None, "a zero entry next to one held is absent");
        assert_eq!(t.get(1_000_000), None);
        let all: Vec<(u32, u64)> = t.iter().map(|(v, &x)| (v, x)).collect();
        assert_eq!(all, vec![(3, 5), (63, 3), (64, 4), (5000, 1)]);
    }

    #[test]
    fn a_set_counts_each_viewer_once_and_clears() {
        let mut s = ViewerSet::default();
        assert!(s.insert(70));
        assert!(s.insert(0));
        assert!(!s.insert(70));
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 70]);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.iter().count(), 0);
    }
}
