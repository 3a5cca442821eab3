//! EventSub entitlements after the engine: what it decided for each, the
//! items' way to the studio's sink, and Twitch's answer to FULFILLED.
//!
//! An entitlement is decided once: a decision replaces only an
//! `awaiting_link` row, so a replay after a crash (which decides the same
//! entitlement again) changes nothing. Delivery and fulfilment are marks on
//! the row, set only after the sink or Twitch answered, so a crash in
//! between sends again (the sink deduplicates by entitlement id; Twitch's
//! FULFILLED is idempotent) and never loses one.

use std::collections::HashMap;

use serde::Serialize;
use sha2::Digest;

use super::{list_placeholders, Fence, Store, StoreError};
use crate::domain::{
    entitlement_status, now_ms, Decision, DeliveredItem, Entitlement, EntitlementDecision, Linked,
    MAX_LINKED_ENTITLEMENTS,
};

/// Ids bound per statement: below SQLite's historical limit of 999 parameters.
const IDS_PER_STATEMENT: usize = 900;

/// Viewers whose links are announced together.
const USERS_PER_ANNOUNCEMENT: usize = 1_000;

/// Most awaiting entitlements read for one group of viewers; the rest are
/// announced by the next link event or the engine's next look.
const MAX_ANNOUNCED: u32 = 50_000;

/// What the store knows of an entitlement the engine meets again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The inbox event that brought it.
    pub first_seq: i64,
    /// The inbox event that decided it (or left it awaiting a link).
    pub decided_seq: i64,
    /// Open: awaiting a link, its rule's call failed, or no campaign had its id.
    pub awaiting: bool,
    /// The game account it was decided for.
    pub account: Option<String>,
}

/// A stored entitlement, as the admin API lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EntitlementRow {
    pub entitlement_id: String,
    pub campaign_id: String,
    /// The viewer's Twitch user id.
    pub user_id: String,
    pub benefit_id: String,
    /// `awaiting_link`, `unmatched`, `refused`, `deliver`, or `failed` (the rule's call failed; decided again later).
    pub status: String,
    pub account: Option<String>,
    pub items: Vec<DeliveredItem>,
    pub reason: Option<String>,
    pub campaign_revision: String,
    pub plugin_hash: String,
    /// When it was first stored and decided (ms since the epoch).
    pub created_at: i64,
    pub decided_at: i64,
    /// When the studio's sink confirmed the items.
    pub delivered_at: Option<i64>,
    /// Twitch's answer to FULFILLED: `fulfilled`, or `invalid_id`,
    /// `not_found`, `unauthorized` (permanent); none until it answered.
    pub fulfillment: Option<String>,
    pub fulfil_attempts: i64,
    pub fulfil_error: Option<String>,
    pub fulfilled_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct StoredRow {
    entitlement_id: String,
    campaign_id: String,
    user_id: String,
    benefit_id: String,
    status: String,
    account: Option<String>,
    items: Option<String>,
    reason: Option<String>,
    campaign_revision: String,
    plugin_hash: String,
    created_at: i64,
    decided_at: i64,
    delivered_at: Option<i64>,
    fulfillment: Option<String>,
    fulfil_attempts: i64,
    fulfil_error: Option<String>,
    fulfilled_at: Option<i64>,
}

const COLUMNS: &str = "entitlement_id, campaign_id, user_id, benefit_id, status, account, items, reason, \
     campaign_revision, plugin_hash, created_at, decided_at, delivered_at, fulfillment, fulfil_attempts, \
     fulfil_error, fulfilled_at";

impl From<StoredRow> for EntitlementRow {
    fn from(r: StoredRow) -> EntitlementRow {
        EntitlementRow {
            items: r.items.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or_default(),
            entitlement_id: r.entitlement_id,
            campaign_id: r.campaign_id,
            user_id: r.user_id,
            benefit_id: r.benefit_id,
            status: r.status,
            account: r.account,
            reason: r.reason,
            campaign_revision: r.campaign_revision,
            plugin_hash: r.plugin_hash,
            created_at: r.created_at,
            decided_at: r.decided_at,
            delivered_at: r.delivered_at,
            fulfillment: r.fulfillment,
            fulfil_attempts: r.fulfil_attempts,
            fulfil_error: r.fulfil_error,
            fulfilled_at: r.fulfilled_at,
        }
    }
}

/// Which entitlements to list (every filter optional).
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EntitlementFilter {
    pub campaign_id: Option<String>,
    /// The viewer's Twitch user id.
    pub user_id: Option<String>,
    /// `awaiting_link`, `unmatched`, `refused` or `deliver`.
    pub status: Option<String>,
    /// `fulfilled`, `invalid_id`, `not_found`, `unauthorized`, or `pending` (not answered yet).
    pub fulfillment: Option<String>,
    /// Only entitlement ids after this one: pass the last id of a page to get the next.
    pub after: Option<String>,
    /// At most this many (default 1,000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// The SQL condition of an open entitlement: awaiting a link, failed, or
/// unmatched but of one of `reopen` campaigns (bound from `$first`).
fn open_condition(table: &str, reopen: usize, first: usize) -> String {
    let mut condition = format!("{table}status IN ('awaiting_link', 'failed')");
    if reopen > 0 {
        condition.push_str(&format!(
            " OR ({table}status = 'unmatched' AND {table}campaign_id IN ({}))",
            list_placeholders(first, reopen)
        ));
    }
    condition
}

/// Twitch's answer for one entitlement marked FULFILLED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fulfilment {
    /// `SUCCESS`.
    Fulfilled,
    /// An answer that will not change (`INVALID_ID`, `NOT_FOUND`,
    /// `UNAUTHORIZED`): recorded as it is, never sent again.
    Permanent(&'static str),
    /// `UPDATE_FAILED`, or no answer: sent again after `after_ms`.
    Retry { after_ms: i64, error: String },
}

/// The backlog of the EventSub path, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntitlementBacklog {
    pub awaiting_link: i64,
    pub to_deliver: i64,
    pub to_fulfil: i64,
}

impl Store {
    /// Stores the engine's decisions: a new entitlement is inserted; a
    /// decision replaces only a row still awaiting a link (a replayed
    /// decision changes nothing). Returns how many rows changed. Under
    /// `fence` they are refused whole when the partition's lease is lost
    /// ([`StoreError::LeaseLost`]), as grants and checkpoints are.
    pub async fn record_entitlement_decisions(
        &self,
        decisions: &[EntitlementDecision],
        fence: Option<&Fence>,
    ) -> Result<u64, StoreError> {
        if decisions.is_empty() {
            return Ok(0);
        }
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = fence {
            Store::check_fence(&mut tx, fence).await?;
        }
        let now = now_ms();
        let (mut changed, mut deliverable) = (0, 0);
        for d in decisions {
            let e = &d.entitlement;
            let body = serde_json::to_string(e).map_err(|err| StoreError::Encode(err.to_string()))?;
            let (items, reason) = match &d.decision {
                Decision::Deliver(items) => {
                    (Some(serde_json::to_string(items).map_err(|err| StoreError::Encode(err.to_string()))?), None)
                }
                Decision::Refused(reason) | Decision::Unmatched(reason) | Decision::Failed(reason) => {
                    (None, Some(reason.as_str()))
                }
                Decision::AwaitingLink => (None, None),
            };
            let done = sqlx::query(
                "INSERT INTO entitlements (entitlement_id, campaign_id, user_id, benefit_id, body, status, account, \
                 items, reason, first_seq, decided_seq, campaign_revision, plugin_hash, created_at, decided_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) \
                 ON CONFLICT (entitlement_id) DO UPDATE SET status = excluded.status, account = excluded.account, \
                 items = excluded.items, reason = excluded.reason, decided_seq = excluded.decided_seq, \
                 campaign_revision = excluded.campaign_revision, plugin_hash = excluded.plugin_hash, \
                 decided_at = excluded.decided_at \
                 WHERE entitlements.status IN ('awaiting_link', 'failed', 'unmatched') \
                 AND excluded.status <> 'awaiting_link'",
            )
            .bind(&e.entitlement_id)
            .bind(&e.campaign_id)
            .bind(&e.user_id)
            .bind(&e.benefit_id)
            .bind(body)
            .bind(d.decision.status())
            .bind(d.account.as_deref())
            .bind(items)
            .bind(reason)
            .bind(d.first_seq)
            .bind(d.seq)
            .bind(&d.campaign_revision)
            .bind(&d.plugin_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            changed += done;
            if done > 0 && matches!(d.decision, Decision::Deliver(_)) {
                deliverable += 1;
            }
        }
        tx.commit().await?;
        if deliverable > 0 {
            self.signals.items_decided();
        }
        Ok(changed)
    }

    /// What is stored of each of `ids` that is.
    pub async fn entitlements_seen(&self, ids: &[&str]) -> Result<HashMap<String, Seen>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT entitlement_id, first_seq, decided_seq, status, account FROM entitlements \
                 WHERE entitlement_id IN ({})",
                list_placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, i64, i64, String, Option<String>)>(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for (id, first_seq, decided_seq, status, account) in query.fetch_all(&self.pool).await? {
                let awaiting =
                    [entitlement_status::AWAITING_LINK, entitlement_status::FAILED, entitlement_status::UNMATCHED]
                        .contains(&status.as_str());
                found.insert(id, Seen { first_seq, decided_seq, awaiting, account });
            }
        }
        Ok(found)
    }

    /// The open entitlements (see [`Store::announce_links`]) of each of
    /// `user_ids` that has some, with the inbox event that last decided
    /// each, at most `limit` in all, in the order they arrived.
    pub async fn open_entitlements(
        &self,
        user_ids: &[String],
        reopen: &[String],
        limit: u32,
    ) -> Result<Vec<(Entitlement, i64)>, StoreError> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT body, decided_seq FROM entitlements WHERE ({}) AND user_id IN ({}) \
                 ORDER BY first_seq LIMIT {limit}",
                open_condition("", reopen.len(), 1),
                list_placeholders(1 + reopen.len(), chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
            for campaign in reopen {
                query = query.bind(campaign);
            }
            for id in chunk {
                query = query.bind(id);
            }
            for (body, decided_seq) in query.fetch_all(&self.pool).await? {
                let e = serde_json::from_str(&body).map_err(|e| StoreError::Encode(e.to_string()))?;
                found.push((e, decided_seq));
            }
            if found.len() >= limit as usize {
                found.truncate(limit as usize);
                break;
            }
        }
        Ok(found)
    }

    /// Tells the engine of links that let it decide open entitlements: for
    /// each of `user_ids` that is linked and has entitlements awaiting a
    /// link, whose rule failed, or unmatched but of a campaign in `reopen`
    /// (loaded now), a [`Linked`] event goes into the inbox. Called after
    /// links are stored, after the engine stores open entitlements (so
    /// whichever commits second sees the other), and by the periodic sweep.
    /// An event is keyed by its viewer, account, entitlements and the inbox
    /// event that last decided each: the same news twice is stored once,
    /// while an entitlement whose rule failed again is news. Returns how
    /// many events were new.
    pub async fn announce_links(&self, user_ids: &[String], reopen: &[String]) -> Result<u64, StoreError> {
        let mut announced = 0;
        // A thousand viewers at a time: each one's open entitlements fit one read.
        for users in user_ids.chunks(USERS_PER_ANNOUNCEMENT) {
            let links = self.links_of(users).await?;
            if links.is_empty() {
                continue;
            }
            let linked: Vec<String> = links.keys().cloned().collect();
            let mut by_user: HashMap<String, Vec<(Entitlement, i64)>> = HashMap::new();
            for (e, decided_seq) in self.open_entitlements(&linked, reopen, MAX_ANNOUNCED).await? {
                by_user.entry(e.user_id.clone()).or_default().push((e, decided_seq));
            }
            let mut events = Vec::new();
            for (user, open) in by_user {
                let Some(account) = links.get(&user) else { continue };
                for chunk in open.chunks(MAX_LINKED_ENTITLEMENTS) {
                    let mut hash = sha2::Sha256::new();
                    for part in std::iter::once(account.as_str())
                        .chain(chunk.iter().flat_map(|(e, _)| [e.entitlement_id.as_str()]))
                    {
                        hash.update((part.len() as u64).to_be_bytes());
                        hash.update(part.as_bytes());
                    }
                    for (_, decided_seq) in chunk {
                        hash.update(decided_seq.to_be_bytes());
                    }
                    let key = format!("link:{user}:{}", hex::encode(&hash.finalize()[..16]));
                    let event = Linked {
                        twitch_user_id: user.clone(),
                        game_account_id: account.clone(),
                        entitlements: chunk.iter().map(|(e, _)| e.clone()).collect(),
                    };
                    events.push((key, event));
                }
            }
            if !events.is_empty() {
                announced += self.insert_linked(&events).await?.accepted;
            }
        }
        Ok(announced)
    }

    /// The open entitlements (awaiting a link, or failed) of each of
    /// `user_ids`: (user, entitlement id, the inbox event that brought it).
    pub async fn open_of(&self, user_ids: &[String]) -> Result<Vec<(String, String, i64)>, StoreError> {
        let mut found = Vec::new();
        for chunk in user_ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT user_id, entitlement_id, first_seq FROM entitlements \
                 WHERE status IN ('awaiting_link', 'failed') AND user_id IN ({})",
                list_placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String, i64)>(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// Linked viewers with open entitlements (awaiting a link, failed, or
    /// unmatched of a campaign in `reopen`), at most `limit`: what the
    /// periodic sweep announces again.
    pub async fn linked_with_open_entitlements(
        &self,
        reopen: &[String],
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT e.user_id FROM entitlements e JOIN account_links l ON l.twitch_user_id = e.user_id \
             WHERE {} ORDER BY e.user_id LIMIT {limit}",
            open_condition("e.", reopen.len(), 1)
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for campaign in reopen {
            query = query.bind(campaign);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// Up to `limit` entitlements decided with items the sink has not confirmed, in decision order.
    pub async fn items_to_deliver(&self, limit: u32) -> Result<Vec<EntitlementRow>, StoreError> {
        let rows: Vec<StoredRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM entitlements WHERE status = 'deliver' AND delivered_at IS NULL \
             ORDER BY decided_seq, entitlement_id LIMIT $1"
        ))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(EntitlementRow::from).collect())
    }

    /// Records that the sink confirmed the items of `ids`.
    pub async fn mark_items_delivered(&self, ids: &[&str]) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let now = now_ms();
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE entitlements SET delivered_at = $1 WHERE delivered_at IS NULL AND entitlement_id IN ({})",
                list_placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(now);
            for id in chunk {
                query = query.bind(*id);
            }
            query.execute(&self.pool).await?;
        }
        self.signals.items_delivered();
        Ok(())
    }

    /// Up to `limit` delivered entitlements Twitch has not answered for, due by `now`.
    pub async fn entitlements_to_fulfil(&self, now: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT entitlement_id FROM entitlements WHERE delivered_at IS NOT NULL AND fulfillment IS NULL \
             AND fulfil_after <= $1 ORDER BY fulfil_after, entitlement_id LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the next delivered entitlement waiting for a retry is due, if any.
    pub async fn next_fulfil_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(fulfil_after) FROM entitlements WHERE delivered_at IS NOT NULL AND fulfillment IS NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Records Twitch's answers to FULFILLED, in one transaction.
    pub async fn record_fulfilment(&self, answers: &[(String, Fulfilment)]) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for (id, answer) in answers {
            let query = match answer {
                Fulfilment::Fulfilled => sqlx::query(
                    "UPDATE entitlements SET fulfillment = 'fulfilled', fulfilled_at = $2, \
                     fulfil_attempts = fulfil_attempts + 1, fulfil_error = NULL WHERE entitlement_id = $1",
                )
                .bind(id)
                .bind(now),
                Fulfilment::Permanent(status) => sqlx::query(
                    "UPDATE entitlements SET fulfillment = $2, fulfil_attempts = fulfil_attempts + 1 \
                     WHERE entitlement_id = $1",
                )
                .bind(id)
                .bind(*status),
                Fulfilment::Retry { after_ms, error } => sqlx::query(
                    "UPDATE entitlements SET fulfil_after = $2, fulfil_error = $3, \
                     fulfil_attempts = fulfil_attempts + 1 WHERE entitlement_id = $1",
                )
                .bind(id)
                .bind(*after_ms)
                .bind(error.as_str()),
            };
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Lists entitlements by id.
    pub async fn list_entitlements(&self, filter: &EntitlementFilter) -> Result<Vec<EntitlementRow>, StoreError> {
        let rows: Vec<StoredRow> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM entitlements \
             WHERE ($1 = '' OR campaign_id = $1) AND ($2 = '' OR user_id = $2) AND ($3 = '' OR status = $3) \
             AND ($4 = '' OR ($4 = 'pending' AND fulfillment IS NULL) OR fulfillment = $4) \
             AND entitlement_id > $5 ORDER BY entitlement_id LIMIT $6"
        ))
        .bind(filter.campaign_id.clone().unwrap_or_default())
        .bind(filter.user_id.clone().unwrap_or_default())
        .bind(filter.status.clone().unwrap_or_default())
        .bind(filter.fulfillment.clone().unwrap_or_default())
        .bind(filter.after.clone().unwrap_or_default())
        .bind(filter.limit.unwrap_or(1_000).min(10_000) as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(EntitlementRow::from).collect())
    }

    /// One entitlement, by Twitch's id.
    pub async fn entitlement(&self, id: &str) -> Result<Option<EntitlementRow>, StoreError> {
        let row: Option<StoredRow> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM entitlements WHERE entitlement_id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(EntitlementRow::from))
    }

    /// Marks a delivered entitlement FULFILLED again after Twitch refused it
    /// for good (`invalid_id`, `not_found`, `unauthorized`: an operator fixed
    /// the client id or its token), as a failed manifest can be retried.
    /// False when it is not in such a state (or does not exist).
    pub async fn retry_fulfilment(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE entitlements SET fulfillment = NULL, fulfil_error = NULL, fulfil_after = 0 \
             WHERE entitlement_id = $1 AND delivered_at IS NOT NULL \
             AND fulfillment IN ('invalid_id', 'not_found', 'unauthorized')",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        let retried = done.rows_affected() > 0;
        if retried {
            self.signals.items_delivered();
        }
        Ok(retried)
    }

    /// Each campaign's entitlements by outcome (`awaiting_link`, `unmatched`,
    /// `refused`, `failed`, `to_deliver`, `delivered`, `fulfilled`,
    /// `fulfil_refused`): what the console shows where VHS campaigns show grants.
    pub async fn entitlement_outcomes(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT campaign_id, outcome, COUNT(*) FROM (SELECT campaign_id, CASE \
             WHEN status <> 'deliver' THEN status \
             WHEN fulfillment = 'fulfilled' THEN 'fulfilled' \
             WHEN fulfillment IS NOT NULL THEN 'fulfil_refused' \
             WHEN delivered_at IS NOT NULL THEN 'delivered' \
             ELSE 'to_deliver' END AS outcome FROM entitlements) AS o \
             GROUP BY campaign_id, outcome ORDER BY campaign_id, outcome",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Each campaign's most frequent reasons for refusing entitlements (at most `per_campaign` each).
    pub async fn entitlement_refusals(&self, per_campaign: usize) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT campaign_id, reason, COUNT(*) AS n FROM entitlements WHERE status IN ('refused', 'failed') \
             GROUP BY campaign_id, reason ORDER BY campaign_id, n DESC, reason",
        )
        .fetch_all(&self.pool)
        .await?;
        // Rows come campaign by campaign, most frequent first: keep the head of each run.
        let mut out: Vec<(String, String, i64)> = Vec::new();
        let mut seen_in_campaign = 0;
        for (campaign, reason, n) in rows {
            let same = out.last().is_some_and(|(c, _, _)| *c == campaign);
            seen_in_campaign = if same { seen_in_campaign + 1 } else { 0 };
            if seen_in_campaign < per_campaign {
                out.push((campaign, reason.unwrap_or_default(), n));
            }
        }
        Ok(out)
    }

    /// How much of the EventSub path is waiting.
    pub async fn entitlement_backlog(&self) -> Result<EntitlementBacklog, StoreError> {
        let (awaiting_link, to_deliver, to_fulfil): (i64, i64, i64) = sqlx::query_as(
            "SELECT \
             COUNT(CASE WHEN status = 'awaiting_link' THEN 1 END), \
             COUNT(CASE WHEN status = 'deliver' AND delivered_at IS NULL THEN 1 END), \
             COUNT(CASE WHEN delivered_at IS NOT NULL AND fulfillment IS NULL THEN 1 END) \
             FROM entitlements",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(EntitlementBacklog { awaiting_link, to_deliver, to_fulfil })
    }
}
