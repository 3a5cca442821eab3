//! The engine task: reads the inbox in order, evaluates events on its own
//! low-priority thread, stores grants, checkpoints its state with the inbox position,
//! resumes paused campaigns, and retries while the database is away.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::checkpoint::{InFlight, Taken};
use super::entitlements::Lookups;
use super::evaluate::{evaluate, evaluate_for, Evaluation, GrantFlush};
use super::partition::{self, RulesView};
use super::recording::Recorder;
use super::state::{Judgement, State};
use super::worker::{EvalFailed, EvalThread};
use crate::config::{EngineSettings, Settings};
use crate::domain::{Decision, Event, InboxEvent, NewGrant, Paused};
use crate::plugins::PluginRuntime;
use crate::rules::RuleSet;
use crate::store::{Fence, PartitionKey, Store, StoreError};
use crate::telemetry::live;

/// How often a partition measures its lag behind the inbox.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// How long an idle engine waits after a checkpoint before the next.
const IDLE_CHECKPOINT_AFTER: Duration = Duration::from_secs(1);

/// The campaigns paused by their circuit breaker, as the engine last published them.
pub type PausedCampaigns = ArcSwap<BTreeMap<String, Paused>>;

/// Everything the engine task takes from the settings, as one value.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub engine: EngineSettings,
    pub judgement: Judgement,
    /// Where evaluated events are recorded (JSON lines), if anywhere.
    pub record_events: Option<PathBuf>,
}

impl EngineOptions {
    /// What the settings say.
    pub fn from_settings(settings: &Settings) -> EngineOptions {
        EngineOptions {
            engine: settings.engine.clone(),
            judgement: Judgement::from_settings(settings),
            record_events: settings.record_events.clone(),
        }
    }
}

/// The engine task.
pub struct Engine {
    store: Arc<Store>,
    rules: Arc<ArcSwap<RuleSet>>,
    runtime: Arc<PluginRuntime>,
    options: EngineOptions,
    /// The paused campaigns, published for the admin API.
    paused: Arc<PausedCampaigns>,
}

/// A failure the engine cannot go on from.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Eval(#[from] EvalFailed),
    #[error("cannot open the event recording {path}: {source}")]
    Record { path: PathBuf, source: std::io::Error },
}

impl Engine {
    /// An engine over the store's inbox, judging by the rules in force.
    pub fn new(
        store: Arc<Store>,
        rules: Arc<ArcSwap<RuleSet>>,
        runtime: Arc<PluginRuntime>,
        options: EngineOptions,
        paused: Arc<PausedCampaigns>,
    ) -> Engine {
        Engine { store, rules, runtime, options, paused }
    }

    /// Evaluates the partition `key` until `stop` is cancelled (then drains
    /// the inbox, checkpoints and returns) or `handover` is (then checkpoints
    /// where it is and returns, so another host can take the partition).
    pub async fn run(
        &self,
        key: PartitionKey,
        stop: CancellationToken,
        handover: CancellationToken,
    ) -> Result<(), EngineError> {
        let worker = EvalThread::start()?;
        // Retries against an absent database give up on either.
        let stop_or_handover = crate::cancel::either(stop.clone(), handover.clone());
        let part = key.index.to_string();
        let owned = key.clone();
        let owns = move |campaign: &str| partition::owns(&owned, campaign);
        let restoring = Instant::now();
        let mut checkpoint = retry(|| self.store.load_checkpoint(key.index, &owns), &stop_or_handover).await?;
        let mut cursor = checkpoint.inbox_seq;
        let segments = std::mem::take(&mut checkpoint.segments);
        let mut state = State::restore(checkpoint, &self.options.judgement);
        state.partition = (key.index, key.count);
        let rows: i64 = segments.iter().map(|s| s.row_count).sum();
        // The next segment is read while the last is applied on the evaluation thread.
        let mut reading = segments.first().map(|s| self.read_segment(s.id, &stop_or_handover));
        for (i, segment) in segments.iter().enumerate() {
            let Some(read) = reading.take() else { break };
            let columns = read
                .await
                .map_err(|e| StoreError::Invariant(format!("reading a watch-time segment failed: {e}")))??;
            reading = segments.get(i + 1).map(|s| self.read_segment(s.id, &stop_or_handover));
            let campaign = segment.campaign_id.clone();
            state = worker
                .run(move || {
                    state.watch_time.apply_segment(&campaign, &columns);
                    state
                })
                .await?;
        }
        metrics::histogram!("drops_engine_restore_seconds").record(restoring.elapsed().as_secs_f64());
        let mut view = RulesView::new(&key);
        tracing::info!(
            partition = key.index,
            inbox_seq = cursor,
            paused = state.breakers.paused().len(),
            segments = segments.len(),
            rows,
            seconds = restoring.elapsed().as_secs_f64(),
            "engine resumed from checkpoint"
        );
        let mut writing = InFlight::default();
        let interval = Duration::from_secs(self.options.engine.checkpoint_interval_secs.max(1));
        let mut last_checkpoint = Instant::now();
        let mut checkpointed = cursor;
        // One recording per host: the first partition writes it.
        let mut recorder = match &self.options.record_events {
            Some(path) if key.index == 0 => Some(
                Recorder::open(path, &self.runtime.fingerprint())
                    .map_err(|source| EngineError::Record { path: path.clone(), source })?,
            ),
            _ => None,
        };
        let mut commits = self.store.signals().inbox_commits();
        let mut recorded_rules: Option<Arc<RuleSet>> = None;
        let mut last_lag: Option<Instant> = None;
        loop {
            if handover.is_cancelled() {
                if cursor != checkpointed {
                    self.checkpoint(&worker, &key, state, cursor, &stop_or_handover, &mut writing).await?;
                }
                writing.finish().await?;
                self.unpublish_breakers(&owns);
                tracing::info!(partition = key.index, inbox_seq = cursor, "engine partition handed over");
                live::engine_gone(&part);
                return Ok(());
            }
            let rules = view.of(self.rules.load_full());
            if let Some(recorder) =
                recorder.as_mut().filter(|_| !recorded_rules.as_ref().is_some_and(|r| Arc::ptr_eq(r, &rules)))
            {
                recorder.write_rules(&in_force(&rules));
                recorded_rules = Some(rules.clone());
            }
            state = self.resume_campaigns(&worker, &rules, state, cursor, &key, &stop_or_handover).await?;
            self.publish_breakers(&state, &owns);
            let events =
                retry(|| self.store.inbox_after(cursor, self.options.engine.batch_events.max(1)), &stop_or_handover)
                    .await?;
            if last_lag.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
                self.measure_lag(&part, cursor, &events).await;
                last_lag = Some(Instant::now());
            }
            if events.is_empty() {
                // Idle: save progress soon, but not after every event of a
                // trickle (each checkpoint writes every changed row).
                let due = stop.is_cancelled() || last_checkpoint.elapsed() >= interval.min(IDLE_CHECKPOINT_AFTER);
                if cursor != checkpointed && due && (writing.idle() || stop.is_cancelled()) {
                    state = self.checkpoint(&worker, &key, state, cursor, &stop_or_handover, &mut writing).await?;
                    checkpointed = cursor;
                    last_checkpoint = Instant::now();
                }
                if stop.is_cancelled() {
                    writing.finish().await?;
                    tracing::info!(partition = key.index, inbox_seq = cursor, "engine drained and stopped");
                    live::engine_gone(&part);
                    return Ok(());
                }
                // Another host's commit arrives as a notification; polling
                // covers one that was lost.
                tokio::select! {
                    _ = commits.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.cancelled() => {}
                    _ = handover.cancelled() => {}
                }
                continue;
            }
            let last = events.last().map(|e| e.seq).unwrap_or(cursor);
            let e2_arrivals: Vec<i64> =
                events.iter().filter(|e| matches!(e.event, Event::GameState(_))).map(|e| e.received_at_ms).collect();
            let lookups = self.lookups(&events, &stop_or_handover).await?;
            let runtime = self.runtime.clone();
            let (flush, grant_writer) = self.grant_writer(key.fence.clone(), &stop_or_handover);
            let (returned, evaluation, recorder_back) = worker
                .run(move || {
                    let mut out = Evaluation { flush: Some(flush), ..Default::default() };
                    for event in &events {
                        evaluate(&mut state, &rules, &runtime, event, &lookups, &mut out);
                    }
                    if let Some(r) = recorder.as_mut() {
                        r.write(&events);
                    }
                    // The grant writer finishes once the last page is in.
                    out.flush = None;
                    (state, out, recorder)
                })
                .await?;
            state = returned;
            recorder = recorder_back;
            let flushed =
                grant_writer.await.map_err(|e| StoreError::Invariant(format!("the grant writer failed: {e}")))??;
            self.store_grants(&evaluation, flushed, key.fence.as_ref(), &stop_or_handover).await?;
            // From a game-state message's arrival to its grants being stored.
            let now = crate::domain::now_ms();
            for arrived in e2_arrivals {
                metrics::histogram!("drops_e2_decision_seconds").record((now - arrived).max(0) as f64 / 1000.0);
            }
            cursor = last;
            metrics::gauge!("drops_engine_inbox_seq", "partition" => part.clone()).set(cursor as f64);
            // A checkpoint still being written is not waited for: evaluation
            // goes on, and the next one is taken once it has committed.
            if last_checkpoint.elapsed() >= interval && writing.idle() {
                state = self.checkpoint(&worker, &key, state, cursor, &stop_or_handover, &mut writing).await?;
                checkpointed = cursor;
                last_checkpoint = Instant::now();
            }
        }
    }

    /// Records how far this partition is behind the inbox: `next` are the
    /// events after `cursor` it is about to judge (none: it is caught up).
    async fn measure_lag(&self, partition: &str, cursor: i64, next: &[InboxEvent]) {
        let now = crate::domain::now_ms();
        let mut lag = live::EngineLag { cursor, measured_at: now, ..Default::default() };
        if let Some(oldest) = next.first() {
            lag.seconds = (now - oldest.received_at_ms).max(0) as f64 / 1000.0;
            match self.store.inbox_head().await {
                Ok(head) => lag.events = (head - cursor).max(next.len() as i64),
                // A figure for the console is not worth a retry: the next measurement comes in a second.
                Err(e) => tracing::debug!("engine lag not measured: {e}"),
            }
        }
        live::engine_lag(partition, lag);
    }

    /// What the store knows of the links and entitlements `events` name.
    async fn lookups(&self, events: &[InboxEvent], stop: &CancellationToken) -> Result<Lookups, EngineError> {
        let (users, ids) = Lookups::wanted(events);
        if ids.is_empty() {
            return Ok(Lookups::default());
        }
        let links = retry(|| self.store.links_of(&users), stop).await?;
        let seen = retry(|| self.store.entitlements_seen(&ids), stop).await?;
        let mut open: std::collections::HashMap<String, Vec<(String, i64)>> = Default::default();
        for (user, id, first_seq) in retry(|| self.store.open_of(&users), stop).await? {
            open.entry(user).or_default().push((id, first_seq));
        }
        Ok(Lookups { links, seen, open })
    }

    /// Stores grants handed over while a batch is evaluated, page by page,
    /// beside evaluation; returns how many were new. The channel holds two
    /// pages: a writer behind holds evaluation back.
    fn grant_writer(
        &self,
        fence: Option<Fence>,
        stop: &CancellationToken,
    ) -> (GrantFlush, JoinHandle<Result<u64, StoreError>>) {
        let (flush, mut pages) = tokio::sync::mpsc::channel::<Vec<NewGrant>>(2);
        let (store, stop) = (self.store.clone(), stop.clone());
        let writer = tokio::spawn(async move {
            let mut stored = 0;
            while let Some(page) = pages.recv().await {
                stored += retry(|| store.insert_grants(&page, fence.as_ref()), &stop).await?;
            }
            Ok(stored)
        });
        (flush, writer)
    }

    /// Stores what a batch decided: entitlements, then the grants not yet
    /// stored by the grant writer (which stored `flushed` new ones).
    async fn store_grants(
        &self,
        evaluation: &Evaluation,
        flushed: u64,
        fence: Option<&Fence>,
        stop: &CancellationToken,
    ) -> Result<(), EngineError> {
        self.store_entitlements(evaluation, fence, stop).await?;
        let stored = flushed + retry(|| self.store.insert_grants(&evaluation.grants, fence), stop).await?;
        // Prometheus counts time in seconds (promtool holds names to base units).
        metrics::counter!("drops_engine_watch_time_seconds_total").increment(evaluation.viewer_minutes * 60);
        metrics::counter!("drops_grants_total").increment(stored);
        metrics::counter!("drops_plugin_errors_total").increment(evaluation.plugin_errors);
        if stored > 0 {
            tracing::info!(grants = stored, "grants made");
        }
        Ok(())
    }

    /// Stores what became of entitlements; a viewer left awaiting a link who
    /// was linked meanwhile is announced again, so no entitlement waits for
    /// a link that already exists.
    async fn store_entitlements(
        &self,
        evaluation: &Evaluation,
        fence: Option<&Fence>,
        stop: &CancellationToken,
    ) -> Result<(), EngineError> {
        if evaluation.entitlements.is_empty() {
            return Ok(());
        }
        retry(|| self.store.record_entitlement_decisions(&evaluation.entitlements, fence), stop).await?;
        let mut waiting: Vec<String> = evaluation
            .entitlements
            .iter()
            .filter(|d| d.decision == Decision::AwaitingLink)
            .map(|d| d.entitlement.user_id.clone())
            .collect();
        for d in &evaluation.entitlements {
            let outcome = d.decision.status();
            metrics::counter!("drops_entitlements_decided_total", "outcome" => outcome).increment(1);
        }
        waiting.sort_unstable();
        waiting.dedup();
        if !waiting.is_empty() {
            let reopen = self.rules.load().enabled_campaign_ids();
            retry(|| self.store.announce_links(&waiting, &reopen), stop).await?;
        }
        Ok(())
    }

    /// Resumes paused campaigns that a new plugin version or campaign revision
    /// serves: evaluates, for that campaign alone and in order, the events it
    /// missed up to `cursor`, so it rejoins where everyone else is.
    async fn resume_campaigns(
        &self,
        worker: &EvalThread,
        rules: &RuleSet,
        mut state: State,
        cursor: i64,
        key: &PartitionKey,
        stop: &CancellationToken,
    ) -> Result<State, EngineError> {
        for (id, paused) in state.breakers.resumable(rules) {
            state.breakers.resume(&id);
            let Some(campaign) = rules.campaign(&id).cloned() else {
                tracing::info!(campaign = %id, "paused campaign is gone from the rules: dropped");
                continue;
            };
            tracing::info!(campaign = %id, plugin_hash = %campaign.plugin.hash, from_seq = paused.since_seq, to_seq = cursor,
                "circuit breaker closed: evaluating the events kept while paused");
            let mut from = paused.since_seq - 1;
            while from < cursor && !state.breakers.is_paused(&id) {
                let batch =
                    retry(|| self.store.inbox_after(from, self.options.engine.batch_events.max(1)), stop).await?;
                let events: Vec<InboxEvent> = batch.into_iter().filter(|e| e.seq <= cursor).collect();
                let Some(last) = events.last().map(|e| e.seq) else { break };
                from = last;
                let lookups = self.lookups(&events, stop).await?;
                let (campaign, runtime) = (campaign.clone(), self.runtime.clone());
                let (returned, evaluation) = worker
                    .run(move || {
                        let mut out = Evaluation::default();
                        for event in &events {
                            if state.breakers.is_paused(&campaign.def.id) {
                                break;
                            }
                            evaluate_for(&mut state, &campaign, &runtime, event, &lookups, &mut out);
                        }
                        (state, out)
                    })
                    .await?;
                state = returned;
                self.store_grants(&evaluation, 0, key.fence.as_ref(), stop).await?;
            }
        }
        Ok(state)
    }

    /// Makes this partition's paused campaigns visible to the admin API and metrics.
    fn publish_breakers(&self, state: &State, owns: &impl Fn(&str) -> bool) {
        let paused = state.breakers.paused();
        let current = self.paused.load();
        let mine: BTreeMap<&String, &Paused> = current.iter().filter(|(id, _)| owns(id)).collect();
        if mine.len() != paused.len() || paused.iter().any(|(id, p)| mine.get(id) != Some(&p)) {
            self.paused.rcu(|all| {
                let mut all: BTreeMap<String, Paused> =
                    all.iter().filter(|(id, _)| !owns(id)).map(|(k, v)| (k.clone(), v.clone())).collect();
                all.extend(paused.iter().map(|(k, v)| (k.clone(), v.clone())));
                all
            });
            metrics::gauge!("drops_campaigns_paused").set(self.paused.load().len() as f64);
        }
    }

    /// This host no longer knows the partition's paused campaigns.
    fn unpublish_breakers(&self, owns: &impl Fn(&str) -> bool) {
        self.paused.rcu(|all| {
            all.iter().filter(|(id, _)| !owns(id)).map(|(k, v)| (k.clone(), v.clone())).collect::<BTreeMap<_, _>>()
        });
    }

    /// Reads one watch-time segment in the background.
    fn read_segment(
        &self,
        id: i64,
        stop: &CancellationToken,
    ) -> JoinHandle<Result<crate::store::WatchTimeColumns, StoreError>> {
        let (store, stop) = (self.store.clone(), stop.clone());
        tokio::spawn(async move { retry(|| store.read_segment(id), &stop).await })
    }

    /// Takes a checkpoint of `state` as of `cursor` (waiting for the last one
    /// to be written first) and starts writing it.
    async fn checkpoint(
        &self,
        worker: &EvalThread,
        key: &PartitionKey,
        mut state: State,
        cursor: i64,
        stop: &CancellationToken,
        writing: &mut InFlight,
    ) -> Result<State, EngineError> {
        writing.finish().await?;
        self.bound_memory(&mut state, cursor);
        let taking = Instant::now();
        let (state, taken) = worker
            .run(move || {
                let taken = Taken::from(&mut state, cursor);
                (state, taken)
            })
            .await?;
        let taken = taken?;
        metrics::histogram!("drops_engine_checkpoint_pause_seconds").record(taking.elapsed().as_secs_f64());
        writing.start(taken, self.store.clone(), key.clone(), stop.clone()).await?;
        Ok(state)
    }
}

impl Engine {
    /// Lets go of what the engine no longer needs before a checkpoint saves
    /// the rest, and reports what it holds.
    fn bound_memory(&self, state: &mut State, cursor: i64) {
        let let_go = state.broadcasters.prune(state.latest_arrival_ms);
        let compacted = state.watch_time.compact();
        if let_go > 0 || compacted > 0 {
            tracing::debug!(broadcasters = let_go, viewer_ids = compacted, "let go of state no longer needed");
        }
        let cap = self.options.engine.max_paused_backlog_events;
        for (campaign, dropped) in state.breakers.cap_backlog(cursor, cap) {
            metrics::counter!("drops_breaker_backlog_dropped_total", "campaign" => campaign.clone()).increment(dropped);
            tracing::error!(campaign = %campaign, dropped, cap,
                "paused campaign's backlog passed engine.max_paused_backlog_events: its oldest events are given up");
        }
        metrics::gauge!("drops_engine_broadcasters_watching").set(state.broadcasters.watching_count() as f64);
        metrics::gauge!("drops_engine_viewer_ids").set(state.watch_time.interned() as f64);
        metrics::gauge!("drops_engine_paused_backlog_events").set(state.breakers.backlog(cursor) as f64);
    }
}

/// The campaigns of `rules` as a recording notes them.
fn in_force(rules: &RuleSet) -> Vec<super::recording::InForce> {
    rules
        .campaigns()
        .iter()
        .map(|c| super::recording::InForce {
            campaign_id: c.def.id.clone(),
            revision: c.revision.clone(),
            plugin: c.plugin.name.clone(),
            plugin_hash: c.plugin.hash.0.clone(),
        })
        .collect()
}

/// Retries a store operation with backoff while the database is away; the
/// engine must not skip an event, so it waits rather than moves on. Gives up
/// only when stopping.
pub(super) async fn retry<T, F, Fut>(mut op: F, stop: &CancellationToken) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(err) if err.is_permanent() => return Err(err),
            Err(err) if stop.is_cancelled() && delay >= Duration::from_secs(5) => return Err(err),
            Err(err) => {
                tracing::warn!("storage unavailable, retrying in {delay:?}: {err}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
