//! The durable inbox: ingest appends, the engine reads in order.

use sqlx::Row;

use super::{now_ms, Store, StoreError};
use crate::ingest::game_state::GameStateEvent;
use crate::ingest::heartbeat::Heartbeat;

/// How a batch of heartbeats was taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Newly stored.
    pub accepted: u64,
    /// Already stored under the same id (Twitch's retries).
    pub duplicates: u64,
}

/// An event read back from the inbox.
#[derive(Debug)]
pub struct InboxEvent {
    pub seq: i64,
    /// When the host stored it, in unix milliseconds (the host's clock).
    pub received_at_ms: i64,
    pub event: Event,
}

/// What the inbox holds: who watches (VHS) and what happens in the game (E2).
#[derive(Debug)]
pub enum Event {
    Heartbeat(Heartbeat),
    GameState(GameStateEvent),
}

impl Store {
    /// Stores heartbeats in one transaction: all of them or none.
    pub async fn insert_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<InsertOutcome, StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let mut outcome = InsertOutcome::default();
        let now = now_ms();
        for hb in heartbeats {
            let (header, viewers) = hb.to_stored();
            let done = sqlx::query(
                "INSERT INTO inbox (source, dedup_key, header, viewers, received_at) \
                 VALUES ('vhs', $1, $2, $3, $4) ON CONFLICT (dedup_key) DO NOTHING",
            )
            .bind(&hb.id.0)
            .bind(header)
            .bind(viewers)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                outcome.accepted += 1;
            } else {
                outcome.duplicates += 1;
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Stores one accepted E2 message. Its id is unique per message, so a
    /// client's resend after a reconnect is a new event; applying the same
    /// state again changes nothing, which is what makes it harmless.
    pub async fn insert_game_state(&self, event: &GameStateEvent) -> Result<(), StoreError> {
        let header = serde_json::to_string(event).map_err(|e| StoreError::Encode(e.to_string()))?;
        let _guard = self.write_lock().await;
        sqlx::query(
            "INSERT INTO inbox (source, dedup_key, header, viewers, received_at) \
             VALUES ('e2', $1, $2, NULL, $3) ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(format!("e2:{}", event.id))
        .bind(header)
        .bind(event.received_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Up to `limit` events after `seq`, in order.
    pub async fn inbox_after(&self, seq: i64, limit: u32) -> Result<Vec<InboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, source, header, viewers, received_at FROM inbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let seq: i64 = row.try_get("seq")?;
                let source: String = row.try_get("source")?;
                let received_at_ms: i64 = row.try_get("received_at")?;
                let header: String = row.try_get("header")?;
                let event = if source == "e2" {
                    let event = serde_json::from_str(&header)
                        .map_err(|e| StoreError::Corrupt { seq, reason: format!("game state: {e}") })?;
                    Event::GameState(event)
                } else {
                    let viewers: Option<Vec<u8>> = row.try_get("viewers")?;
                    let heartbeat = Heartbeat::from_stored(&header, viewers.unwrap_or_default())
                        .map_err(|reason| StoreError::Corrupt { seq, reason })?;
                    Event::Heartbeat(heartbeat)
                };
                Ok(InboxEvent { seq, received_at_ms, event })
            })
            .collect()
    }

    /// The newest sequence number in the inbox (0 when empty).
    pub async fn inbox_head(&self) -> Result<i64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM inbox").fetch_one(&self.pool).await?;
        Ok(head.unwrap_or(0))
    }

    /// Number of heartbeats stored.
    pub async fn inbox_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM inbox").fetch_one(&self.pool).await?)
    }
}
