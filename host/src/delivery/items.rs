//! Delivering decided entitlements' items to the studio's sink (EventSub
//! path). Entitlements are taken in decision order, a batch is delivered,
//! and only once the sink acknowledged it are they marked delivered, which
//! is what lets the fulfiller tell Twitch FULFILLED. A failing batch is
//! retried as it was, with backoff; a crash before the mark delivers the
//! batch again under the same idempotency keys (`items:<entitlement id>`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::sink::{pause, ItemBatch, ItemMessage, Sink};
use super::Backoff;
use crate::store::Store;

/// How often a sink with nothing to deliver looks again (besides being woken).
const POLL: Duration = Duration::from_secs(1);

/// Runs the item deliveries of `sink` until `stop`.
pub async fn run<S: Sink>(sink: &S, store: Arc<Store>, backoff: Backoff, stop: CancellationToken) {
    let name = sink.name();
    let mut failures = 0u32;
    let mut held: Option<ItemBatch> = None;
    loop {
        let batch = match held.take() {
            Some(batch) => batch,
            None => match store.items_to_deliver(sink.max_batch()).await {
                Ok(rows) if rows.is_empty() => {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = store.signals().items_to_deliver() => {}
                        _ = tokio::time::sleep(POLL) => {}
                    }
                    continue;
                }
                Ok(rows) => ItemBatch::new(rows.into_iter().map(ItemMessage::new).collect()),
                Err(e) => {
                    tracing::error!(sink = name, "reading items to deliver: {e}");
                    if pause(&stop, POLL).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = sink.deliver_items(&batch) => outcome,
        };
        if let Err(e) = outcome {
            failures = failures.saturating_add(1);
            metrics::counter!("drops_sink_failures_total", "sink" => name).increment(1);
            let wait = backoff.wait(failures);
            tracing::warn!(sink = name, batch = %batch.batch_id, failures, retry_in_ms = wait.as_millis() as u64,
                "item delivery failed, will retry: {e}");
            held = Some(batch);
            if pause(&stop, wait).await {
                return;
            }
            continue;
        }
        failures = 0;
        metrics::counter!("drops_sink_items_delivered_total", "sink" => name).increment(batch.deliveries.len() as u64);
        let ids: Vec<&str> = batch.deliveries.iter().map(|d| d.entitlement_id.as_str()).collect();
        // Delivered: the mark must be written before the next batch, or the
        // same entitlements would be read (and sent) again.
        let mut attempt = 0u32;
        while let Err(e) = store.mark_items_delivered(&ids).await {
            attempt = attempt.saturating_add(1);
            tracing::error!(sink = name, "recording delivered items: {e}");
            if pause(&stop, backoff.wait(attempt)).await {
                return;
            }
        }
        tracing::info!(sink = name, entitlements = ids.len(), "entitlement items delivered");
    }
}
