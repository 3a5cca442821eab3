//! Per-campaign key-value state for rules, served to a call through the
//! `state-*` host imports: the campaign's state plus the call's own writes
//! (an overlay applied only when the call succeeds).
//!
//! Like watch-time it lives in memory and is checkpointed (changed keys only)
//! with the inbox position, so a replay after a crash starts from the state
//! that matches the checkpoint and rebuilds the rest deterministically.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Longest key a rule may store.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value a rule may store.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most bytes one call may write.
pub const MAX_WRITE_BYTES_PER_CALL: usize = 16 << 20;

/// One campaign's state.
#[derive(Debug, Default, Clone)]
pub struct CampaignKv {
    map: HashMap<String, Vec<u8>>,
    dirty: HashSet<String>,
}

/// The writes of one call, applied only if the call succeeds.
#[derive(Debug, Default)]
pub struct Overlay {
    writes: BTreeMap<String, Option<Vec<u8>>>,
    bytes: usize,
}

impl Overlay {
    /// A value as the call sees it: its own writes first.
    pub fn get(&self, base: &CampaignKv, key: &str) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => base.map.get(key).cloned(),
        }
    }

    /// Records a write, refusing oversized keys, values or totals.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("state key is {} bytes, more than {MAX_KEY_BYTES}", key.len()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("state value is {} bytes, more than {MAX_VALUE_BYTES}", value.len()));
        }
        self.bytes += key.len() + value.len();
        if self.bytes > MAX_WRITE_BYTES_PER_CALL {
            return Err(format!("one call may write at most {MAX_WRITE_BYTES_PER_CALL} bytes of state"));
        }
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Records a delete.
    pub fn delete(&mut self, key: String) {
        self.writes.insert(key, None);
    }
}

impl CampaignKv {
    /// Applies a successful call's writes.
    pub fn apply(&mut self, overlay: Overlay) {
        for (key, value) in overlay.writes {
            match value {
                Some(v) => {
                    self.map.insert(key.clone(), v);
                }
                None => {
                    self.map.remove(&key);
                }
            }
            self.dirty.insert(key);
        }
    }

    /// Restores one key from a checkpoint.
    pub fn restore(&mut self, key: String, value: Vec<u8>) {
        self.map.insert(key, value);
    }

    /// Changed keys: `Some(value)` to store, `None` to delete.
    pub fn dirty(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        self.dirty.iter().map(|k| (k.as_str(), self.map.get(k).map(Vec::as_slice)))
    }

    /// Forgets what changed, after a checkpoint saved it.
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is stored.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_apply_only_when_applied() {
        let mut kv = CampaignKv::default();
        let mut overlay = Overlay::default();
        overlay.set("a".into(), vec![1]).unwrap();
        assert_eq!(overlay.get(&kv, "a"), Some(vec![1]));
        assert_eq!(kv.len(), 0, "a failed call's overlay is simply dropped");
        kv.apply(overlay);
        let mut overlay = Overlay::default();
        overlay.delete("a".into());
        assert_eq!(overlay.get(&kv, "a"), None);
        kv.apply(overlay);
        assert!(kv.is_empty());
        assert_eq!(kv.dirty().collect::<Vec<_>>(), vec![("a", None)]);
    }

    #[test]
    fn limits() {
        let mut overlay = Overlay::default();
        assert!(overlay.set("k".repeat(MAX_KEY_BYTES + 1), vec![]).unwrap_err().contains("key"));
        assert!(overlay.set("k".into(), vec![0; MAX_VALUE_BYTES + 1]).unwrap_err().contains("value"));
    }
}
