//! Telling the studio's entitlement systems of every grant: one task per
//! sink walks the grants in id order from the sink's cursor, delivers a
//! batch, and moves the cursor past it only once the sink acknowledged it.
//! A failing batch is retried as it was (same batch id, same grants, with
//! backoff) until it goes through, so grants reach a sink in the order they
//! were made, per viewer and overall; a crash before the cursor moved
//! delivers the batch again, under the same idempotency keys (the batch id
//! may differ then: deduplicate on the grants' keys, not on the batch id).
//!
//! The cursor relies on grants committing in id order: they do, because
//! every grant insert holds the store's write lock until it commits. A
//! second writer of grants (several hosts) needs a per-grant delivery mark
//! instead.
//!
//! A sink is anything that can take a batch and say it has it: the webhook
//! (`webhook.rs`) and NATS JetStream (`nats.rs`, a message id per grant);
//! RabbitMQ with publisher confirms would fit the same [`Sink`] trait.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::Backoff;
use crate::domain::{now_ms, DeliveredItem};
use crate::store::{EntitlementRow, GrantRow, Store};

/// How often a sink with nothing to deliver looks again (besides being woken by new grants).
const POLL: Duration = Duration::from_secs(1);

/// A grant as sinks send it: the stored grant (`id`, campaign, reward,
/// user, ...) with its idempotency key and its time in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantMessage {
    /// Stable for the grant: the same grant always carries the same key,
    /// whatever batch or attempt it travels in. Deduplicate on it.
    pub idempotency_key: String,
    pub granted_at: String,
    #[serde(flatten)]
    pub grant: GrantRow,
}

impl GrantMessage {
    /// The message for a stored grant.
    pub fn new(grant: GrantRow) -> GrantMessage {
        GrantMessage {
            idempotency_key: idempotency_key(&grant.campaign_id, &grant.reward_id, &grant.user_id, &grant.grant_key),
            granted_at: rfc3339_ms(grant.created_at),
            grant,
        }
    }
}

/// A grant's key: the SHA-256 of what makes it unique in the database
/// (campaign, reward, user, grant key), so it can never travel under two keys.
pub fn idempotency_key(campaign: &str, reward: &str, user: &str, grant_key: &str) -> String {
    let mut hash = Sha256::new();
    for part in [campaign, reward, user, grant_key] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

fn rfc3339_ms(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// A batch: its id (the same for the same grants) and the grants, in id order.
#[derive(Debug, Clone, Serialize)]
pub struct GrantBatch {
    pub batch_id: String,
    pub grants: Vec<GrantMessage>,
}

/// A decided entitlement's items as sinks send them (EventSub path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemMessage {
    /// `items:<entitlement id>`: the same entitlement always travels under
    /// the same key. Deduplicate on it.
    pub idempotency_key: String,
    pub entitlement_id: String,
    pub campaign_id: String,
    pub benefit_id: String,
    /// The viewer's Twitch user id and the game account to deliver to.
    pub twitch_user_id: String,
    pub account: String,
    pub items: Vec<DeliveredItem>,
    pub decided_at: String,
    pub campaign_revision: String,
    pub plugin_hash: String,
}

impl ItemMessage {
    /// The message for a stored entitlement decided with items.
    pub fn new(row: EntitlementRow) -> ItemMessage {
        ItemMessage {
            idempotency_key: format!("items:{}", row.entitlement_id),
            decided_at: rfc3339_ms(row.decided_at),
            entitlement_id: row.entitlement_id,
            campaign_id: row.campaign_id,
            benefit_id: row.benefit_id,
            twitch_user_id: row.user_id,
            account: row.account.unwrap_or_default(),
            items: row.items,
            campaign_revision: row.campaign_revision,
            plugin_hash: row.plugin_hash,
        }
    }
}

/// A batch of item deliveries: its id (the same for the same entitlements) and the deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct ItemBatch {
    pub batch_id: String,
    pub deliveries: Vec<ItemMessage>,
}

impl ItemBatch {
    /// A batch of the given deliveries.
    pub fn new(deliveries: Vec<ItemMessage>) -> ItemBatch {
        let mut hash = Sha256::new();
        for d in &deliveries {
            hash.update((d.entitlement_id.len() as u64).to_be_bytes());
            hash.update(d.entitlement_id.as_bytes());
        }
        ItemBatch { batch_id: format!("items-{}", hex::encode(&hash.finalize()[..12])), deliveries }
    }
}

/// Why a sink did not take a batch; always retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// Somewhere grants are delivered to.
pub trait Sink: Send + Sync + 'static {
    /// The sink's name: its cursor's key and its metrics label.
    fn name(&self) -> &'static str;
    /// Most grants per batch.
    fn max_batch(&self) -> u32;
    /// Delivers a batch; Ok only once the sink has it durably.
    fn deliver(&self, batch: &GrantBatch) -> impl Future<Output = Result<(), SinkError>> + Send;
    /// Delivers a batch of entitlements' items; Ok only once the sink has it durably.
    fn deliver_items(&self, batch: &ItemBatch) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// Runs a sink until `stop`: its grants and, when it is the sink decided
/// entitlements' items go to (`items`), those too.
pub async fn serve<S: Sink>(sink: S, store: Arc<Store>, backoff: Backoff, stop: CancellationToken, items: bool) {
    if items {
        let grants = run(&sink, store.clone(), backoff, stop.clone());
        tokio::join!(grants, super::items::run(&sink, store, backoff, stop));
    } else {
        run(&sink, store, backoff, stop).await;
    }
}

/// Runs one sink's grants until `stop`: a batch in flight then is abandoned, and delivered again at the next start.
pub async fn run<S: Sink>(sink: &S, store: Arc<Store>, backoff: Backoff, stop: CancellationToken) {
    let name = sink.name();
    let mut failures = 0u32;
    let mut held: Option<GrantBatch> = None;
    let mut unrecorded: Option<i64> = None;
    let mut gauges_due = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= gauges_due {
            report_backlog(&store, name).await;
            gauges_due = tokio::time::Instant::now() + Duration::from_secs(5);
        }
        // A delivered batch whose cursor could not be recorded: record it before anything else,
        // so a database that refuses writes neither loops nor re-sends.
        if let Some(through) = unrecorded {
            match store.advance_sink(name, through).await {
                Ok(()) => unrecorded = None,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::error!(sink = name, "recording a delivered batch: {e}");
                    if pause(&stop, backoff.wait(failures)).await {
                        return;
                    }
                    continue;
                }
            }
        }
        // A failed batch is retried as it was (same id, same grants) until it goes through.
        let batch = match held.take() {
            Some(batch) => batch,
            None => match next_batch(&store, sink).await {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = store.signals().grants_for_sinks() => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(sink = name, "reading grants to deliver: {e}");
                    if pause(&stop, POLL).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = sink.deliver(&batch) => outcome,
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("drops_sink_grants_delivered_total", "sink" => name)
                    .increment(batch.grants.len() as u64);
                failures = 0;
                unrecorded = batch.grants.last().map(|g| g.grant.id);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                metrics::counter!("drops_sink_failures_total", "sink" => name).increment(1);
                let wait = backoff.wait(failures);
                tracing::warn!(sink = name, batch = %batch.batch_id, failures, retry_in_ms = wait.as_millis() as u64,
                    "delivery failed, will retry: {e}");
                if let Err(e) = store.record_sink_failure(name, &e.0).await {
                    tracing::error!(sink = name, "recording a failed delivery: {e}");
                }
                held = Some(batch);
                if pause(&stop, wait).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps `wait`; true when asked to stop meanwhile.
pub(super) async fn pause(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(wait) => false,
    }
}

async fn next_batch<S: Sink>(store: &Store, sink: &S) -> Result<Option<GrantBatch>, crate::store::StoreError> {
    let after = store.sink_cursor(sink.name()).await?;
    let grants = store.grants_for_sink(after, sink.max_batch()).await?;
    let (Some(first), Some(last)) = (grants.first(), grants.last()) else { return Ok(None) };
    let batch_id = format!("grants-{}-{}", first.id, last.id);
    Ok(Some(GrantBatch { batch_id, grants: grants.into_iter().map(GrantMessage::new).collect() }))
}

async fn report_backlog(store: &Store, name: &'static str) {
    match store.sink_backlog(name).await {
        Ok(b) => {
            metrics::gauge!("drops_sink_pending_grants", "sink" => name).set(b.pending as f64);
            let age = b.oldest_pending_at.map_or(0.0, |at| (now_ms() - at).max(0) as f64 / 1000.0);
            metrics::gauge!("drops_sink_oldest_pending_age_seconds", "sink" => name).set(age);
        }
        Err(e) => tracing::warn!(sink = name, "reading the sink backlog: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_has_one_key_and_parts_cannot_slide_into_each_other() {
        assert_eq!(idempotency_key("c", "r", "u", ""), idempotency_key("c", "r", "u", ""));
        assert_ne!(idempotency_key("c", "r", "u", ""), idempotency_key("c", "r", "u", "k"));
        assert_ne!(idempotency_key("ab", "c", "u", ""), idempotency_key("a", "bc", "u", ""));
        assert_eq!(idempotency_key("c", "r", "u", "").len(), 32);
    }

    #[test]
    fn grant_times_are_rfc3339() {
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
    }
}
