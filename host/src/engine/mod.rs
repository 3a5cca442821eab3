//! The engine: reads the inbox in order, counts watch-time, asks each matching
//! campaign's plugin for grants, and stores them.
//!
//! Invariants: events are evaluated in inbox order, each exactly once per
//! state; grants are stored before the checkpoint that covers their event, and
//! are deduplicated by key, so replaying from a checkpoint after a crash
//! rebuilds the same state and adds no grant twice.

pub mod campaign_state;
pub mod watch_time;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::EngineSettings;
use crate::plugins::{PluginRuntime, WitHeartbeat, WitViewer};
use crate::rules::{LoadedCampaign, RuleSet};
use crate::store::{Checkpoint, InboxEvent, NewGrant, Store, StoreError};
use campaign_state::CampaignKv;
use watch_time::WatchTime;

/// Everything the engine keeps in memory between checkpoints.
#[derive(Debug, Default)]
pub struct State {
    pub watch_time: WatchTime,
    /// Rules' key-value state, per campaign id.
    pub campaign_state: HashMap<String, CampaignKv>,
}

impl State {
    /// Rebuilds the state from a checkpoint.
    pub fn restore(checkpoint: Checkpoint) -> State {
        let mut campaign_state: HashMap<String, CampaignKv> = HashMap::new();
        for (campaign, key, value) in checkpoint.campaign_state {
            campaign_state.entry(campaign).or_default().restore(key, value);
        }
        State { watch_time: WatchTime::restore(checkpoint.watch_time), campaign_state }
    }

    /// Changed rules' state: (campaign, key, value or None to delete).
    pub fn dirty_campaign_state(&self) -> Vec<(String, String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for (campaign, kv) in &self.campaign_state {
            for (key, value) in kv.dirty() {
                out.push((campaign.clone(), key.to_string(), value.map(<[u8]>::to_vec)));
            }
        }
        out
    }

    /// Forgets what changed, after a checkpoint saved it.
    pub fn clear_dirty(&mut self) {
        self.watch_time.clear_dirty();
        for kv in self.campaign_state.values_mut() {
            kv.clear_dirty();
        }
    }
}

/// The reason Twitch shows for time-based grants.
pub const REASON_WATCHING: &str = "watching";

/// What evaluating a batch of events produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub grants: Vec<NewGrant>,
    pub viewer_minutes: u64,
    pub plugin_errors: u64,
}

/// Evaluates one event against the rule set, updating watch-time.
pub fn evaluate(state: &mut State, rules: &RuleSet, runtime: &PluginRuntime, event: &InboxEvent, out: &mut Evaluation) {
    let hb = &event.heartbeat;
    let minute = hb.minute();
    for campaign in rules.matching(hb) {
        let campaign_id = &campaign.def.id;
        let mut viewers = Vec::with_capacity(hb.viewer_list.len());
        for (handle, viewer_id) in hb.viewer_list.iter().enumerate() {
            let (progress, counted) = state.watch_time.count(campaign_id, viewer_id, minute.0);
            out.viewer_minutes += counted as u64;
            viewers.push(WitViewer { handle: handle as u32, minutes: progress.minutes, counted });
        }
        let wit_hb = WitHeartbeat {
            broadcaster: hb.broadcaster.0.clone(),
            game: hb.game.0.clone(),
            minute: minute.0,
            viewers_reported: hb.viewers.min(u32::MAX as u64) as u32,
        };
        let span = tracing::debug_span!("evaluate", heartbeat = %hb.id, broadcaster = %hb.broadcaster, campaign = %campaign_id, plugin = %campaign.plugin.hash);
        let _enter = span.enter();
        let kv = match state.campaign_state.get_mut(campaign_id) {
            Some(kv) => kv,
            None => state.campaign_state.entry(campaign_id.clone()).or_default(),
        };
        match runtime.on_heartbeat(&campaign.plugin, &campaign.wit, &wit_hb, &viewers, hb.viewer_list.clone(), kv) {
            Ok(grants) => {
                for g in grants {
                    out.grants.push(new_grant(campaign, event, g.viewer, g.reward, g.key));
                }
            }
            Err(err) => {
                out.plugin_errors += 1;
                tracing::warn!(campaign = %campaign_id, plugin = %campaign.plugin.name, "plugin call failed: {err}");
            }
        }
    }
}

fn new_grant(campaign: &LoadedCampaign, event: &InboxEvent, viewer: u32, reward: u32, key: Option<String>) -> NewGrant {
    let hb = &event.heartbeat;
    // Both indexes were checked against the call's input by the runtime.
    NewGrant {
        campaign_id: campaign.def.id.clone(),
        reward_id: campaign.wit.rewards[reward as usize].clone(),
        user_id: hb.viewer_list.get(viewer as usize).unwrap_or_default().to_string(),
        grant_key: key.unwrap_or_default(),
        broadcaster_id: hb.broadcaster.0.clone(),
        game: hb.game.0.clone(),
        client_id: campaign.def.client_id.clone(),
        reason: REASON_WATCHING,
        campaign_revision: campaign.revision.clone(),
        plugin_hash: campaign.plugin.hash.0.clone(),
        inbox_seq: event.seq,
        event_minute: hb.minute().0,
    }
}

/// The engine task and what it needs.
pub struct Engine {
    pub store: Arc<Store>,
    pub rules: Arc<ArcSwap<RuleSet>>,
    pub runtime: Arc<PluginRuntime>,
    pub settings: EngineSettings,
    /// Woken by ingest when the inbox grows.
    pub inbox_notify: Arc<Notify>,
    /// Woken when grants were stored.
    pub grants_notify: Arc<Notify>,
    /// Grants stored and not yet batched, for the batcher's early flush.
    pub pending_grants: Arc<AtomicU64>,
    /// Where evaluated events are recorded (JSON lines), if anywhere.
    pub record_events: Option<std::path::PathBuf>,
}

/// A failure the engine cannot go on from.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("evaluation task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("cannot open the event recording {path}: {source}")]
    Record { path: std::path::PathBuf, source: std::io::Error },
}

/// Appends evaluated events to a JSON-lines file in the shape `/vhs` takes.
/// After a crash, events replayed from the checkpoint are recorded again;
/// `replay` skips repeated ids, as the host does.
struct Recorder {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl Recorder {
    fn open(path: &std::path::Path) -> Result<Recorder, EngineError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| EngineError::Record { path: path.to_path_buf(), source })?;
        Ok(Recorder { path: path.to_path_buf(), out: std::io::BufWriter::new(file) })
    }

    fn write(&mut self, events: &[InboxEvent]) {
        use std::io::Write;
        let result = events
            .iter()
            .try_for_each(|e| {
                serde_json::to_writer(&mut self.out, &e.heartbeat)?;
                self.out.write_all(b"\n")?;
                Ok::<_, std::io::Error>(())
            })
            .and_then(|()| self.out.flush());
        // Recording is a debugging aid: failing to write it never stops grants.
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), "event recording failed: {e}");
        }
    }
}

impl Engine {
    /// Runs until `stop` is cancelled, then drains the inbox, checkpoints and returns.
    pub async fn run(self, stop: CancellationToken) -> Result<(), EngineError> {
        let checkpoint = retry(|| self.store.load_checkpoint(), &stop).await?;
        let mut cursor = checkpoint.inbox_seq;
        let mut state = State::restore(checkpoint);
        tracing::info!(inbox_seq = cursor, "engine resumed from checkpoint");
        let interval = Duration::from_secs(self.settings.checkpoint_interval_secs.max(1));
        let mut last_checkpoint = Instant::now();
        let mut checkpointed = cursor;
        let mut recorder = match &self.record_events {
            Some(path) => Some(Recorder::open(path)?),
            None => None,
        };
        loop {
            let events = retry(|| self.store.inbox_after(cursor, self.settings.batch_events.max(1)), &stop).await?;
            if events.is_empty() {
                if cursor != checkpointed {
                    self.checkpoint(&mut state, cursor, &stop).await?;
                    checkpointed = cursor;
                    last_checkpoint = Instant::now();
                }
                if stop.is_cancelled() {
                    tracing::info!(inbox_seq = cursor, "engine drained and stopped");
                    return Ok(());
                }
                tokio::select! {
                    _ = self.inbox_notify.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
            let last = events.last().map(|e| e.seq).unwrap_or(cursor);
            let rules = self.rules.load_full();
            let runtime = self.runtime.clone();
            let (returned, evaluation, recorder_back) = tokio::task::spawn_blocking(move || {
                let mut out = Evaluation::default();
                for event in &events {
                    evaluate(&mut state, &rules, &runtime, event, &mut out);
                }
                if let Some(r) = recorder.as_mut() {
                    r.write(&events);
                }
                (state, out, recorder)
            })
            .await?;
            state = returned;
            recorder = recorder_back;
            let stored = retry(|| self.store.insert_grants(&evaluation.grants), &stop).await?;
            cursor = last;
            metrics::counter!("drops_engine_viewer_minutes_total").increment(evaluation.viewer_minutes);
            metrics::counter!("drops_grants_total").increment(stored);
            metrics::counter!("drops_plugin_errors_total").increment(evaluation.plugin_errors);
            metrics::gauge!("drops_engine_inbox_seq").set(cursor as f64);
            if stored > 0 {
                tracing::info!(grants = stored, inbox_seq = cursor, "grants made");
                self.pending_grants.fetch_add(stored, Ordering::Relaxed);
                self.grants_notify.notify_one();
            }
            if last_checkpoint.elapsed() >= interval {
                self.checkpoint(&mut state, cursor, &stop).await?;
                checkpointed = cursor;
                last_checkpoint = Instant::now();
            }
        }
    }

    async fn checkpoint(&self, state: &mut State, cursor: i64, stop: &CancellationToken) -> Result<(), EngineError> {
        let rows = state.watch_time.dirty_rows();
        let kv = state.dirty_campaign_state();
        retry(|| self.store.save_checkpoint(cursor, &rows, &kv), stop).await?;
        state.clear_dirty();
        tracing::debug!(inbox_seq = cursor, rows = rows.len(), "checkpoint saved");
        Ok(())
    }
}

/// Retries a store operation with backoff while the database is away; the
/// engine must not skip an event, so it waits rather than moves on. Gives up
/// only when stopping.
async fn retry<T, F, Fut>(mut op: F, stop: &CancellationToken) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(err @ StoreError::Corrupt { .. }) => return Err(err),
            Err(err) if stop.is_cancelled() && delay >= Duration::from_secs(5) => return Err(err),
            Err(err) => {
                tracing::warn!("storage unavailable, retrying in {delay:?}: {err}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
