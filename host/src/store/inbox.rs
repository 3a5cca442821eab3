//! The durable inbox: ingest appends, the engine reads in order.

use super::encoding::{decode_game_state, decode_heartbeat, encode_game_state, encode_heartbeat};
use super::{Store, StoreError};
use crate::domain::{now_ms, Event, GameStateEvent, Heartbeat, InboxEvent};

/// How a batch of heartbeats was taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Newly stored.
    pub accepted: u64,
    /// Already stored under the same id (Twitch's retries).
    pub duplicates: u64,
}

impl Store {
    /// Stores heartbeats in one transaction: all of them or none.
    pub async fn insert_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<InsertOutcome, StoreError> {
        let encoded = heartbeats.iter().map(encode_heartbeat).collect::<Result<Vec<_>, _>>()?;
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let mut outcome = InsertOutcome::default();
        let now = now_ms();
        for (hb, (header, viewers)) in heartbeats.iter().zip(encoded) {
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
        self.signals.inbox_grew();
        Ok(outcome)
    }

    /// Stores one accepted E2 message. Its id is unique per message, so a
    /// client's resend after a reconnect is a new event; applying the same
    /// state again changes nothing, which is what makes it harmless.
    pub async fn insert_game_state(&self, event: &GameStateEvent) -> Result<(), StoreError> {
        let header = encode_game_state(event)?;
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
        self.signals.inbox_grew();
        Ok(())
    }

    /// Up to `limit` events after `seq`, in order.
    pub async fn inbox_after(&self, seq: i64, limit: u32) -> Result<Vec<InboxEvent>, StoreError> {
        let rows: Vec<InboxRow> = sqlx::query_as(
            "SELECT seq, source, header, viewers, received_at FROM inbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(InboxRow::decode).collect()
    }
}

/// An inbox row as stored.
#[derive(sqlx::FromRow)]
struct InboxRow {
    seq: i64,
    source: String,
    header: String,
    viewers: Option<Vec<u8>>,
    received_at: i64,
}

impl InboxRow {
    fn decode(self) -> Result<InboxEvent, StoreError> {
        let seq = self.seq;
        let corrupt = |reason| StoreError::Corrupt { seq, reason };
        let event = if self.source == "e2" {
            Event::GameState(decode_game_state(&self.header).map_err(corrupt)?)
        } else {
            Event::Heartbeat(decode_heartbeat(&self.header, self.viewers.unwrap_or_default()).map_err(corrupt)?)
        };
        Ok(InboxEvent { seq, received_at_ms: self.received_at, event })
    }
}
