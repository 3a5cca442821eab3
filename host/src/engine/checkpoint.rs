//! Checkpoints: taken from the state between batches (evaluation waits only
//! while what changed is copied and encoded), then written by a task of
//! their own while evaluation goes on. One is written at a time; the next is
//! taken only once the last has committed.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::state::State;
use super::task::retry;
use super::watch_time::CampaignSnapshot;
use crate::domain::Paused;
use crate::store::{CheckpointWrite, GameStateRow, PartitionKey, Store, StoreError, WatcherRow};

/// What a checkpoint took from the state, owned so it can be written while
/// evaluation changes the state again.
#[derive(Debug)]
pub struct Taken {
    inbox_seq: i64,
    watch_time: Vec<CampaignSnapshot>,
    campaign_state: Vec<(String, String, Option<Vec<u8>>)>,
    breakers: Vec<(String, Paused)>,
    keep_from_seq: Option<i64>,
    game_state: Vec<GameStateRow>,
    watchers: Vec<WatcherRow>,
    watchers_gone: Vec<String>,
}

impl Taken {
    /// Takes what changed since the last checkpoint, as of inbox position
    /// `inbox_seq`, and forgets that it changed (on the evaluation thread:
    /// encoding a huge campaign takes a while).
    pub fn from(state: &mut State, inbox_seq: i64) -> Result<Taken, StoreError> {
        let watch_time = state.watch_time.snapshot()?;
        let (game_state, watchers) = state.broadcasters.dirty_rows();
        let taken = Taken {
            inbox_seq,
            watch_time,
            campaign_state: state.dirty_campaign_state(),
            breakers: state.breakers.paused().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            keep_from_seq: state.breakers.oldest_needed(),
            game_state,
            watchers,
            watchers_gone: state.broadcasters.gone(),
        };
        state.clear_dirty();
        Ok(taken)
    }

    /// Viewers' rows in its watch-time segments.
    pub fn rows(&self) -> usize {
        self.watch_time.iter().flat_map(|c| &c.segments).map(|(rows, _)| rows).sum()
    }

    /// Writes it: every segment in a short transaction of its own, then the
    /// checkpoint that commits them with the rest, fenced by the lease.
    async fn write(self, store: &Store, key: &PartitionKey, stop: &CancellationToken) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let (mut segments, mut rebased, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        for campaign in &self.watch_time {
            for (i, (rows, data)) in campaign.segments.iter().enumerate() {
                let id = retry(|| store.write_segment(&campaign.campaign_id, *rows, data), stop).await?;
                if campaign.base && i == 0 {
                    rebased.push((campaign.campaign_id.clone(), id));
                }
                segments.push(id);
                bytes += data.len();
            }
        }
        let viewers: Vec<_> = self.watch_time.iter().map(|c| c.viewers.clone()).collect();
        let write = CheckpointWrite {
            partition: key,
            inbox_seq: self.inbox_seq,
            segments: &segments,
            rebased: &rebased,
            viewers: &viewers,
            campaign_state: &self.campaign_state,
            breakers: &self.breakers,
            keep_from_seq: self.keep_from_seq,
            game_state: &self.game_state,
            watchers: &self.watchers,
            watchers_gone: &self.watchers_gone,
        };
        retry(|| store.save_checkpoint(&write), stop).await?;
        let rows = self.rows();
        metrics::histogram!("drops_engine_checkpoint_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("drops_engine_checkpoint_bytes_total").increment(bytes as u64);
        metrics::gauge!("drops_engine_checkpoint_seq", "partition" => key.index.to_string()).set(self.inbox_seq as f64);
        tracing::debug!(inbox_seq = self.inbox_seq, rows, bytes, segments = segments.len(), "checkpoint saved");
        Ok(())
    }
}

/// The checkpoint being written, if any.
#[derive(Default)]
pub struct InFlight {
    task: Option<JoinHandle<Result<(), StoreError>>>,
}

impl InFlight {
    /// Whether no checkpoint is being written (the last one may have failed:
    /// [`InFlight::finish`] says).
    pub fn idle(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Waits for the checkpoint being written, if any, and returns how it went.
    pub async fn finish(&mut self) -> Result<(), StoreError> {
        match self.task.take() {
            None => Ok(()),
            Some(task) => {
                task.await.map_err(|e| StoreError::Invariant(format!("the checkpoint writer failed: {e}")))?
            }
        }
    }

    /// Starts writing `taken` once the last checkpoint is written.
    pub async fn start(
        &mut self,
        taken: Taken,
        store: Arc<Store>,
        key: PartitionKey,
        stop: CancellationToken,
    ) -> Result<(), StoreError> {
        self.finish().await?;
        self.task = Some(tokio::spawn(async move { taken.write(&store, &key, &stop).await }));
        Ok(())
    }
}
