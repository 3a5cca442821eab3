//! The engine: reads the inbox in order, counts watch-time, asks each matching
//! campaign's plugin for grants, and stores them.
//!
//! Invariants: events are evaluated in inbox order, each exactly once per
//! state; grants are stored before the checkpoint that covers their event, and
//! are deduplicated by key, so replaying from a checkpoint after a crash
//! rebuilds the same state and adds no grant twice.

pub mod breaker;
pub mod broadcasters;
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
use crate::ingest::game_state::GameStateEvent;
use crate::ingest::heartbeat::{Heartbeat, ViewerList};
use crate::plugins::{PluginError, PluginRuntime, WitGameState, WitGrant, WitHeartbeat, WitViewer};
use crate::rules::{LoadedCampaign, RuleSet};
use crate::store::{Checkpoint, CheckpointWrite, Event, InboxEvent, NewGrant, Store, StoreError};
use breaker::{Breakers, Paused};
use broadcasters::Broadcasters;
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
    /// Game state and viewers per broadcaster.
    pub broadcasters: Broadcasters,
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
        State {
            watch_time: WatchTime::restore(checkpoint.watch_time),
            campaign_state,
            breakers,
            broadcasters: Broadcasters::restore(checkpoint.game_state, checkpoint.watchers),
        }
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
        self.broadcasters.clear_dirty();
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

/// Evaluates one event against the rule set, updating the engine's state.
pub fn evaluate(state: &mut State, rules: &RuleSet, runtime: &PluginRuntime, event: &InboxEvent, out: &mut Evaluation) {
    match &event.event {
        Event::Heartbeat(hb) => {
            state.broadcasters.saw_heartbeat(event.seq, event.received_at_ms, hb);
            for campaign in rules.matching(hb) {
                if !state.breakers.is_paused(&campaign.def.id) {
                    evaluate_heartbeat(state, campaign, runtime, event.seq, hb, out);
                }
            }
        }
        Event::GameState(change) => {
            evaluate_game_state(state, rules, runtime, event.seq, event.received_at_ms, change, out)
        }
    }
}

/// Evaluates one event for one campaign alone (a campaign catching up after
/// a pause). Game-state changes are not evaluated again: the state before
/// them is gone by then.
pub fn evaluate_for(
    state: &mut State,
    campaign: &LoadedCampaign,
    runtime: &PluginRuntime,
    event: &InboxEvent,
    out: &mut Evaluation,
) {
    if let Event::Heartbeat(hb) = &event.event {
        if campaign.matches(hb) {
            evaluate_heartbeat(state, campaign, runtime, event.seq, hb, out);
        }
    }
}

/// Evaluates one heartbeat for one campaign: the plugin decides, on the
/// viewers' progress as it would be, whether the minutes count and what to
/// grant; the outcome also feeds the campaign's circuit breaker.
fn evaluate_heartbeat(
    state: &mut State,
    campaign: &LoadedCampaign,
    runtime: &PluginRuntime,
    seq: i64,
    hb: &Heartbeat,
    out: &mut Evaluation,
) {
    let minute = hb.minute();
    let campaign_id = &campaign.def.id;
    let tentative = state.watch_time.tentative(campaign_id, hb.viewer_list.iter(), minute.0);
    let viewers: Vec<WitViewer> = tentative
        .iter()
        .enumerate()
        .map(|(handle, (progress, counted))| WitViewer { handle: handle as u32, minutes: progress.minutes, counted })
        .collect();
    let wit_hb = WitHeartbeat {
        broadcaster: hb.broadcaster.0.clone(),
        game: hb.game.0.clone(),
        minute: minute.0,
        viewers_reported: hb.viewers.min(u32::MAX as u64) as u32,
        state_changed: state.broadcasters.state_changed(&hb.broadcaster.0),
    };
    let span = tracing::debug_span!("evaluate", heartbeat = %hb.id, broadcaster = %hb.broadcaster, campaign = %campaign_id, plugin = %campaign.plugin.hash);
    let _enter = span.enter();
    let kv = campaign_kv(&mut state.campaign_state, campaign_id);
    let verdict = runtime.on_heartbeat(&campaign.plugin, &campaign.wit, &wit_hb, &viewers, hb.viewer_list.clone(), kv);
    let grants = verdict.map(|verdict| {
        if verdict.count_minutes {
            out.viewer_minutes += state.watch_time.commit(campaign_id, &tentative);
        }
        verdict.grants
    });
    let made = Made { seq, broadcaster: &hb.broadcaster.0, minute: minute.0, viewers: &hb.viewer_list };
    settle(state, campaign, made, grants, out);
}

/// Evaluates a game-state message: applies it to each broadcaster's state
/// and, where it changed something, asks every campaign it concerns.
fn evaluate_game_state(
    state: &mut State,
    rules: &RuleSet,
    runtime: &PluginRuntime,
    seq: i64,
    arrived_ms: i64,
    event: &GameStateEvent,
    out: &mut Evaluation,
) {
    for publisher in &event.broadcasters {
        let broadcaster = &publisher.account_id;
        let minute = state.broadcasters.broadcast_minute(broadcaster, arrived_ms);
        let Some(change) = state.broadcasters.apply(publisher, event, minute) else { continue };
        let watching = state.broadcasters.watching_now(broadcaster, arrived_ms).unwrap_or_default();
        let wit_change = WitGameState {
            broadcaster: broadcaster.clone(),
            twitch_user_id: publisher.twitch_user_id.clone(),
            game_id: event.game_id.clone(),
            minute,
            previous: change.previous.to_string(),
            current: change.current.to_string(),
            changed: change.changed,
            authoritative: event.authoritative,
        };
        for campaign in rules.matching_game_state(event, broadcaster) {
            let campaign_id = &campaign.def.id;
            if state.breakers.is_paused(campaign_id) {
                continue;
            }
            let viewers: Vec<WitViewer> = watching
                .iter()
                .enumerate()
                .map(|(handle, id)| {
                    let minutes = state.watch_time.progress(campaign_id, id).minutes;
                    WitViewer { handle: handle as u32, minutes, counted: false }
                })
                .collect();
            let span = tracing::debug_span!("evaluate", game_state = %event.id, broadcaster = %broadcaster, campaign = %campaign_id, plugin = %campaign.plugin.hash);
            let _enter = span.enter();
            let kv = campaign_kv(&mut state.campaign_state, campaign_id);
            let grants =
                runtime.on_game_state(&campaign.plugin, &campaign.wit, &wit_change, &viewers, watching.clone(), kv);
            let made = Made { seq, broadcaster, minute, viewers: &watching };
            settle(state, campaign, made, grants, out);
        }
    }
}

fn campaign_kv<'a>(states: &'a mut HashMap<String, CampaignKv>, campaign_id: &str) -> &'a mut CampaignKv {
    states.entry(campaign_id.to_string()).or_default()
}

/// The event a call's grants come from.
struct Made<'a> {
    seq: i64,
    broadcaster: &'a str,
    minute: u32,
    viewers: &'a ViewerList,
}

/// Records a call's grants, or its failure, and tells the circuit breaker.
fn settle(
    state: &mut State,
    campaign: &LoadedCampaign,
    made: Made<'_>,
    grants: Result<Vec<WitGrant>, PluginError>,
    out: &mut Evaluation,
) {
    let campaign_id = &campaign.def.id;
    match grants {
        Ok(grants) => {
            state.breakers.success(campaign_id);
            out.grants.extend(grants.into_iter().map(|g| new_grant(campaign, &made, g)));
        }
        Err(err) => {
            out.plugin_errors += 1;
            tracing::warn!(campaign = %campaign_id, plugin = %campaign.plugin.name, "plugin call failed: {err}");
            let (hash, revision) = (&campaign.plugin.hash.0, &campaign.revision);
            if state.breakers.failure(campaign_id, made.seq, hash, revision, err.to_string()) {
                metrics::counter!("drops_breaker_opened_total", "campaign" => campaign_id.clone()).increment(1);
                tracing::error!(campaign = %campaign_id, plugin = %campaign.plugin.name, plugin_hash = %hash,
                    "circuit breaker open: campaign paused until a new plugin version or campaign revision; its events are kept");
            }
        }
    }
}

fn new_grant(campaign: &LoadedCampaign, made: &Made<'_>, g: WitGrant) -> NewGrant {
    // Both indexes were checked against the call's input by the runtime.
    NewGrant {
        campaign_id: campaign.def.id.clone(),
        reward_id: campaign.wit.rewards[g.reward as usize].clone(),
        user_id: made.viewers.get(g.viewer as usize).unwrap_or_default().to_string(),
        grant_key: g.key.unwrap_or_default(),
        broadcaster_id: made.broadcaster.to_string(),
        // Twitch's manifests name the game as VHS reports it.
        game: campaign.def.game.clone(),
        client_id: campaign.def.client_id.clone(),
        reason: REASON_WATCHING,
        campaign_revision: campaign.revision.clone(),
        plugin_hash: campaign.plugin.hash.0.clone(),
        inbox_seq: made.seq,
        event_minute: made.minute,
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
    /// A heartbeat that arrived this long before a game-state change says who watches.
    pub watching_window_ms: i64,
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

/// How a game-state event is recorded: beside heartbeats, told apart by its key.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct RecordedGameState<T> {
    pub game_state: T,
}

/// Appends evaluated events to a JSON-lines file: heartbeats in the shape
/// `/vhs` takes, game-state messages as `{"game_state": ...}`.
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
                match &e.event {
                    Event::Heartbeat(hb) => serde_json::to_writer(&mut self.out, hb)?,
                    Event::GameState(gs) => {
                        serde_json::to_writer(&mut self.out, &RecordedGameState { game_state: gs })?
                    }
                }
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
        state.broadcasters.watching_window_ms = self.watching_window_ms;
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
            let e2_arrivals: Vec<i64> =
                events.iter().filter(|e| matches!(e.event, Event::GameState(_))).map(|e| e.received_at_ms).collect();
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
            // From a game-state message's arrival to its grants being stored.
            let now = crate::store::now_ms();
            for arrived in e2_arrivals {
                metrics::histogram!("drops_e2_decision_seconds").record((now - arrived).max(0) as f64 / 1000.0);
            }
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
                        evaluate_for(&mut state, &campaign, &runtime, event, &mut out);
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
        let (game_state, watchers) = state.broadcasters.dirty_rows();
        let breakers: Vec<(String, Paused)> =
            state.breakers.paused().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let write = CheckpointWrite {
            inbox_seq: cursor,
            watch_time: &rows,
            campaign_state: &kv,
            breakers: &breakers,
            keep_from_seq: state.breakers.oldest_needed(),
            game_state: &game_state,
            watchers: &watchers,
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
