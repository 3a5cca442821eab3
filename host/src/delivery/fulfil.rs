//! Closing the EventSub loop with Twitch (Helix `/entitlements/drops`):
//! once the studio's sink has an entitlement's items, it is marked FULFILLED
//! (`PATCH`, at most 100 ids a request), and a periodic reconciliation pages
//! through CLAIMED entitlements (`GET`) and feeds any the webhook missed
//! into the inbox, where the entitlement id deduplicates it.
//!
//! Twitch answers per id: `SUCCESS` is recorded as fulfilled; `INVALID_ID`,
//! `NOT_FOUND` and `UNAUTHORIZED` are permanent and recorded as they are;
//! `UPDATE_FAILED` (and an id Twitch does not mention) is tried again after
//! a backoff. A 429 waits as `Ratelimit-Reset` says; the client also waits
//! for the reset whenever `Ratelimit-Remaining` reaches 0 (`twitch.rs`).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use reqwest::Method;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::sink::pause;
use super::twitch::{classify, TwitchClient, UploadError};
use super::Backoff;
use crate::domain::{now_ms, Entitlement, MAX_ENTITLEMENT_FIELD_BYTES};
use crate::rules::RuleSet;
use crate::store::{Fulfilment, Store};

/// Most ids in one Update Drops Entitlements request (Twitch's limit).
pub const MAX_IDS_PER_UPDATE: usize = 100;
/// Entitlements per Get Drops Entitlements page (Twitch's maximum).
const PAGE_SIZE: &str = "1000";
/// Pages read at most by one reconciliation (a million entitlements).
const MAX_PAGES: usize = 1000;
/// How long entitlements of a request Twitch refused as a whole wait before they are sent again.
const REFUSED_RETRY: Duration = Duration::from_secs(300);
/// How long an idle fulfiller waits before looking again.
const IDLE: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct UpdateAnswer {
    data: Vec<UpdateGroup>,
}

#[derive(Deserialize)]
struct UpdateGroup {
    status: String,
    #[serde(default)]
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct EntitlementPage {
    data: Vec<ClaimedEntitlement>,
    #[serde(default)]
    pagination: Pagination,
}

#[derive(Deserialize, Default)]
struct Pagination {
    cursor: Option<String>,
}

/// An entitlement as Get Drops Entitlements lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ClaimedEntitlement {
    pub id: String,
    pub benefit_id: String,
    pub timestamp: String,
    pub user_id: String,
    #[serde(default)]
    pub game_id: String,
}

impl TwitchClient {
    /// Marks up to [`MAX_IDS_PER_UPDATE`] entitlements FULFILLED; Twitch's answer per id.
    pub async fn fulfil_entitlements(&self, ids: &[String]) -> Result<Vec<(String, Fulfilment)>, UploadError> {
        let what = "marking entitlements FULFILLED";
        let body = serde_json::json!({"fulfillment_status": "FULFILLED", "entitlement_ids": ids});
        let (status, headers, answer) =
            self.helix(Method::PATCH, "/helix/entitlements/drops", &[], Some(&body), what).await?;
        if !status.is_success() {
            return Err(classify(what, status, &headers, &answer, "Twitch refused the update"));
        }
        let answer: UpdateAnswer = serde_json::from_slice(&answer)
            .map_err(|e| UploadError::transient(format!("{what}: unreadable answer: {e}")))?;
        let retry_at = |error: &str| Fulfilment::Retry { after_ms: 0, error: error.to_string() };
        let mut outcomes: Vec<(String, Fulfilment)> = Vec::with_capacity(ids.len());
        for group in answer.data {
            let outcome = match group.status.as_str() {
                "SUCCESS" => Fulfilment::Fulfilled,
                "INVALID_ID" => Fulfilment::Permanent("invalid_id"),
                "NOT_FOUND" => Fulfilment::Permanent("not_found"),
                "UNAUTHORIZED" => Fulfilment::Permanent("unauthorized"),
                _ => retry_at("UPDATE_FAILED"),
            };
            // Only the ids asked about count: an answer cannot touch other rows.
            for id in group.ids.into_iter().filter(|id| ids.contains(id)) {
                if !outcomes.iter().any(|(known, _)| *known == id) {
                    outcomes.push((id, outcome.clone()));
                }
            }
        }
        for id in ids {
            if !outcomes.iter().any(|(known, _)| known == id) {
                outcomes.push((id.clone(), retry_at("Twitch's answer did not mention it")));
            }
        }
        Ok(outcomes)
    }

    /// One page of CLAIMED entitlements after `cursor`, and the next cursor.
    pub async fn claimed_entitlements(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<ClaimedEntitlement>, Option<String>), UploadError> {
        let what = "listing CLAIMED entitlements";
        let mut query = vec![("fulfillment_status", "CLAIMED"), ("first", PAGE_SIZE)];
        if let Some(cursor) = cursor {
            query.push(("after", cursor));
        }
        let (status, headers, answer) =
            self.helix(Method::GET, "/helix/entitlements/drops", &query, None, what).await?;
        if !status.is_success() {
            return Err(classify(what, status, &headers, &answer, "Twitch refused the listing"));
        }
        let page: EntitlementPage = serde_json::from_slice(&answer)
            .map_err(|e| UploadError::transient(format!("{what}: unreadable answer: {e}")))?;
        Ok((page.data, page.pagination.cursor.filter(|c| !c.is_empty())))
    }
}

/// How often the EventSub backlog gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Sets the EventSub backlog gauges.
async fn report_backlog(store: &Store) {
    match store.entitlement_backlog().await {
        Ok(b) => {
            metrics::gauge!("drops_entitlements_awaiting_link").set(b.awaiting_link as f64);
            metrics::gauge!("drops_entitlements_to_deliver").set(b.to_deliver as f64);
            metrics::gauge!("drops_entitlements_to_fulfil").set(b.to_fulfil as f64);
        }
        Err(e) => tracing::warn!("reading the entitlement backlog: {e}"),
    }
}

/// Keeps the EventSub backlog gauges current until `stop` (a host without Twitch credentials).
pub async fn report_backlog_until(store: Arc<Store>, stop: CancellationToken) {
    loop {
        report_backlog(&store).await;
        if pause(&stop, GAUGES_EVERY).await {
            return;
        }
    }
}

/// Marks delivered entitlements FULFILLED until `stop`.
pub async fn run_fulfilment(twitch: Arc<TwitchClient>, store: Arc<Store>, backoff: Backoff, stop: CancellationToken) {
    let mut failures = 0u32;
    let mut gauges_due = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= gauges_due {
            report_backlog(&store).await;
            gauges_due = tokio::time::Instant::now() + GAUGES_EVERY;
        }
        let due = match store.entitlements_to_fulfil(now_ms(), MAX_IDS_PER_UPDATE as u32).await {
            Ok(due) => due,
            Err(e) => {
                tracing::error!("reading entitlements to fulfil: {e}");
                if pause(&stop, IDLE).await {
                    return;
                }
                continue;
            }
        };
        if due.is_empty() {
            let next = store.next_fulfil_due().await.ok().flatten();
            let wait = next.map_or(IDLE, |at| Duration::from_millis((at - now_ms()).clamp(10, 5_000) as u64));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = store.signals().items_confirmed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        let answers = match twitch.fulfil_entitlements(&due).await {
            Ok(answers) => answers,
            Err(UploadError::Transient { reason, wait }) => {
                failures = failures.saturating_add(1);
                metrics::counter!("drops_fulfil_failures_total").increment(1);
                // A wait Twitch asks for is honoured, up to the backoff's cap (a
                // reset hours ahead is a clock or a proxy gone wrong).
                let cap = Duration::from_secs(backoff.max_secs.max(1));
                let wait = wait.map_or_else(|| backoff.wait(failures), |asked| asked.min(cap));
                let e = reason;
                tracing::warn!(
                    entitlements = due.len(),
                    retry_in_ms = wait.as_millis() as u64,
                    "marking entitlements FULFILLED failed, will retry: {e}"
                );
                if pause(&stop, wait).await {
                    return;
                }
                continue;
            }
            Err(refused) => {
                // The whole request refused (a 400, a 403): these ids wait a
                // while, so they do not hold up the others; they are not given up.
                metrics::counter!("drops_fulfil_failures_total").increment(1);
                tracing::error!(entitlements = due.len(), "Twitch refused marking entitlements FULFILLED: {refused}");
                let after_ms = now_ms() + REFUSED_RETRY.as_millis() as i64;
                let error = crate::domain::cut(refused.to_string(), 300);
                let later: Vec<(String, Fulfilment)> =
                    due.into_iter().map(|id| (id, Fulfilment::Retry { after_ms, error: error.clone() })).collect();
                if let Err(e) = store.record_fulfilment(&later).await {
                    tracing::error!("recording a refused FULFILLED request: {e}");
                    if pause(&stop, IDLE).await {
                        return;
                    }
                }
                continue;
            }
        };
        let retry_after = now_ms() + backoff.wait(failures.saturating_add(1)).as_millis() as i64;
        let answers: Vec<(String, Fulfilment)> = answers
            .into_iter()
            .map(|(id, answer)| match answer {
                Fulfilment::Retry { error, .. } => (id, Fulfilment::Retry { after_ms: retry_after, error }),
                other => (id, other),
            })
            .collect();
        let retried = answers.iter().filter(|(_, a)| matches!(a, Fulfilment::Retry { .. })).count();
        failures = if retried > 0 { failures.saturating_add(1) } else { 0 };
        for (_, answer) in &answers {
            let outcome = match answer {
                Fulfilment::Fulfilled => "fulfilled",
                Fulfilment::Permanent(status) => status,
                Fulfilment::Retry { .. } => "update_failed",
            };
            metrics::counter!("drops_fulfil_answers_total", "outcome" => outcome).increment(1);
        }
        let mut attempt = 0u32;
        while let Err(e) = store.record_fulfilment(&answers).await {
            attempt = attempt.saturating_add(1);
            tracing::error!("recording Twitch's FULFILLED answers: {e}");
            if pause(&stop, backoff.wait(attempt)).await {
                return;
            }
        }
        tracing::info!(entitlements = answers.len(), retried, "entitlements marked FULFILLED on Twitch");
    }
}

/// Every `every`, pages through CLAIMED entitlements and stores those the
/// webhook missed, until `stop`.
pub async fn run_reconciliation(
    twitch: Arc<TwitchClient>,
    store: Arc<Store>,
    rules: Arc<ArcSwap<RuleSet>>,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        // Not at once: right after a start Twitch is still redelivering what
        // the webhook missed meanwhile, with everything the listing lacks.
        if pause(&stop, every).await {
            return;
        }
        match reconcile(&twitch, &store, &rules.load(), &stop).await {
            Ok((listed, missed)) => {
                metrics::counter!("drops_reconciled_entitlements_total").increment(missed);
                tracing::info!(listed, missed, "reconciled CLAIMED entitlements with Twitch");
            }
            Err(e) => tracing::warn!("reconciling entitlements with Twitch failed (next try in {every:?}): {e}"),
        }
    }
}

/// One pass: (entitlements listed, entitlements newly stored).
async fn reconcile(
    twitch: &TwitchClient,
    store: &Store,
    rules: &RuleSet,
    stop: &CancellationToken,
) -> Result<(u64, u64), String> {
    let (mut listed, mut missed) = (0u64, 0u64);
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        if stop.is_cancelled() {
            break;
        }
        let (page, next) = twitch.claimed_entitlements(cursor.as_deref()).await.map_err(|e| e.to_string())?;
        listed += page.len() as u64;
        let found: Vec<Entitlement> = page.into_iter().filter_map(|c| as_entitlement(c, rules)).collect();
        missed += store.insert_entitlements(&found).await.map_err(|e| e.to_string())?.accepted;
        match next {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => break,
        }
    }
    Ok((listed, missed))
}

/// A listed entitlement as the webhook would have brought it. The listing
/// names no campaign: the campaign is the one whose rewards name the
/// benefit (an EventSub campaign lists its Drops benefits as rewards).
fn as_entitlement(c: ClaimedEntitlement, rules: &RuleSet) -> Option<Entitlement> {
    let fields = [&c.id, &c.benefit_id, &c.timestamp, &c.user_id, &c.game_id];
    if c.id.is_empty()
        || fields.iter().any(|f| f.len() > MAX_ENTITLEMENT_FIELD_BYTES || f.chars().any(char::is_control))
    {
        tracing::warn!(
            "Get Drops Entitlements listed an entitlement with an empty, long or control-character field: skipped"
        );
        return None;
    }
    if time::OffsetDateTime::parse(&c.timestamp, &time::format_description::well_known::Rfc3339).is_err() {
        tracing::warn!(entitlement = %c.id, "Get Drops Entitlements listed an entitlement whose timestamp is not RFC 3339: skipped");
        return None;
    }
    // An enabled campaign naming the benefit first; a disabled one leaves it
    // unmatched until that campaign is enabled again.
    let naming = |campaign: &&std::sync::Arc<crate::rules::LoadedCampaign>| {
        campaign.def.rewards.iter().any(|r| r.id == c.benefit_id)
    };
    let campaigns = rules.campaigns();
    let campaign_id = campaigns
        .iter()
        .filter(|campaign| campaign.def.enabled)
        .find(naming)
        .or_else(|| campaigns.iter().find(naming))
        .map(|campaign| campaign.def.id.clone())
        .unwrap_or_default();
    Some(Entitlement {
        event_id: format!("reconciled:{}", c.id),
        entitlement_id: c.id,
        organization_id: String::new(),
        category_id: c.game_id,
        category_name: String::new(),
        campaign_id,
        user_id: c.user_id,
        user_login: String::new(),
        user_name: String::new(),
        benefit_id: c.benefit_id,
        created_at: c.timestamp,
    })
}
