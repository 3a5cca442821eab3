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
    /// Bytes of keys and values held.
    bytes: usize,
}

/// The writes of one call, applied only if the call succeeds.
#[derive(Debug, Default)]
pub struct Overlay {
    writes: BTreeMap<String, Option<Vec<u8>>>,
    bytes: usize,
    /// How the writes change the campaign's total bytes.
    net: isize,
}

/// What an entry costs in memory: its bytes plus the map's own overhead, so a
/// flood of tiny keys is counted as what it costs.
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

fn entry_bytes(key: &str, value: &[u8]) -> usize {
    key.len() + value.len() + ENTRY_OVERHEAD_BYTES
}

impl Overlay {
    /// A value as the call sees it: its own writes first.
    pub fn get(&self, base: &CampaignKv, key: &str) -> Option<Vec<u8>> {
        match self.writes.get(key) {
            Some(v) => v.clone(),
            None => base.map.get(key).cloned(),
        }
    }

    /// Records a write, refusing oversized keys, values, call totals, or a
    /// campaign whose state would pass `max_campaign_bytes`.
    pub fn set(
        &mut self,
        base: &CampaignKv,
        key: String,
        value: Vec<u8>,
        max_campaign_bytes: usize,
    ) -> Result<(), String> {
        if key.len() > MAX_KEY_BYTES {
            return Err(format!("state key is {} bytes, more than {MAX_KEY_BYTES}", key.len()));
        }
        if key.chars().any(char::is_control) {
            return Err("state key contains control characters".into());
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!("state value is {} bytes, more than {MAX_VALUE_BYTES}", value.len()));
        }
        if self.bytes + entry_bytes(&key, &value) > MAX_WRITE_BYTES_PER_CALL {
            return Err(format!("one call may write at most {MAX_WRITE_BYTES_PER_CALL} bytes of state"));
        }
        let net = self.net + entry_bytes(&key, &value) as isize - self.held(base, &key) as isize;
        let total = (base.bytes as isize + net).max(0) as usize;
        if total > max_campaign_bytes {
            return Err(format!(
                "the campaign's state would hold {total} bytes, more than its cap of {max_campaign_bytes}"
            ));
        }
        self.bytes += entry_bytes(&key, &value);
        self.net = net;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// Records a delete.
    pub fn delete(&mut self, base: &CampaignKv, key: String) {
        self.net -= self.held(base, &key) as isize;
        self.writes.insert(key, None);
    }

    /// Bytes `key` holds as the call sees it.
    fn held(&self, base: &CampaignKv, key: &str) -> usize {
        match self.writes.get(key) {
            Some(Some(v)) => entry_bytes(key, v),
            Some(None) => 0,
            None => base.map.get(key).map_or(0, |v| entry_bytes(key, v)),
        }
    }
}

impl CampaignKv {
    /// Applies a successful call's writes.
    pub fn apply(&mut self, overlay: Overlay) {
        for (key, value) in overlay.writes {
            let old = match value {
                Some(v) => {
                    self.bytes += entry_bytes(&key, &v);
                    self.map.insert(key.clone(), v)
                }
                None => self.map.remove(&key),
            };
            self.bytes -= old.map_or(0, |v| entry_bytes(&key, &v));
            self.dirty.insert(key);
        }
    }

    /// Restores one key from a checkpoint.
    pub fn restore(&mut self, key: String, value: Vec<u8>) {
        self.bytes += entry_bytes(&key, &value);
        if let Some(old) = self.map.insert(key.clone(), value) {
            self.bytes -= entry_bytes(&key, &old);
        }
    }

    /// The value under `key`.
    pub fn value(&self, key: &str) -> Option<&[u8]> {
        self.map.get(key).map(Vec::as_slice)
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
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
        overlay.set(&kv, "a".into(), vec![1], usize::MAX).unwrap();
        assert_eq!(overlay.get(&kv, "a"), Some(vec![1]));
        assert_eq!(kv.len(), 0, "a failed call's overlay is simply dropped");
        kv.apply(overlay);
        assert_eq!(kv.bytes(), 2 + ENTRY_OVERHEAD_BYTES);
        let mut overlay = Overlay::default();
        overlay.delete(&kv, "a".into());
        assert_eq!(overlay.get(&kv, "a"), None);
        kv.apply(overlay);
        assert!(kv.is_empty());
        assert_eq!(kv.bytes(), 0);
        assert_eq!(kv.dirty().collect::<Vec<_>>(), vec![("a", None)]);
    }

    #[test]
    fn a_campaign_state_is_capped_in_bytes() {
        let mut kv = CampaignKv::default();
        let mut overlay = Overlay::default();
        let cap = 100 + 2 * ENTRY_OVERHEAD_BYTES;
        overlay.set(&kv, "a".into(), vec![0; 90], cap).unwrap();
        assert!(overlay.set(&kv, "b".into(), vec![0; 20], cap).unwrap_err().contains("cap of"));
        overlay.set(&kv, "a".into(), vec![0; 10], cap).unwrap();
        overlay.set(&kv, "b".into(), vec![0; 20], cap).unwrap();
        kv.apply(overlay);
        assert_eq!(kv.bytes(), 11 + 21 + 2 * ENTRY_OVERHEAD_BYTES);
        let mut overlay = Overlay::default();
        overlay.delete(&kv, "a".into());
        overlay.set(&kv, "c".into(), vec![0; 70], cap).unwrap();
        assert!(overlay.set(&kv, "bad\0key".into(), vec![], usize::MAX).unwrap_err().contains("control"));
    }

    #[test]
    fn limits() {
        let (kv, mut overlay) = (CampaignKv::default(), Overlay::default());
        assert!(overlay.set(&kv, "k".repeat(MAX_KEY_BYTES + 1), vec![], usize::MAX).unwrap_err().contains("key"));
        assert!(overlay.set(&kv, "k".into(), vec![0; MAX_VALUE_BYTES + 1], usize::MAX).unwrap_err().contains("value"));
    }
}
