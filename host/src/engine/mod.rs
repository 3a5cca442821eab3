//! The engine: reads the inbox in order, counts watch-time, asks each matching
//! campaign's plugin for grants, and stores them.
//!
//! Invariants: events are evaluated in inbox order, each exactly once per
//! state; grants are stored before the checkpoint that covers their event, and
//! are deduplicated by key, so replaying from a checkpoint after a crash
//! rebuilds the same state and adds no grant twice.

pub mod breaker;
pub mod campaign_state;
pub mod watch_time;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::EngineSettings;
use crate::plugins::{PluginRuntime, WitHeartbeat, WitViewer};
use crate::rules::{LoadedCampaign, RuleSet};
use crate::store::{Checkpoint, CheckpointWrite, InboxEvent, NewGrant, Store, StoreError};
use breaker::{Breakers, Paused};
use campaign_state::CampaignKv;
use watch_time::WatchTime;

/// Everything the engine keeps in memory between checkpoints.
#[derive(Debug, Default)]
pub struct State {
    pub watch_time: WatchTime,
    /// Rules' key-value state, per campaign id.
    pub campaign_state: HashMap<String, CampaignKv>,
    /// Campaigns paused by failing plugins.
    pub breakers: Breakers,
}

impl State {
    /// Rebuilds the state from a checkpoint.
    pub fn restore(checkpoint: Checkpoint, threshold: u32) -> State {
        let mut campaign_state: HashMap<String, CampaignKv> = HashMap::new();
        for (campaign, key, value) in checkpoint.campaign_state {
            campaign_state.entry(campaign).or_default().restore(key, value);
        }
        let mut breakers = Breakers::new(threshold);
        for (campaign, paused) in checkpoint.breakers {
            breakers.restore(campaign, paused);
        }
        State { watch_time: WatchTime::restore(checkpoint.watch_time), campaign_state, breakers }
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
    for campaign in rules.matching(&event.heartbeat) {
        if !state.breakers.is_paused(&campaign.def.id) {
            evaluate_campaign(state, campaign, runtime, event, out);
        }
    }
}

/// Evaluates one event for one campaign: counts watch-time, calls the plugin,
/// and feeds the outcome to the campaign's circuit breaker.
pub fn evaluate_campaign(
    state: &mut State,
    campaign: &LoadedCampaign,
    runtime: &PluginRuntime,
    event: &InboxEvent,
    out: &mut Evaluation,
) {
    let hb = &event.heartbeat;
    let minute = hb.minute();
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
            state.breakers.success(campaign_id);
            for g in grants {
                out.grants.push(new_grant(campaign, event, g.viewer, g.reward, g.key));
            }
        }
        Err(err) => {
            out.plugin_errors += 1;
            tracing::warn!(campaign = %campaign_id, plugin = %campaign.plugin.name, "plugin call failed: {err}");
            let (hash, revision) = (&campaign.plugin.hash.0, &campaign.revision);
            if state.breakers.failure(campaign_id, event.seq, hash, revision, err.to_string()) {
                metrics::counter!("drops_breaker_opened_total", "campaign" => campaign_id.clone()).increment(1);
                tracing::error!(campaign = %campaign_id, plugin = %campaign.plugin.name, plugin_hash = %hash,
                    "circuit breaker open: campaign paused until a new plugin version or campaign revision; its events are kept");
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
    /// Failed calls in a row that pause a campaign.
    pub breaker_failures: u32,
    /// The paused campaigns, published for the admin API.
    pub paused: Arc<ArcSwap<BTreeMap<String, Paused>>>,
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
        let mut state = State::restore(checkpoint, self.breaker_failures);
        tracing::info!(inbox_seq = cursor, paused = state.breakers.paused().len(), "engine resumed from checkpoint");
        let interval = Duration::from_secs(self.settings.checkpoint_interval_secs.max(1));
        let mut last_checkpoint = Instant::now();
        let mut checkpointed = cursor;
        let mut recorder = match &self.record_events {
            Some(path) => Some(Recorder::open(path)?),
            None => None,
        };
        loop {
            state = self.resume_campaigns(state, cursor, &stop).await?;
            self.publish_breakers(&state);
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
            self.store_grants(&evaluation, &stop).await?;
            cursor = last;
            metrics::gauge!("drops_engine_inbox_seq").set(cursor as f64);
            if last_checkpoint.elapsed() >= interval {
                self.checkpoint(&mut state, cursor, &stop).await?;
                checkpointed = cursor;
                last_checkpoint = Instant::now();
            }
        }
    }

    async fn store_grants(&self, evaluation: &Evaluation, stop: &CancellationToken) -> Result<(), EngineError> {
        let stored = retry(|| self.store.insert_grants(&evaluation.grants), stop).await?;
        metrics::counter!("drops_engine_viewer_minutes_total").increment(evaluation.viewer_minutes);
        metrics::counter!("drops_grants_total").increment(stored);
        metrics::counter!("drops_plugin_errors_total").increment(evaluation.plugin_errors);
        if stored > 0 {
            tracing::info!(grants = stored, "grants made");
            self.pending_grants.fetch_add(stored, Ordering::Relaxed);
            self.grants_notify.notify_one();
        }
        Ok(())
    }

    /// Resumes paused campaigns that a new plugin version or campaign revision
    /// serves: evaluates, for that campaign alone and in order, the events it
    /// missed up to `cursor`, so it rejoins where everyone else is.
    async fn resume_campaigns(
        &self,
        mut state: State,
        cursor: i64,
        stop: &CancellationToken,
    ) -> Result<State, EngineError> {
        let rules = self.rules.load_full();
        for (id, paused) in state.breakers.resumable(&rules) {
            state.breakers.resume(&id);
            let Some(campaign) = rules.campaign(&id).cloned() else {
                tracing::info!(campaign = %id, "paused campaign is gone from the rules: dropped");
                continue;
            };
            tracing::info!(campaign = %id, plugin_hash = %campaign.plugin.hash, from_seq = paused.since_seq, to_seq = cursor,
                "circuit breaker closed: evaluating the events kept while paused");
            let mut from = paused.since_seq - 1;
            while from < cursor && !state.breakers.is_paused(&id) {
                let batch = retry(|| self.store.inbox_after(from, self.settings.batch_events.max(1)), stop).await?;
                let events: Vec<InboxEvent> = batch.into_iter().filter(|e| e.seq <= cursor).collect();
                let Some(last) = events.last().map(|e| e.seq) else { break };
                from = last;
                let (campaign, runtime) = (campaign.clone(), self.runtime.clone());
                let (returned, evaluation) = tokio::task::spawn_blocking(move || {
                    let mut out = Evaluation::default();
                    for event in &events {
                        if state.breakers.is_paused(&campaign.def.id) {
                            break;
                        }
                        if campaign.matches(&event.heartbeat) {
                            evaluate_campaign(&mut state, &campaign, &runtime, event, &mut out);
                        }
                    }
                    (state, out)
                })
                .await?;
                state = returned;
                self.store_grants(&evaluation, stop).await?;
            }
        }
        Ok(state)
    }

    /// Makes the paused campaigns visible to the admin API and metrics.
    fn publish_breakers(&self, state: &State) {
        let paused = state.breakers.paused();
        if **self.paused.load() != *paused {
            metrics::gauge!("drops_campaigns_paused").set(paused.len() as f64);
            self.paused.store(Arc::new(paused.clone()));
        }
    }

    async fn checkpoint(&self, state: &mut State, cursor: i64, stop: &CancellationToken) -> Result<(), EngineError> {
        let rows = state.watch_time.dirty_rows();
        let kv = state.dirty_campaign_state();
        let breakers: Vec<(String, Paused)> =
            state.breakers.paused().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let write = CheckpointWrite {
            inbox_seq: cursor,
            watch_time: &rows,
            campaign_state: &kv,
            breakers: &breakers,
            keep_from_seq: state.breakers.oldest_needed(),
        };
        retry(|| self.store.save_checkpoint(&write), stop).await?;
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
