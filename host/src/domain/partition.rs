//! Which engine partition a campaign belongs to.

/// The partition of a campaign among `count`: FNV-1a of its id, so every
/// host (and every version of the host) computes the same one.
pub fn partition_of(campaign_id: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in campaign_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(count.max(1))) as u32
}
