//! Grants, stored exactly once per (campaign, reward, user, key).

use std::sync::Arc;

use serde::Serialize;

use super::{list_params, values_params, Backend, Fence, Store, StoreError};

/// The PostgreSQL advisory lock that orders grant commits across hosts ("dropsgrn").
const GRANTS_ORDER_LOCK: i64 = 0x6472_6f70_7367_726e;
use crate::domain::{now_ms, NewGrant};

/// A stored grant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct GrantRow {
    pub id: i64,
    pub campaign_id: String,
    pub reward_id: String,
    pub user_id: String,
    pub grant_key: String,
    pub broadcaster_id: String,
    pub game: String,
    pub client_id: String,
    pub reason: String,
    pub campaign_revision: String,
    pub plugin_hash: String,
    pub event_minute: i64,
    /// When it was stored (ms since the epoch).
    pub created_at: i64,
    /// The Twitch manifest it is in, once it is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_id: Option<String>,
}

/// The columns of a [`GrantRow`], for every query that reads one.
pub(super) const GRANT_COLUMNS: &str = "id, campaign_id, reward_id, user_id, grant_key, broadcaster_id, game, \
     client_id, reason, campaign_revision, plugin_hash, event_minute, created_at, manifest_id";

/// Which grants to list (every filter optional; `after_id` + `limit` page by grant id).
#[derive(Debug, Default, Clone, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GrantFilter {
    pub campaign_id: Option<String>,
    pub reward_id: Option<String>,
    /// The viewer (game account id).
    pub user_id: Option<String>,
    pub broadcaster_id: Option<String>,
    /// Where the grant's delivery to Twitch stands: `unbatched` (in no
    /// manifest yet) or its manifest's status (`uploaded`, `failed`, ...).
    pub delivery: Option<String>,
    /// Granted at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<time::OffsetDateTime>,
    /// Granted before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<time::OffsetDateTime>,
    /// Only grants with an id above this: pass the last id of a page to get the next.
    pub after_id: Option<i64>,
    /// At most this many (default 10,000).
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<u32>,
}

impl GrantFilter {
    /// The filter's `delivery` values.
    pub const DELIVERY: [&'static str; 7] =
        ["unbatched", "pending", "written", "uploading", "uploaded", "failed", "not_configured"];
}

fn ms(t: Option<time::OffsetDateTime>, default: i64) -> i64 {
    t.map_or(default, |t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(default))
}

/// Grants per statement: three parameters each, well under SQLite's and
/// PostgreSQL's limits on parameters per statement.
const ROWS_PER_STATEMENT: usize = 4000;

/// The insert of grants that share an origin: the origin's columns are
/// bound once per statement, each grant binds only (reward, user, key).
/// `VALUES` names its columns `column1`.. on SQLite and PostgreSQL alike;
/// `WHERE true` tells SQLite's parser the `ON CONFLICT` is the upsert's.
fn insert_sql(backend: Backend, rows: usize) -> String {
    format!(
        "INSERT INTO grants (campaign_id, broadcaster_id, game, client_id, reason, campaign_revision, plugin_hash, \
         inbox_seq, event_minute, created_at, reward_id, user_id, grant_key) \
         SELECT {}, column1, column2, column3 FROM (VALUES {}) AS v WHERE true \
         ON CONFLICT (campaign_id, reward_id, user_id, grant_key) DO NOTHING",
        list_params(backend, 1, 10),
        values_params(backend, 10, rows, 3)
    )
}

impl Store {
    /// Stores grants, skipping any already made; returns how many were new
    /// (and wakes the manifest batcher for them). One transaction; grants of
    /// the same call share a statement's origin columns. Under `fence` (the
    /// engine partition's lease) they are refused whole, with
    /// [`StoreError::LeaseLost`], when the lease no longer names this
    /// process at its epoch: a host paused past its lease writes nothing.
    pub async fn insert_grants(&self, grants: &[NewGrant], fence: Option<&Fence>) -> Result<u64, StoreError> {
        if grants.is_empty() {
            return Ok(0);
        }
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        if let Some(fence) = fence {
            Store::check_fence(&mut tx, fence).await?;
        }
        let shared = self.backend == Backend::Postgres;
        if shared {
            // Sinks walk grants by id and never go back: ids must commit in
            // order across hosts, as inbox sequence numbers do (store/inbox.rs).
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(GRANTS_ORDER_LOCK).execute(&mut *tx).await?;
        }
        let now = now_ms();
        let mut inserted = 0;
        let mut rest = grants;
        while let Some(first) = rest.first() {
            let same = rest
                .iter()
                .take(ROWS_PER_STATEMENT)
                .take_while(|g| Arc::ptr_eq(&g.origin, &first.origin) || g.origin == first.origin)
                .count();
            let (chunk, after) = rest.split_at(same);
            rest = after;
            let o = &first.origin;
            let sql = insert_sql(self.backend, chunk.len());
            let mut q = sqlx::query(&sql)
                .bind(&o.campaign_id)
                .bind(&o.broadcaster_id)
                .bind(&o.game)
                .bind(&o.client_id)
                .bind(o.reason)
                .bind(&o.campaign_revision)
                .bind(&o.plugin_hash)
                .bind(o.inbox_seq)
                .bind(i64::from(o.event_minute))
                .bind(now);
            for g in chunk {
                q = q.bind(&*g.reward_id).bind(&*g.user_id).bind(&*g.grant_key);
            }
            inserted += q.execute(&mut *tx).await?.rows_affected();
        }
        if shared && inserted > 0 {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::notify::GRANTS)
                .bind(self.notification(inserted))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.signals.grants_stored(inserted);
        Ok(inserted)
    }

    /// Lists grants in the order they were made.
    pub async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<GrantRow>, StoreError> {
        let columns: String = GRANT_COLUMNS.split(", ").map(|c| format!("g.{c}")).collect::<Vec<_>>().join(", ");
        let rows = sqlx::query_as(&format!(
            "SELECT {columns} FROM grants g LEFT JOIN manifests m ON m.id = g.manifest_id \
             WHERE ($1 = '' OR g.campaign_id = $1) AND ($2 = '' OR g.user_id = $2) AND g.id > $3 \
             AND ($5 = '' OR g.reward_id = $5) AND ($6 = '' OR g.broadcaster_id = $6) \
             AND ($7 = '' OR ($7 = 'unbatched' AND g.manifest_id IS NULL) OR m.status = $7) \
             AND g.created_at >= $8 AND g.created_at < $9 \
             ORDER BY g.id LIMIT $4"
        ))
        .bind(filter.campaign_id.clone().unwrap_or_default())
        .bind(filter.user_id.clone().unwrap_or_default())
        .bind(filter.after_id.unwrap_or(0))
        .bind(filter.limit.unwrap_or(10_000).min(100_000) as i64)
        .bind(filter.reward_id.clone().unwrap_or_default())
        .bind(filter.broadcaster_id.clone().unwrap_or_default())
        .bind(filter.delivery.clone().unwrap_or_default())
        .bind(ms(filter.since, i64::MIN))
        .bind(ms(filter.until, i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }
}
