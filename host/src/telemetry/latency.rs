//! A lock-free latency histogram the console reads back (the Prometheus
//! recorder only renders text): counts per power-of-two bucket of
//! microseconds, so recording is two atomic adds and a leading-zeros count.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::Serialize;

/// Buckets: under 1 µs, then [2^(i-1), 2^i) µs up to ~67 s, then everything longer.
const BUCKETS: usize = 28;

/// Counts of durations by bucket, with their sum.
pub struct Latency {
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Default for Latency {
    fn default() -> Latency {
        Latency { buckets: std::array::from_fn(|_| AtomicU64::new(0)), sum_micros: AtomicU64::new(0) }
    }
}

/// A [`Latency`] as read: cumulative since the process started; subtract two
/// readings to get an interval's figures.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct LatencyView {
    pub count: u64,
    pub sum_micros: u64,
    /// Count per bucket; bucket `i` holds durations below `2^i` µs (the last, everything longer).
    pub buckets: Vec<u64>,
    /// Upper bounds of the median and 99th-percentile buckets, in µs.
    pub p50_micros: u64,
    pub p99_micros: u64,
}

impl Latency {
    /// Counts one duration.
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// The counts so far.
    pub fn view(&self) -> LatencyView {
        let buckets: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count = buckets.iter().sum();
        LatencyView {
            count,
            sum_micros: self.sum_micros.load(Relaxed),
            p50_micros: quantile(&buckets, count, 0.50),
            p99_micros: quantile(&buckets, count, 0.99),
            buckets,
        }
    }
}

fn bucket_of(micros: u64) -> usize {
    let bits = (u64::BITS - micros.leading_zeros()) as usize;
    bits.min(BUCKETS - 1)
}

/// The upper bound (µs) of the bucket holding quantile `q`; 0 when nothing was counted.
fn quantile(buckets: &[u64], count: u64, q: f64) -> u64 {
    if count == 0 {
        return 0;
    }
    let rank = ((count as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return 1u64 << i;
        }
    }
    1u64 << (BUCKETS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_power_of_two_buckets_and_quantiles_bound_them() {
        let latency = Latency::default();
        for micros in [0, 1, 3, 900, 1000, 1000, 1000, 1000, 1000, 70_000_000_000] {
            latency.record(Duration::from_micros(micros));
        }
        let view = latency.view();
        assert_eq!(view.count, 10);
        assert_eq!(view.buckets[0], 1, "under 1 µs");
        assert_eq!(view.buckets[1], 1, "1 µs");
        assert_eq!(view.buckets[2], 1, "2-3 µs");
        assert_eq!(view.buckets[10], 6, "512-1023 µs");
        assert_eq!(view.buckets[BUCKETS - 1], 1, "the longest bucket takes everything beyond");
        assert_eq!(view.p50_micros, 1024, "the median is a ~1 ms call");
        assert_eq!(view.p99_micros, 1 << (BUCKETS - 1));
        assert_eq!(Latency::default().view().p99_micros, 0);
    }
}
