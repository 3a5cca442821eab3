//! Entitlement sinks' progress: one cursor per sink over the grants, in id
//! order. A batch is read after the cursor, delivered, and only then the
//! cursor moves past it, so a crash in between delivers that batch again
//! (the sink deduplicates by each grant's idempotency key).

use super::grants::GRANT_COLUMNS;
use super::{GrantRow, Store, StoreError};
use crate::domain::now_ms;

/// A sink's progress, for the API and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkBacklog {
    pub delivered_through: i64,
    /// Grants not yet delivered.
    pub pending: i64,
    /// When the oldest of them was made (ms since the epoch).
    pub oldest_pending_at: Option<i64>,
    /// Failed tries of the batch it is on (0: not failing), and the last error.
    pub failed_attempts: i64,
    pub last_error: Option<String>,
}

impl Store {
    /// The id of the last grant `sink` has acknowledged (0: none yet).
    pub async fn sink_cursor(&self, sink: &str) -> Result<i64, StoreError> {
        let at: Option<i64> = sqlx::query_scalar("SELECT delivered_through FROM sink_cursors WHERE sink = $1")
            .bind(sink)
            .fetch_optional(&self.pool)
            .await?;
        Ok(at.unwrap_or(0))
    }

    /// Up to `limit` grants after `after`, in id order.
    pub async fn grants_for_sink(&self, after: i64, limit: u32) -> Result<Vec<GrantRow>, StoreError> {
        Ok(sqlx::query_as(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id > $1 ORDER BY id LIMIT $2"))
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Records that `sink` acknowledged every grant through `through`.
    pub async fn advance_sink(&self, sink: &str, through: i64) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        sqlx::query(
            "INSERT INTO sink_cursors (sink, delivered_through, attempts, last_error, updated_at) \
             VALUES ($1, $2, 0, NULL, $3) ON CONFLICT (sink) DO UPDATE SET \
             delivered_through = CASE WHEN sink_cursors.delivered_through > $2 \
             THEN sink_cursors.delivered_through ELSE $2 END, attempts = 0, last_error = NULL, updated_at = $3",
        )
        .bind(sink)
        .bind(through)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a failed delivery attempt of `sink` (the cursor stays).
    pub async fn record_sink_failure(&self, sink: &str, error: &str) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        sqlx::query(
            "INSERT INTO sink_cursors (sink, delivered_through, attempts, last_error, updated_at) \
             VALUES ($1, 0, 1, $2, $3) ON CONFLICT (sink) DO UPDATE SET \
             attempts = sink_cursors.attempts + 1, last_error = $2, updated_at = $3",
        )
        .bind(sink)
        .bind(error)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// How far behind `sink` is.
    pub async fn sink_backlog(&self, sink: &str) -> Result<SinkBacklog, StoreError> {
        let cursor: Option<(i64, i64, Option<String>)> =
            sqlx::query_as("SELECT delivered_through, attempts, last_error FROM sink_cursors WHERE sink = $1")
                .bind(sink)
                .fetch_optional(&self.pool)
                .await?;
        let (delivered_through, failed_attempts, last_error) = cursor.unwrap_or((0, 0, None));
        let (pending, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM grants WHERE id > $1")
                .bind(delivered_through)
                .fetch_one(&self.pool)
                .await?;
        Ok(SinkBacklog { delivered_through, pending, oldest_pending_at: oldest, failed_attempts, last_error })
    }
}
