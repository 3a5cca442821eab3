//! The periodic sweep that keeps open EventSub entitlements moving: linked
//! viewers with entitlements still awaiting a link (an announcement lost to
//! a crash or a client gone mid-upload), whose rule failed (a lone
//! failure, tried again here; a rule that keeps failing opens its breaker
//! and waits for a fix), or unmatched of a campaign loaded since, are
//! announced again as link events. One host runs it (the `fulfilment`
//! lease); the link event's key makes a repeat of the same news a duplicate.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::rules::RuleSet;
use crate::store::Store;

/// Viewers announced per sweep at most (the next sweep takes the rest).
const VIEWERS_PER_SWEEP: u32 = 10_000;

/// Sweeps every `every` until `stop`.
pub async fn run(store: Arc<Store>, rules: Arc<ArcSwap<RuleSet>>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let reopen = rules.load().enabled_campaign_ids();
        let swept = match store.linked_with_open_entitlements(&reopen, VIEWERS_PER_SWEEP).await {
            Ok(users) if users.is_empty() => continue,
            Ok(users) => store.announce_links(&users, &reopen).await,
            Err(e) => Err(e),
        };
        match swept {
            Ok(0) => {}
            Ok(announced) => {
                metrics::counter!("drops_entitlement_sweep_announced_total").increment(announced);
                tracing::info!(announced, "open entitlements of linked viewers announced again");
            }
            Err(e) => tracing::warn!("sweeping open entitlements: {e}"),
        }
    }
}
