//! How campaigns are progressing, for the console and `GET /v1/overview`:
//! grants per reward (in all and over time) and viewers' watch time.

use super::{Store, StoreError};

/// How many of a campaign's longest watchers a checkpoint notes for the console.
pub const TOP_VIEWERS_KEPT: usize = 100;

/// Grants of one reward in one time bucket.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GrantBucket {
    pub campaign_id: String,
    pub reward_id: String,
    /// The bucket's start (ms since the epoch).
    pub bucket: i64,
    pub grants: i64,
}

/// A viewer's counted watch time in a campaign.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ViewerMinutes {
    pub viewer_id: String,
    pub minutes: i64,
}

impl Store {
    /// Grants per (campaign, reward), in all.
    pub async fn grants_per_reward(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as("SELECT campaign_id, reward_id, COUNT(*) FROM grants GROUP BY campaign_id, reward_id")
            .fetch_all(&self.pool)
            .await?)
    }

    /// Grants per (campaign, reward) stored since `since_ms`, counted in buckets of `bucket_ms`.
    pub async fn grants_over_time(&self, since_ms: i64, bucket_ms: i64) -> Result<Vec<GrantBucket>, StoreError> {
        // Materialized first: otherwise SQLite groups by walking the whole
        // unique index (400 ms over a million grants) instead of the window's
        // rows through `grants_by_time` (45 ms for 60,000 of them).
        Ok(sqlx::query_as(
            "WITH recent AS MATERIALIZED (SELECT campaign_id, reward_id, created_at FROM grants WHERE created_at >= $2) \
             SELECT campaign_id, reward_id, (created_at / $1) * $1 AS bucket, COUNT(*) AS grants FROM recent \
             GROUP BY campaign_id, reward_id, (created_at / $1) * $1",
        )
        .bind(bucket_ms.max(1))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Each campaign's rule state as of the engine's last checkpoint: keys,
    /// and the bytes of keys and values (the plugin limit adds an overhead per key).
    pub async fn rule_state_sizes(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT campaign_id, COUNT(*), COALESCE(SUM(LENGTH(key) + LENGTH(value)), 0) FROM campaign_state \
             GROUP BY campaign_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// How many viewers have counted watch time in `campaign_id`, and the
    /// `limit` who watched longest (as of the engine's last checkpoint, which
    /// writes both; up to [`TOP_VIEWERS_KEPT`] of them).
    pub async fn viewer_progress(
        &self,
        campaign_id: &str,
        limit: u32,
    ) -> Result<(i64, Vec<ViewerMinutes>), StoreError> {
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT viewers, top FROM campaign_viewers WHERE campaign_id = $1")
                .bind(campaign_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((viewers, top)) = row else { return Ok((0, Vec::new())) };
        let mut top: Vec<ViewerMinutes> = serde_json::from_str(&top).map_err(|e| StoreError::Corrupt {
            seq: 0,
            reason: format!("campaign_viewers.top of `{campaign_id}`: {e}"),
        })?;
        top.truncate(limit as usize);
        Ok((viewers, top))
    }
}
