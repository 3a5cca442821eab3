//! Live figures of this process for the console and `GET /v1/overview`:
//! what ingest accepted, refused and how fast it acknowledged, and how far
//! the engine is behind its inbox. Process-wide, like the metrics recorder
//! they sit beside: every ingest path and engine partition records here
//! without threading a handle through. Acknowledgements and lags also update
//! their Prometheus metrics here, so the two never disagree; refusals are
//! counted by each path's own outcome counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::latency::{Latency, LatencyView};

/// Where traffic comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Twitch's Viewer Heartbeat Service (`POST /vhs`).
    Vhs,
    /// Game servers' Enhanced Experiences messages (`/e2`).
    E2,
    /// Twitch's EventSub notifications (`POST /eventsub`).
    EventSub,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Vhs => "vhs",
            Source::E2 => "e2",
            Source::EventSub => "eventsub",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Most distinct refusal reasons kept per source: reasons are fixed strings
/// of the code, but a bound costs nothing.
const MAX_REASONS: usize = 64;

#[derive(Default)]
struct SourceCounts {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    ack: Latency,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

#[derive(Default)]
struct Live {
    sources: [SourceCounts; 3],
    e2_connections: AtomicI64,
    engine: Mutex<BTreeMap<String, EngineLag>>,
}

static LIVE: LazyLock<Live> = LazyLock::new(Live::default);

/// Counts an acknowledged request or message: `accepted` new items and
/// `duplicates` already stored, acknowledged `took` after it arrived.
pub fn acknowledged(source: Source, accepted: u64, duplicates: u64, took: Duration) {
    let counts = &LIVE.sources[source.index()];
    counts.accepted.fetch_add(accepted, Relaxed);
    counts.duplicates.fetch_add(duplicates, Relaxed);
    counts.ack.record(took);
    metrics::histogram!("drops_ingest_ack_seconds", "source" => source.name()).record(took.as_secs_f64());
}

/// Counts a refused request or message, by its reason.
pub fn refused(source: Source, reason: &'static str) {
    let mut refused = LIVE.sources[source.index()].refused.lock().unwrap_or_else(|e| e.into_inner());
    if refused.len() < MAX_REASONS || refused.contains_key(reason) {
        *refused.entry(reason).or_default() += 1;
    }
}

/// The number of open game-server connections.
pub fn e2_connections(open: usize) {
    LIVE.e2_connections.store(i64::try_from(open).unwrap_or(i64::MAX), Relaxed);
    metrics::gauge!("drops_e2_connections").set(open as f64);
}

/// How far one engine partition is behind the inbox.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct EngineLag {
    /// The last inbox sequence number it judged.
    pub cursor: i64,
    /// Sequence numbers stored after it (every partition's events count).
    pub events: i64,
    /// Age of the oldest event after it; 0 when it is caught up.
    pub seconds: f64,
    /// When this was measured (ms since the epoch).
    pub measured_at: i64,
}

/// Records a partition's lag.
pub fn engine_lag(partition: &str, lag: EngineLag) {
    metrics::gauge!("drops_engine_lag_events", "partition" => partition.to_string()).set(lag.events as f64);
    metrics::gauge!("drops_engine_lag_seconds", "partition" => partition.to_string()).set(lag.seconds);
    LIVE.engine.lock().unwrap_or_else(|e| e.into_inner()).insert(partition.to_string(), lag);
}

/// Forgets a partition this host no longer runs (handed over or stopped):
/// its gauges read 0 rather than a frozen lag.
pub fn engine_gone(partition: &str) {
    metrics::gauge!("drops_engine_lag_events", "partition" => partition.to_string()).set(0.0);
    metrics::gauge!("drops_engine_lag_seconds", "partition" => partition.to_string()).set(0.0);
    LIVE.engine.lock().unwrap_or_else(|e| e.into_inner()).remove(partition);
}

/// One source's traffic since the process started.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceView {
    pub source: &'static str,
    /// Items accepted: heartbeats, messages or entitlements.
    pub accepted: u64,
    /// Items already stored, acknowledged again (a retry or replay).
    pub duplicates: u64,
    /// Requests or messages refused, by reason.
    pub refused: BTreeMap<&'static str, u64>,
    /// From arrival to acknowledgement.
    pub ack: LatencyView,
}

/// Everything [`Live`] holds, as read now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LiveView {
    pub sources: Vec<SourceView>,
    /// Game servers connected to this host's `/e2` now.
    pub e2_connections: i64,
    /// Engine partitions this host runs, by partition.
    pub engine: BTreeMap<String, EngineLag>,
}

/// Reads the live figures.
pub fn view() -> LiveView {
    let sources = [Source::Vhs, Source::E2, Source::EventSub]
        .into_iter()
        .map(|source| {
            let counts = &LIVE.sources[source.index()];
            SourceView {
                source: source.name(),
                accepted: counts.accepted.load(Relaxed),
                duplicates: counts.duplicates.load(Relaxed),
                refused: counts.refused.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                ack: counts.ack.view(),
            }
        })
        .collect();
    LiveView {
        sources,
        e2_connections: LIVE.e2_connections.load(Relaxed),
        engine: LIVE.engine.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    }
}
