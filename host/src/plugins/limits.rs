//! Per-call sandbox limits: memory and instance counts through a
//! `ResourceLimiter`, CPU through fuel (with an epoch deadline as the
//! wall-clock backstop, set in `call.rs`), output by checking what a rule returns.

use wasmtime::ResourceLimiter;

use super::wit::{Grant, Item};

/// Longest repeatable-grant key a rule may return.
pub const MAX_KEY_BYTES: usize = 256;
/// Most items one entitlement may deliver.
pub const MAX_ITEMS: usize = 100;
/// Longest item id a rule may return.
pub const MAX_ITEM_ID_BYTES: usize = 256;

/// Log lines one call may write; more are dropped.
pub const MAX_LOG_LINES: u32 = 32;
/// Longest log line kept.
pub const MAX_LOG_BYTES: usize = 2048;

/// A plugin tried to grow its memory past the cap. A type of its own, so a
/// failed call is recognised as out of memory by its error, not by its text.
#[derive(Debug, thiserror::Error)]
#[error("memory would grow to {desired} bytes, past the cap of {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// A plugin sent the host more bytes in one call than its budget: through
/// imports (log lines, state keys and values) and its answer (grant keys,
/// error strings). Counted, not timed, so the verdict is the same on replay.
#[derive(Debug, thiserror::Error)]
#[error("sent the host more than its budget of {budget} bytes in one call")]
pub struct HostBytesExceeded {
    pub budget: u64,
}

/// A plugin called an import with an argument the host refuses outright.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportRefused(pub String);

/// Longest plugin error string kept (logs, the pause reason).
pub const MAX_ERROR_BYTES: usize = 1024;

/// The resource limiter of one call.
#[derive(Debug)]
pub struct CallLimits {
    max_memory_bytes: usize,
}

impl CallLimits {
    /// Limits for a call whose memory may grow to `max_memory_bytes`.
    pub fn new(max_memory_bytes: u64) -> CallLimits {
        CallLimits { max_memory_bytes: usize::try_from(max_memory_bytes).unwrap_or(usize::MAX) }
    }
}

impl ResourceLimiter for CallLimits {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.max_memory_bytes {
            // An error rather than -1 from memory.grow: a guest that ignores
            // the failure would otherwise go on with corrupt state.
            return Err(wasmtime::Error::new(MemoryLimitExceeded { desired, limit: self.max_memory_bytes }));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, _desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(true)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        // The memory cap is per linear memory: one memory makes it the plugin's cap.
        1
    }
}

/// Checks a rule's answer against what it was given.
pub fn check_grants(grants: &[Grant], viewers: usize, rewards: usize) -> Result<(), String> {
    // One grant per viewer and reward, plus repeatable ones: anything beyond
    // a few per pair is a runaway rule, not a decision.
    let cap = viewers.saturating_mul(rewards.max(1)).saturating_mul(4).max(64);
    if grants.len() > cap {
        return Err(format!("returned {} grants, more than the cap of {cap} for this call", grants.len()));
    }
    for g in grants {
        if g.viewer as usize >= viewers {
            return Err(format!("grant names viewer handle {}, but the call had {viewers} viewers", g.viewer));
        }
        if g.reward as usize >= rewards {
            return Err(format!("grant names reward index {}, but the campaign has {rewards} rewards", g.reward));
        }
        if let Some(key) = &g.key {
            if key.len() > MAX_KEY_BYTES {
                return Err(format!("grant key is {} bytes, more than {MAX_KEY_BYTES}", key.len()));
            }
            // Stored as text: PostgreSQL refuses NUL, and no key needs control characters.
            if key.chars().any(char::is_control) {
                return Err("grant key contains control characters".into());
            }
        }
    }
    Ok(())
}

/// Checks the items of an entitlement verdict: at most [`MAX_ITEMS`], ids of
/// 1 to [`MAX_ITEM_ID_BYTES`] bytes without control characters, quantities of at least 1.
pub fn check_items(items: &[Item]) -> Result<(), String> {
    if items.is_empty() {
        return Err("delivers no items: refuse the entitlement with a reason instead".into());
    }
    if items.len() > MAX_ITEMS {
        return Err(format!("delivers {} items, more than {MAX_ITEMS}", items.len()));
    }
    for (i, item) in items.iter().enumerate() {
        if item.id.is_empty() || item.id.len() > MAX_ITEM_ID_BYTES || item.id.chars().any(char::is_control) {
            return Err(format!("item {i}: its id must be 1 to {MAX_ITEM_ID_BYTES} bytes without control characters"));
        }
        if item.quantity == 0 {
            return Err(format!("item {i} (`{}`): quantity 0", item.id));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_bounded_named_and_counted() {
        let item = |id: &str, quantity| Item { id: id.into(), quantity };
        assert!(check_items(&[item("sword", 1), item("gold", 100)]).is_ok());
        assert!(check_items(&[]).unwrap_err().contains("refuse"));
        let many: Vec<Item> = (0..=MAX_ITEMS).map(|i| item(&format!("i{i}"), 1)).collect();
        assert!(check_items(&many).unwrap_err().contains("101 items"));
        assert!(check_items(&[item("ok", 1), item("bad\nid", 1)]).unwrap_err().starts_with("item 1"));
        assert!(check_items(&[item(&"x".repeat(MAX_ITEM_ID_BYTES + 1), 1)]).is_err());
        assert!(check_items(&[item("ünïcødé", 1)]).is_ok(), "non-ASCII ids are fine");
        assert!(check_items(&[item("zero", 0)]).unwrap_err().contains("quantity 0"));
    }

    fn grant(viewer: u32, reward: u32, key: Option<&str>) -> Grant {
        Grant { viewer, reward, key: key.map(String::from) }
    }

    #[test]
    fn grants_must_name_real_viewers_and_rewards() {
        assert!(check_grants(&[grant(0, 0, None)], 1, 1).is_ok());
        assert!(check_grants(&[grant(1, 0, None)], 1, 1).unwrap_err().contains("viewer handle 1"));
        assert!(check_grants(&[grant(0, 2, None)], 1, 2).unwrap_err().contains("reward index 2"));
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(check_grants(&[grant(0, 0, Some(&long))], 1, 1).unwrap_err().contains("key"));
    }

    #[test]
    fn a_flood_of_grants_is_refused() {
        let flood: Vec<Grant> = (0..100).map(|_| grant(0, 0, None)).collect();
        assert!(check_grants(&flood, 1, 1).unwrap_err().contains("cap"));
    }

    #[test]
    fn memory_growth_past_the_cap_is_a_typed_error() {
        let mut limits = CallLimits::new(1 << 20);
        assert!(limits.memory_growing(0, 1 << 20, None).unwrap());
        let err = limits.memory_growing(0, (1 << 20) + 1, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
    }
}
