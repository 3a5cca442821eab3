//! Watch-time checkpoints: the engine's in-memory state and its inbox position,
//! committed together so a restart resumes exactly where the state left off.

use super::cluster::Fence;
use super::encoding::decode_heartbeat;
use super::segments::{CampaignViewers, SegmentRef};
use super::{list_placeholders, values_placeholders, Store, StoreError};
use crate::domain::{now_ms, Heartbeat, Paused};

/// One (campaign, viewer) watch-time entry, as the `watch_time` table of
/// hosts before watch-time segments kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTimeRow {
    pub campaign_id: String,
    pub viewer_id: String,
    pub minutes: u32,
    pub last_minute: u32,
    pub recent_mask: u64,
}

/// A broadcaster's latest E2 game state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct GameStateRow {
    /// Game account id.
    pub broadcaster_id: String,
    pub twitch_user_id: String,
    /// JSON.
    pub state: String,
    /// Unix minute of the last change.
    #[sqlx(try_from = "i64")]
    pub changed_minute: u32,
}

/// Which heartbeat says who is watching a broadcaster now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherRow {
    pub broadcaster_id: String,
    pub inbox_seq: i64,
    pub minute: u32,
    /// When the heartbeat arrived (read from the inbox, not stored here).
    pub received_at_ms: i64,
}

/// The engine state as of an inbox position.
#[derive(Debug, Default)]
pub struct Checkpoint {
    pub inbox_seq: i64,
    /// Watch-time rows an older host stored a row at a time (read until a
    /// base segment of their campaign replaces them).
    pub legacy_watch_time: Vec<WatchTimeRow>,
    /// Committed watch-time segments, oldest first: applied in order after
    /// the legacy rows, each row replacing what came before it.
    pub segments: Vec<SegmentRef>,
    /// Rules' state: (campaign, key, value).
    pub campaign_state: Vec<(String, String, Vec<u8>)>,
    /// Campaigns paused by their circuit breaker.
    pub breakers: Vec<(String, Paused)>,
    pub game_state: Vec<GameStateRow>,
    /// The latest heartbeat of each broadcaster, viewers included.
    pub watchers: Vec<(WatcherRow, Heartbeat)>,
}

/// Which engine partition a checkpoint is of, and the lease it is written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKey {
    /// The partition (0-based).
    pub index: u32,
    /// How many there are (every partition's checkpoint is needed before the inbox is pruned).
    pub count: u32,
    /// The lease the engine holds the partition by; a write without it is refused.
    pub fence: Option<Fence>,
}

impl Default for PartitionKey {
    /// The one partition of a single engine, unfenced (tests, tools).
    fn default() -> Self {
        PartitionKey { index: 0, count: 1, fence: None }
    }
}

/// What a checkpoint commits.
pub struct CheckpointWrite<'a> {
    pub partition: &'a PartitionKey,
    pub inbox_seq: i64,
    /// Watch-time segments written for this checkpoint ([`Store::write_segment`]), committed by it.
    pub segments: &'a [i64],
    /// Campaigns whose segments here include a base, with the base's first
    /// segment: their older segments and legacy rows go.
    pub rebased: &'a [(String, i64)],
    /// What the console shows of the campaigns whose viewers changed.
    pub viewers: &'a [CampaignViewers],
    /// Changed rules' state: (campaign, key, value or None to delete).
    pub campaign_state: &'a [(String, String, Option<Vec<u8>>)],
    /// Every paused campaign (the whole set).
    pub breakers: &'a [(String, Paused)],
    /// Viewer lists from this event on are still needed (a paused campaign).
    pub keep_from_seq: Option<i64>,
    /// Changed game states.
    pub game_state: &'a [GameStateRow],
    /// Broadcasters whose latest heartbeat changed.
    pub watchers: &'a [WatcherRow],
    /// Broadcasters whose viewers are no longer needed (outside the watching window).
    pub watchers_gone: &'a [String],
}

static ONE_PARTITION: PartitionKey = PartitionKey { index: 0, count: 1, fence: None };

impl Default for CheckpointWrite<'_> {
    fn default() -> Self {
        CheckpointWrite {
            partition: &ONE_PARTITION,
            inbox_seq: 0,
            segments: &[],
            rebased: &[],
            viewers: &[],
            campaign_state: &[],
            breakers: &[],
            keep_from_seq: None,
            game_state: &[],
            watchers: &[],
            watchers_gone: &[],
        }
    }
}

const ROWS_PER_STATEMENT: usize = 1000;

impl Store {
    /// What a development reset of a campaign removes, in one transaction:
    /// its grants, watch-time, rules' state and circuit breaker. Returns the
    /// rows removed. Only for a database no host is serving (the engine keeps
    /// watch-time in memory and would write it back).
    pub async fn reset_campaign(&self, campaign_id: &str) -> Result<u64, StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let mut removed = 0;
        for table in
            ["grants", "watch_time", "watch_time_segments", "campaign_viewers", "campaign_state", "campaign_breakers"]
        {
            removed += sqlx::query(&format!("DELETE FROM {table} WHERE campaign_id = $1"))
                .bind(campaign_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Loads the last checkpoint of partition `part` (empty on a new
    /// database): the rows of the campaigns `owns` says are in it.
    pub async fn load_checkpoint(
        &self,
        part: u32,
        owns: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Checkpoint, StoreError> {
        let part = i64::from(part);
        let seq: Option<i64> = sqlx::query_scalar("SELECT inbox_seq FROM engine_checkpoint WHERE id = $1")
            .bind(part)
            .fetch_optional(&self.pool)
            .await?;
        // Partitions are by campaign id: every partition reads the table and
        // keeps its own campaigns (paid once, when a partition is taken).
        let watch_time: Vec<StoredWatchTime> =
            sqlx::query_as("SELECT campaign_id, viewer_id, minutes, last_minute, recent_mask FROM watch_time")
                .fetch_all(&self.pool)
                .await?;
        let campaign_state: Vec<(String, String, Vec<u8>)> =
            sqlx::query_as("SELECT campaign_id, key, value FROM campaign_state").fetch_all(&self.pool).await?;
        let breakers: Vec<StoredBreaker> = sqlx::query_as(
            "SELECT campaign_id, paused_since_seq, plugin_hash, campaign_revision, reason FROM campaign_breakers \
             WHERE part = $1",
        )
        .bind(part)
        .fetch_all(&self.pool)
        .await?;
        let game_state = sqlx::query_as(
            "SELECT broadcaster_id, twitch_user_id, state, changed_minute FROM game_state WHERE part = $1",
        )
        .bind(part)
        .fetch_all(&self.pool)
        .await?;
        let watchers: Vec<StoredWatcher> = sqlx::query_as(
            "SELECT w.broadcaster_id, w.inbox_seq, w.minute, i.header, i.viewers, i.received_at \
             FROM watchers w JOIN inbox i ON i.seq = w.inbox_seq WHERE w.part = $1",
        )
        .bind(part)
        .fetch_all(&self.pool)
        .await?;
        let segments = self.owned_segments(owns).await?;
        Ok(Checkpoint {
            inbox_seq: seq.unwrap_or(0),
            segments,
            legacy_watch_time: watch_time
                .into_iter()
                .filter(|row| owns(&row.campaign_id))
                .map(StoredWatchTime::into_row)
                .collect(),
            campaign_state: campaign_state.into_iter().filter(|(campaign, _, _)| owns(campaign)).collect(),
            breakers: breakers.into_iter().map(StoredBreaker::into_pause).collect(),
            game_state,
            watchers: watchers.into_iter().map(StoredWatcher::decode).collect::<Result<_, _>>()?,
        })
    }

    /// Campaigns paused by their circuit breaker in any partition, as of each partition's last checkpoint.
    pub async fn paused_campaigns(&self) -> Result<Vec<(String, Paused)>, StoreError> {
        let breakers: Vec<StoredBreaker> = sqlx::query_as(
            "SELECT campaign_id, paused_since_seq, plugin_hash, campaign_revision, reason FROM campaign_breakers",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(breakers.into_iter().map(StoredBreaker::into_pause).collect())
    }

    /// Commits the watch-time segments written for it, the rest of the
    /// changed state and the inbox position in one transaction, then drops the viewer lists the checkpoint has passed
    /// (through the inbox's own writer: the inbox is not written here).
    pub async fn save_checkpoint(&self, write: &CheckpointWrite<'_>) -> Result<(), StoreError> {
        let (inbox_seq, campaign_state) = (write.inbox_seq, write.campaign_state);
        let key = write.partition;
        let part = i64::from(key.index);
        let guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let pruned: Option<i64> = sqlx::query_scalar("SELECT pruned_seq FROM engine_checkpoint WHERE id = $1")
            .bind(part)
            .fetch_optional(&mut *tx)
            .await?;
        let pruned = pruned.unwrap_or(0);
        let prune_to = write.keep_from_seq.map_or(inbox_seq, |keep| inbox_seq.min(keep - 1)).max(pruned);
        for chunk in write.segments.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE watch_time_segments SET committed = 1 WHERE id IN ({})",
                list_placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        for (campaign, first) in write.rebased {
            sqlx::query("DELETE FROM watch_time_segments WHERE campaign_id = $1 AND id < $2")
                .bind(campaign)
                .bind(first)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM watch_time WHERE campaign_id = $1").bind(campaign).execute(&mut *tx).await?;
        }
        for v in write.viewers {
            let top: Vec<serde_json::Value> = v
                .top
                .iter()
                .map(|(viewer_id, minutes)| serde_json::json!({ "viewer_id": viewer_id, "minutes": minutes }))
                .collect();
            sqlx::query(
                "INSERT INTO campaign_viewers (campaign_id, viewers, minutes, top) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (campaign_id) DO UPDATE SET viewers = excluded.viewers, minutes = excluded.minutes, \
                 top = excluded.top",
            )
            .bind(&v.campaign_id)
            .bind(i64::try_from(v.viewers).unwrap_or(i64::MAX))
            .bind(i64::try_from(v.minutes).unwrap_or(i64::MAX))
            .bind(serde_json::Value::Array(top).to_string())
            .execute(&mut *tx)
            .await?;
        }
        // Rule state in batches: a rule that writes many keys costs a few statements, not one per key.
        let (sets, deletes): (Vec<_>, Vec<_>) = campaign_state.iter().partition(|(_, _, value)| value.is_some());
        for chunk in sets.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO campaign_state (campaign_id, key, value) VALUES {} \
                 ON CONFLICT (campaign_id, key) DO UPDATE SET value = excluded.value",
                values_placeholders(chunk.len(), 3)
            );
            let mut q = sqlx::query(&sql);
            for (campaign, key, value) in chunk {
                q = q.bind(campaign).bind(key).bind(value.as_deref().unwrap_or_default());
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
            let pairs = (0..chunk.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect::<Vec<_>>();
            let sql = format!("DELETE FROM campaign_state WHERE (campaign_id, key) IN (VALUES {})", pairs.join(","));
            let mut q = sqlx::query(&sql);
            for (campaign, key, _) in chunk {
                q = q.bind(campaign).bind(key);
            }
            q.execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM campaign_breakers WHERE part = $1").bind(part).execute(&mut *tx).await?;
        for (campaign, paused) in write.breakers {
            sqlx::query(
                "INSERT INTO campaign_breakers (campaign_id, paused_since_seq, plugin_hash, campaign_revision, reason, part) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (campaign_id) DO UPDATE SET \
                 paused_since_seq = excluded.paused_since_seq, plugin_hash = excluded.plugin_hash, \
                 campaign_revision = excluded.campaign_revision, reason = excluded.reason, part = excluded.part",
            )
            .bind(campaign)
            .bind(paused.since_seq)
            .bind(&paused.plugin_hash)
            .bind(&paused.campaign_revision)
            .bind(&paused.reason)
            .bind(part)
            .execute(&mut *tx)
            .await?;
        }
        for row in write.game_state {
            sqlx::query(
                "INSERT INTO game_state (broadcaster_id, twitch_user_id, state, changed_minute, part) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (part, broadcaster_id) DO UPDATE SET twitch_user_id = excluded.twitch_user_id, \
                 state = excluded.state, changed_minute = excluded.changed_minute",
            )
            .bind(&row.broadcaster_id)
            .bind(&row.twitch_user_id)
            .bind(&row.state)
            .bind(row.changed_minute as i64)
            .bind(part)
            .execute(&mut *tx)
            .await?;
        }
        for row in write.watchers {
            sqlx::query(
                "INSERT INTO watchers (broadcaster_id, inbox_seq, minute, part) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (part, broadcaster_id) DO UPDATE SET inbox_seq = excluded.inbox_seq, minute = excluded.minute",
            )
            .bind(&row.broadcaster_id)
            .bind(row.inbox_seq)
            .bind(row.minute as i64)
            .bind(part)
            .execute(&mut *tx)
            .await?;
        }
        for broadcaster in write.watchers_gone {
            sqlx::query("DELETE FROM watchers WHERE part = $1 AND broadcaster_id = $2")
                .bind(part)
                .bind(broadcaster)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO engine_checkpoint (id, inbox_seq, taken_at, pruned_seq) VALUES ($4, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET inbox_seq = excluded.inbox_seq, taken_at = excluded.taken_at, \
             pruned_seq = excluded.pruned_seq",
        )
        .bind(inbox_seq)
        .bind(now_ms())
        .bind(prune_to)
        .bind(part)
        .execute(&mut *tx)
        .await?;
        // The inbox is shared by the partitions: only what every one of them has passed goes.
        let (checkpoints, everyone_passed): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), min(pruned_seq) FROM engine_checkpoint WHERE id < $1")
                .bind(i64::from(key.count))
                .fetch_one(&mut *tx)
                .await?;
        // Last, so the lease row is locked only for the commit (its holder's
        // renewals wait for it), yet no other host can take the lease between
        // this check and the commit.
        if let Some(fence) = &key.fence {
            Store::check_fence(&mut tx, fence).await?;
        }
        tx.commit().await?;
        drop(guard);
        // Only behind a committed checkpoint: a crash before this prunes
        // nothing, and the next checkpoint prunes what this one would have.
        match everyone_passed {
            Some(seq) if checkpoints >= i64::from(key.count) => self.prune_inbox(seq).await,
            _ => Ok(()),
        }
    }
}

/// A watch-time row as stored: SQL has no unsigned integers, so the mask's
/// 64 bits are kept as the bit pattern of an `i64`.
#[derive(sqlx::FromRow)]
struct StoredWatchTime {
    campaign_id: String,
    viewer_id: String,
    minutes: i64,
    last_minute: i64,
    recent_mask: i64,
}

impl StoredWatchTime {
    fn into_row(self) -> WatchTimeRow {
        WatchTimeRow {
            campaign_id: self.campaign_id,
            viewer_id: self.viewer_id,
            minutes: self.minutes.clamp(0, u32::MAX as i64) as u32,
            last_minute: self.last_minute.clamp(0, u32::MAX as i64) as u32,
            recent_mask: self.recent_mask as u64,
        }
    }
}

#[derive(sqlx::FromRow)]
struct StoredBreaker {
    campaign_id: String,
    paused_since_seq: i64,
    plugin_hash: String,
    campaign_revision: String,
    reason: String,
}

impl StoredBreaker {
    fn into_pause(self) -> (String, Paused) {
        let paused = Paused {
            since_seq: self.paused_since_seq,
            plugin_hash: self.plugin_hash,
            campaign_revision: self.campaign_revision,
            reason: self.reason,
        };
        (self.campaign_id, paused)
    }
}

/// A broadcaster's latest heartbeat, joined with its inbox row.
#[derive(sqlx::FromRow)]
struct StoredWatcher {
    broadcaster_id: String,
    inbox_seq: i64,
    minute: i64,
    header: String,
    viewers: Option<Vec<u8>>,
    received_at: i64,
}

impl StoredWatcher {
    fn decode(self) -> Result<(WatcherRow, Heartbeat), StoreError> {
        let heartbeat = decode_heartbeat(&self.header, self.viewers.unwrap_or_default())
            .map_err(|reason| StoreError::Corrupt { seq: self.inbox_seq, reason })?;
        let row = WatcherRow {
            broadcaster_id: self.broadcaster_id,
            inbox_seq: self.inbox_seq,
            minute: self.minute.clamp(0, u32::MAX as i64) as u32,
            received_at_ms: self.received_at,
        };
        Ok((row, heartbeat))
    }
}
