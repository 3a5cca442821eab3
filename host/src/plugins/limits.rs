//! Per-call sandbox limits: memory through wasmtime's `StoreLimits` (a
//! `ResourceLimiter`), CPU through epoch interruption, output by checking
//! what a rule returns.

use wasmtime::{StoreLimits, StoreLimitsBuilder};

use super::bindings::Grant;

/// Longest repeatable-grant key a rule may return.
pub const MAX_KEY_BYTES: usize = 256;
/// Log lines one call may write; more are dropped.
pub const MAX_LOG_LINES: u32 = 32;
/// Longest log line kept.
pub const MAX_LOG_BYTES: usize = 2048;

/// The memory limiter of one call.
pub fn store_limits(max_memory_bytes: u64) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(usize::try_from(max_memory_bytes).unwrap_or(usize::MAX))
        .instances(16)
        .tables(16)
        .memories(4)
        // A plain error instead of -1 from memory.grow: a guest that ignores
        // the failure would otherwise go on with corrupt state.
        .trap_on_grow_failure(true)
        .build()
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
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
