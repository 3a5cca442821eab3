//! What the console shows, as documented `/v1` routes: one overview of
//! traffic, campaigns, plugins and delivery (`GET /v1/overview`), the same
//! pushed every second (`GET /v1/overview/stream`, Server-Sent Events), and
//! a dry run of a candidate plugin over recorded events (`POST /v1/replay`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::{Extension, Multipart, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use tokio::sync::OwnedSemaphorePermit;
use utoipa::{IntoParams, ToSchema};

use super::admin::{paused_now, Admin, TokenRefused};
use super::console::Proof;
use crate::domain::{now_ms, Paused};
use crate::http::{ApiError, ApiQuery, ErrorBody};
use crate::plugins::load::CallsView;
use crate::replay::{DryRun, DryRunError};
use crate::rules::RuleSet;
use crate::store::{manifest_status, ManifestRow, PluginVersion, ViewerMinutes};
use crate::telemetry::live::{self, LiveView};

/// Most overview streams open at once: each holds a connection and reads
/// the (shared, cached) overview every second.
pub const MAX_STREAMS: usize = 16;
/// The stream's overview is computed at most this often, whoever asks.
const STREAM_EVERY: Duration = Duration::from_secs(1);
/// Largest replay upload: the recording and the plugin at their largest, and the form's framing.
pub const MAX_REPLAY_BYTES: usize = (48 << 20) + (64 << 10);
const MAX_RECORDING_BYTES: usize = 16 << 20;
const MAX_CANDIDATE_BYTES: usize = 32 << 20;
/// A dry run that takes longer is abandoned by the request (the replay
/// itself is bounded by each call's fuel and the recording's size).
const REPLAY_DEADLINE: Duration = Duration::from_secs(120);
/// A dry run's upload must arrive within this.
const UPLOAD_DEADLINE: Duration = Duration::from_secs(60);
/// Most failed manifests listed (the counts cover them all).
const MAX_FAILED_LISTED: u32 = 20;

/// What the overview's figures are computed over.
#[derive(Debug, Clone, Copy, serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OverviewQuery {
    /// Width of a grants-over-time bucket in seconds (1 to 3600; default 10).
    bucket_secs: Option<u32>,
    /// How many buckets, ending now (1 to 360; default 60).
    buckets: Option<u32>,
    /// How many of each campaign's longest-watching viewers to list (0 to 100; default 10).
    viewers: Option<u32>,
}

impl OverviewQuery {
    const DEFAULT: OverviewQuery = OverviewQuery { bucket_secs: None, buckets: None, viewers: None };

    fn is_default(&self) -> bool {
        self.checked().ok() == OverviewQuery::DEFAULT.checked().ok()
    }

    fn checked(self) -> Result<(i64, i64, u32), ApiError> {
        let bucket_secs = self.bucket_secs.unwrap_or(10);
        let buckets = self.buckets.unwrap_or(60);
        let viewers = self.viewers.unwrap_or(10);
        if !(1..=3600).contains(&bucket_secs) {
            return Err(ApiError::bad_request("bucket_secs", "must be 1 to 3600"));
        }
        if !(1..=360).contains(&buckets) {
            return Err(ApiError::bad_request("buckets", "must be 1 to 360"));
        }
        if viewers > 100 {
            return Err(ApiError::bad_request("viewers", "must be 0 to 100"));
        }
        Ok((i64::from(bucket_secs) * 1000, i64::from(buckets), viewers))
    }
}

/// A route that takes no query parameters refuses any, rather than ignoring a typo.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParameters {}

/// Everything the console shows, now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    /// When it was taken (ms since the epoch).
    at: i64,
    /// Ingest and engine figures of this host since it started.
    traffic: LiveView,
    campaigns: Vec<CampaignProgress>,
    plugins: Vec<PluginStatus>,
    delivery: Delivery,
}

/// A campaign's window, state and progress.
#[derive(Debug, Serialize, ToSchema)]
struct CampaignProgress {
    id: String,
    name: String,
    /// `upcoming`, `live`, `ended`, `paused` (by its circuit breaker) or `disabled`.
    status: &'static str,
    /// Why and since when it is paused.
    #[schema(value_type = Option<Object>)]
    paused: Option<Paused>,
    starts_at: String,
    ends_at: String,
    plugin: String,
    plugin_hash: String,
    /// Viewers with counted watch time (as of the engine's last checkpoint).
    viewers: i64,
    /// The longest-watching viewers.
    top_viewers: Vec<ViewerMinutes>,
    rewards: Vec<RewardGrants>,
    /// How many viewers reached each tier of a tiers rule (`config.tiers`); empty for other rules.
    funnel: Vec<FunnelStep>,
    /// Twitch Drops (EventSub) entitlements of the campaign by outcome: what
    /// such a campaign shows instead of grants; absent when it has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    entitlements: Option<EntitlementOutcomes>,
    /// The rule's state for this campaign (as of the engine's last checkpoint).
    rule_state: RuleStateSize,
}

/// How much state a campaign's rule keeps, against its limit.
#[derive(Debug, Default, Serialize, ToSchema)]
struct RuleStateSize {
    keys: i64,
    /// Bytes of keys and values, with the per-key overhead the limit counts.
    bytes: i64,
    /// `plugins.max_campaign_state_bytes`: past it, every state write of the rule fails.
    limit_bytes: u64,
}

/// What became of a campaign's EventSub entitlements.
#[derive(Debug, Default, Serialize, ToSchema)]
struct EntitlementOutcomes {
    /// Counts by outcome: `awaiting_link` (no game account yet), `unmatched`,
    /// `refused` (by the rule), `failed` (the rule's call; decided again),
    /// `to_deliver`, `delivered` (the sink confirmed; FULFILLED pending),
    /// `fulfilled`, `fulfil_refused` (Twitch refused FULFILLED for good: see
    /// `POST /v1/entitlements/{id}/retry`).
    outcomes: BTreeMap<String, i64>,
    /// The most frequent reasons for refusals and failures, most frequent first.
    reasons: Vec<Reason>,
}

/// A refusal or failure reason and how many entitlements it stopped.
#[derive(Debug, Serialize, ToSchema)]
struct Reason {
    reason: String,
    entitlements: i64,
}

/// A reward's grants: in all, and per bucket of the requested window.
#[derive(Debug, Serialize, ToSchema)]
struct RewardGrants {
    id: String,
    name: String,
    grants: i64,
    /// `[bucket start (ms), grants]` for every bucket of the window, oldest first.
    over_time: Vec<(i64, i64)>,
}

/// One step of a tier funnel.
#[derive(Debug, Serialize, ToSchema)]
struct FunnelStep {
    /// Minutes the tier asks for.
    minutes: i64,
    reward: String,
    /// Viewers granted the tier's reward.
    viewers: i64,
}

/// A plugin in force: its version, calls, breaker and history.
#[derive(Debug, Serialize, ToSchema)]
struct PluginStatus {
    name: String,
    hash: String,
    /// Calls of this version since it was loaded here.
    calls: CallsView,
    /// The campaigns using it, and whether each one's breaker holds it.
    campaigns: Vec<Breaker>,
    /// Every version served here, oldest first, with when it was first loaded and last went live.
    versions: Vec<VersionStatus>,
}

/// A plugin version and when it went live.
#[derive(Debug, Serialize, ToSchema)]
struct VersionStatus {
    #[serde(flatten)]
    version: PluginVersion,
    /// When a campaign last started running on it (a rollback makes an old version live again).
    went_live_at: Option<i64>,
}

/// A campaign's circuit breaker.
#[derive(Debug, Serialize, ToSchema)]
struct Breaker {
    campaign_id: String,
    /// `closed` (calls run) or `open` (the campaign is paused).
    state: &'static str,
    #[schema(value_type = Option<Object>)]
    paused: Option<Paused>,
}

/// Where delivery stands: Twitch manifests and the studio's sinks.
#[derive(Debug, Serialize, ToSchema)]
struct Delivery {
    /// Manifests by status.
    manifests: BTreeMap<String, i64>,
    /// When the oldest manifest not yet uploaded was made (ms since the epoch).
    oldest_undelivered_at: Option<i64>,
    /// Failed manifests, oldest first, at most 20 (retry them with `POST /v1/manifests/{id}/retry`).
    failed: Vec<ManifestRow>,
    sinks: Vec<SinkStatus>,
}

/// A sink's progress through the grants.
#[derive(Debug, Serialize, ToSchema)]
struct SinkStatus {
    name: &'static str,
    /// The id of the last grant it acknowledged.
    delivered_through: i64,
    /// Grants it has not acknowledged.
    pending: i64,
    oldest_pending_at: Option<i64>,
    /// Failed tries of the batch it is on (0: not failing), and the last error.
    failed_attempts: i64,
    last_error: Option<String>,
}

/// The overview's cache for streams: every open stream reads the same one.
#[derive(Default)]
pub struct StreamCache {
    last: tokio::sync::Mutex<Option<Cached>>,
}

/// An overview as served, with when it was computed and how long that took.
struct Cached {
    at: Instant,
    took: Duration,
    json: Arc<str>,
}

/// How long a computed overview is served: a period, or five times what it
/// cost, so consoles never spend more than a fifth of a core on it (a
/// million grants and watch-time rows take about 0.3 s).
fn fresh_for(took: Duration) -> Duration {
    (STREAM_EVERY - Duration::from_millis(100)).max(took * 5)
}

/// Campaigns, plugins, delivery and traffic, now.
#[utoipa::path(get, path = "/overview", tag = "console", params(OverviewQuery), responses(
    (status = 200, description = "the overview", body = Overview),
    (status = 400, description = "a parameter out of range, named in `field`", body = ErrorBody),
    TokenRefused,
    (status = 503, description = "storage unavailable", body = ErrorBody)))]
pub(super) async fn overview(
    State(app): State<Arc<Admin>>,
    ApiQuery(q): ApiQuery<OverviewQuery>,
) -> Result<Response, ApiError> {
    // The defaults are what every console asks for: served from the streams' cache.
    if q.is_default() {
        let json = cached_overview(&app).await?;
        return Ok(([(CONTENT_TYPE, "application/json")], json.to_string()).into_response());
    }
    Ok(Json(overview_of(&app, q).await?).into_response())
}

/// The overview every second, as Server-Sent Events (`event: overview`, the
/// JSON of `GET /v1/overview` with its defaults); `event: error` when storage is away.
#[utoipa::path(get, path = "/overview/stream", tag = "console", responses(
    (status = 200, description = "an event stream of overviews", content_type = "text/event-stream", body = Overview),
    (status = 400, description = "a query parameter (it takes none)", body = ErrorBody),
    TokenRefused,
    (status = 503, description = "too many streams open, or shutting down", body = ErrorBody)))]
pub(super) async fn overview_stream(
    State(app): State<Arc<Admin>>,
    proof: Option<Extension<Proof>>,
    ApiQuery(NoParameters {}): ApiQuery<NoParameters>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    if app.stop.is_cancelled() {
        return Err(ApiError::busy("the host is shutting down", 5));
    }
    // A stream opened with the console's session ends when the session does.
    let session_over = async move {
        match proof {
            Some(Extension(Proof::Session { expires })) => {
                tokio::time::sleep(Duration::from_millis((expires - now_ms()).max(0) as u64)).await
            }
            _ => std::future::pending().await,
        }
    };
    let Ok(permit) = app.streams.clone().try_acquire_owned() else {
        return Err(ApiError::busy(format!("more than {MAX_STREAMS} overview streams are open"), 5));
    };
    let ticks = tokio_stream_interval(STREAM_EVERY);
    let stop = app.stop.clone();
    let events = ticks
        .then(move |_| {
            let app = app.clone();
            async move { stream_event(&app).await }
        })
        .map(move |event| {
            // The permit lives as long as the stream.
            let _held: &OwnedSemaphorePermit = &permit;
            Ok(event)
        })
        // Ends with the host, so a shutdown does not wait on open consoles.
        .take_until(stop.cancelled_owned())
        .take_until(session_over);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

fn tokio_stream_interval(every: Duration) -> impl Stream<Item = ()> {
    futures_util::stream::unfold(tokio::time::interval(every), |mut interval| async move {
        interval.tick().await;
        Some(((), interval))
    })
}

async fn stream_event(app: &Admin) -> Event {
    match cached_overview(app).await {
        Ok(json) => Event::default().event("overview").data(json.as_ref()),
        Err(e) => Event::default().event("error").data(e.error),
    }
}

/// The overview with its defaults, computed at most once per
/// [`STREAM_EVERY`] however many consoles and scripts ask.
async fn cached_overview(app: &Admin) -> Result<Arc<str>, ApiError> {
    let mut last = app.stream_cache.last.lock().await;
    // Streams tick out of step: a figure a little younger than the period is still this period's.
    if let Some(cached) = last.as_ref().filter(|c| c.at.elapsed() < fresh_for(c.took)) {
        return Ok(cached.json.clone());
    }
    let started = Instant::now();
    let overview = overview_of(app, OverviewQuery::DEFAULT).await?;
    let json: Arc<str> = serde_json::to_string(&overview).map_err(ApiError::internal)?.into();
    *last = Some(Cached { at: Instant::now(), took: started.elapsed(), json: json.clone() });
    Ok(json)
}

/// Builds the overview from the rules in force, the engine's published
/// pauses, the store and this process's live figures.
async fn overview_of(app: &Admin, q: OverviewQuery) -> Result<Overview, ApiError> {
    let (bucket_ms, buckets, top) = q.checked()?;
    let now = now_ms();
    let rules = app.rules.load();
    let paused = paused_now(app).await;
    let first_bucket = (now / bucket_ms - (buckets - 1)) * bucket_ms;
    let mut totals: BTreeMap<(String, String), i64> = BTreeMap::new();
    for (campaign, reward, n) in app.store.grants_per_reward().await? {
        totals.insert((campaign, reward), n);
    }
    let mut over_time: BTreeMap<(String, String), BTreeMap<i64, i64>> = BTreeMap::new();
    for b in app.store.grants_over_time(first_bucket, bucket_ms).await? {
        over_time.entry((b.campaign_id, b.reward_id)).or_default().insert(b.bucket, b.grants);
    }
    let mut entitlements: BTreeMap<String, EntitlementOutcomes> = BTreeMap::new();
    for (campaign, outcome, n) in app.store.entitlement_outcomes().await? {
        entitlements.entry(campaign).or_default().outcomes.insert(outcome, n);
    }
    for (campaign, reason, n) in app.store.entitlement_refusals(5).await? {
        entitlements.entry(campaign).or_default().reasons.push(Reason { reason, entitlements: n });
    }
    let mut state_sizes: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (campaign, keys, bytes) in app.store.rule_state_sizes().await? {
        state_sizes.insert(campaign, (keys, bytes + keys * crate::plugins::ENTRY_OVERHEAD_BYTES as i64));
    }
    let now_time = time::OffsetDateTime::now_utc();
    let mut campaigns = Vec::new();
    for c in rules.campaigns() {
        let def = &c.def;
        let pause = paused.get(&def.id).cloned();
        let status = match () {
            _ if !def.enabled => "disabled",
            _ if pause.is_some() => "paused",
            _ if now_time < def.starts_at => "upcoming",
            _ if now_time >= def.ends_at => "ended",
            _ => "live",
        };
        let (viewers, top_viewers) = app.store.viewer_progress(&def.id, top).await?;
        let granted = |reward: &str| totals.get(&(def.id.clone(), reward.to_string())).copied().unwrap_or(0);
        let rewards = def
            .rewards
            .iter()
            .map(|r| {
                let counts = over_time.get(&(def.id.clone(), r.id.clone()));
                RewardGrants {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    grants: granted(&r.id),
                    over_time: (0..buckets)
                        .map(|i| {
                            let at = first_bucket + i * bucket_ms;
                            (at, counts.and_then(|c| c.get(&at)).copied().unwrap_or(0))
                        })
                        .collect(),
                }
            })
            .collect();
        let funnel = tiers(&def.rule.config)
            .into_iter()
            .map(|(minutes, reward)| FunnelStep { minutes, viewers: granted(&reward), reward })
            .collect();
        campaigns.push(CampaignProgress {
            id: def.id.clone(),
            name: def.name.clone(),
            status,
            paused: pause,
            starts_at: def.starts_at.format(&Rfc3339).unwrap_or_default(),
            ends_at: def.ends_at.format(&Rfc3339).unwrap_or_default(),
            plugin: c.plugin.name.clone(),
            plugin_hash: c.plugin.hash.0.clone(),
            viewers,
            top_viewers,
            rewards,
            funnel,
            entitlements: entitlements.remove(&def.id),
            rule_state: {
                let (keys, bytes) = state_sizes.get(&def.id).copied().unwrap_or_default();
                RuleStateSize { keys, bytes, limit_bytes: app.host.plugins.max_campaign_state_bytes }
            },
        });
    }
    let mut plugins = Vec::new();
    let mut in_force: Vec<_> = rules.plugins().values().collect();
    in_force.sort_by(|a, b| a.name.cmp(&b.name));
    for p in in_force {
        let campaigns = rules
            .campaigns()
            .iter()
            .filter(|c| c.plugin.name == p.name)
            .map(|c| {
                let paused = paused.get(&c.def.id).cloned();
                Breaker {
                    campaign_id: c.def.id.clone(),
                    state: if paused.is_some() { "open" } else { "closed" },
                    paused,
                }
            })
            .collect();
        plugins.push(PluginStatus {
            name: p.name.clone(),
            hash: p.hash.0.clone(),
            calls: p.calls(),
            campaigns,
            versions: versions_of(app, &rules, &p.name).await?,
        });
    }
    Ok(Overview { at: now, traffic: live::view(), campaigns, plugins, delivery: delivery(app).await? })
}

/// A plugin's versions, each with the last time a campaign of the rules in
/// force started running on it (from the campaigns' histories).
async fn versions_of(app: &Admin, rules: &RuleSet, plugin: &str) -> Result<Vec<VersionStatus>, ApiError> {
    let mut went_live: BTreeMap<String, i64> = BTreeMap::new();
    for c in rules.campaigns().iter().filter(|c| c.plugin.name == plugin) {
        for entry in app.store.rule_history(&c.def.id).await? {
            if entry.plugin_name == plugin {
                let at = went_live.entry(entry.plugin_hash).or_insert(entry.activated_at);
                *at = (*at).max(entry.activated_at);
            }
        }
    }
    let versions = app.store.plugin_versions(plugin).await?;
    Ok(versions
        .into_iter()
        .map(|version| VersionStatus { went_live_at: went_live.get(&version.hash).copied(), version })
        .collect())
}

/// The tiers of a tiers rule's config: `tiers = [{ minutes, reward }]`, lowest first.
fn tiers(config: &toml::Table) -> Vec<(i64, String)> {
    let Some(toml::Value::Array(tiers)) = config.get("tiers") else { return Vec::new() };
    let mut tiers: Vec<(i64, String)> = tiers
        .iter()
        .filter_map(|t| {
            let minutes = t.get("minutes")?.as_integer()?;
            let reward = t.get("reward")?.as_str()?.to_string();
            Some((minutes, reward))
        })
        .collect();
    tiers.sort();
    tiers
}

async fn delivery(app: &Admin) -> Result<Delivery, ApiError> {
    let (counts, oldest_undelivered_at) = app.store.manifest_backlog().await?;
    let failed = app.store.list_manifests_page(Some(manifest_status::FAILED), None, MAX_FAILED_LISTED).await?;
    let mut sinks = Vec::new();
    let configured = [("webhook", app.host.sink.webhook.is_some()), ("nats", app.host.sink.nats.is_some())];
    for name in configured.into_iter().filter(|(_, on)| *on).map(|(name, _)| name) {
        let backlog = app.store.sink_backlog(name).await?;
        sinks.push(SinkStatus {
            name,
            delivered_through: backlog.delivered_through,
            pending: backlog.pending,
            oldest_pending_at: backlog.oldest_pending_at,
            failed_attempts: backlog.failed_attempts,
            last_error: backlog.last_error,
        });
    }
    Ok(Delivery { manifests: counts.into_iter().collect(), oldest_undelivered_at, failed, sinks })
}

/// What `POST /v1/replay` takes: a multipart form.
#[derive(ToSchema)]
#[allow(dead_code)] // Describes the form; the handler reads it part by part.
struct ReplayForm {
    /// The recording (`record_events` or a `drops-host simulate --record` file): one event per line (JSON), UTF-8, at most 16 MiB.
    #[schema(value_type = String, format = Binary, content_media_type = "application/x-ndjson", max_length = 16777216)]
    events: Vec<u8>,
    /// The plugin the candidate replaces (one in force): 1-64 of a-z, 0-9, - and _, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$", min_length = 1, max_length = 64)]
    plugin_name: String,
    /// The candidate `.wasm` (a core module or a component), at most 32 MiB.
    #[schema(value_type = String, format = Binary, content_media_type = "application/wasm", max_length = 33554432)]
    plugin: Vec<u8>,
}

/// Replays recorded events through the plugin in force and through a
/// candidate in its place, in memory (nothing is stored or delivered), and
/// answers what each would grant: the check of a rule change before it goes live.
#[utoipa::path(post, path = "/replay", tag = "console",
    request_body(content = ReplayForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "the grants of both", body = DryRun),
        (status = 400, description = "a part is missing, repeated, unknown or too large, or a query parameter (named in `field`)", body = ErrorBody),
        TokenRefused,
        (status = 408, description = "the upload took longer than 60 s", body = ErrorBody),
        (status = 413, description = "larger than 48 MiB"),
        (status = 422, description = "the recording does not parse, or the candidate does not load (named in `field`)", body = ErrorBody),
        (status = 409, description = "the rules in force could not be replayed (the reason)", body = ErrorBody),
        (status = 500, description = "the host could not write the upload to a temporary folder", body = ErrorBody),
        (status = 503, description = "another dry run is running, or this one took longer than 120 s", body = ErrorBody)))]
pub(super) async fn replay(
    State(app): State<Arc<Admin>>,
    ApiQuery(NoParameters {}): ApiQuery<NoParameters>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<DryRun>, ApiError> {
    let mut form = form.map_err(|e| ApiError::bad_request("Content-Type", e.body_text()))?;
    let Ok(running) = app.replays.clone().try_acquire_owned() else {
        return Err(ApiError::busy("another dry run is running; one runs at a time", 5));
    };
    // A client trickling its upload holds the one slot no longer than this.
    let (events, plugin_name, plugin) =
        tokio::time::timeout(UPLOAD_DEADLINE, read_form(&mut form)).await.map_err(|_| {
            ApiError::request_timeout(format!("the upload took longer than {} s", UPLOAD_DEADLINE.as_secs()))
        })??;
    let missing = |field: &'static str| ApiError::bad_request(field, "missing");
    let events = events.ok_or_else(|| missing("events"))?;
    let plugin = plugin.ok_or_else(|| missing("plugin"))?;
    let plugin_name = String::from_utf8(plugin_name.ok_or_else(|| missing("plugin_name"))?)
        .map_err(|_| ApiError::bad_request("plugin_name", "not UTF-8"))?;
    super::admin::check_name(&plugin_name).map_err(|_| {
        ApiError::bad_request("plugin_name", "names are 1-64 of a-z, 0-9, - and _, starting with a letter or digit")
    })?;
    // A private folder (0700), removed when the run ends however it ends.
    let under = crate::replay::dry_runs_dir(&app.host.data_dir);
    std::fs::create_dir_all(&under).map_err(ApiError::internal)?;
    let dir = tempfile::Builder::new().prefix("run-").tempdir_in(&under).map_err(ApiError::internal)?;
    let (events_path, plugin_path) = (dir.path().join("events.jsonl"), dir.path().join("candidate.wasm"));
    std::fs::write(&events_path, &events).map_err(ApiError::internal)?;
    std::fs::write(&plugin_path, &plugin).map_err(ApiError::internal)?;
    drop((events, plugin));
    let (settings, rules_dir) = (app.host.clone(), app.host.rules_dir.clone());
    let name = plugin_name.clone();
    // The run stops at its next event once this request is gone (answered,
    // timed out or disconnected), and holds the one dry-run slot until then.
    let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
    let cancelled = cancel.0.clone();
    let run = tokio::task::spawn_blocking(move || {
        let _running = running;
        crate::replay::dry_run(&settings, &rules_dir, &events_path, (&name, &plugin_path), dir.path(), &cancelled)
    });
    let result = match tokio::time::timeout(REPLAY_DEADLINE, run).await {
        Err(_) => return Err(ApiError::busy("the dry run took longer than 120 s", 60)),
        Ok(joined) => joined.map_err(ApiError::internal)?,
    };
    match result {
        Ok(dry_run) => {
            tracing::info!(plugin = %plugin_name, gained = dry_run.gained_total, lost = dry_run.lost_total,
                "dry run through the admin API");
            Ok(Json(dry_run))
        }
        Err(DryRunError::Input { field, message }) => Err(ApiError::unprocessable(field, message)),
        Err(DryRunError::Host(e)) => {
            Err(ApiError::conflict(format!("the rules in force could not be replayed: {e:#}")))
        }
    }
}

/// A form the multipart reader refused: too large in all (413), else the named part's fault.
fn multipart_error(field: &str, e: MultipartError) -> ApiError {
    match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(MAX_REPLAY_BYTES as u64),
        _ => ApiError::bad_request(field, e.body_text()),
    }
}

/// The parts of a replay form, as sent: events, plugin name, plugin.
type FormParts = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

/// Reads a replay form's parts, each within its bound; the caller checks that each came.
async fn read_form(form: &mut Multipart) -> Result<FormParts, ApiError> {
    let (mut events, mut plugin_name, mut plugin) = (None, None, None);
    while let Some(part) = form.next_field().await.map_err(|e| multipart_error("", e))? {
        let (field, limit): (&'static str, usize) = match part.name() {
            Some("events") => ("events", MAX_RECORDING_BYTES),
            Some("plugin_name") => ("plugin_name", 64),
            Some("plugin") => ("plugin", MAX_CANDIDATE_BYTES),
            other => {
                let name = other.unwrap_or("").escape_debug().to_string();
                return Err(ApiError::bad_request(name, "unknown part: send events, plugin_name and plugin"));
            }
        };
        let bytes = read_part(part, field, limit).await?;
        let slot = match field {
            "events" => &mut events,
            "plugin_name" => &mut plugin_name,
            _ => &mut plugin,
        };
        if slot.replace(bytes).is_some() {
            return Err(ApiError::bad_request(field, "sent twice"));
        }
    }
    Ok((events, plugin_name, plugin))
}

/// A part's bytes, refused past `limit`.
async fn read_part(
    mut part: axum::extract::multipart::Field<'_>,
    field: &'static str,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = part.chunk().await.map_err(|e| multipart_error(field, e))? {
        if bytes.len() + chunk.len() > limit {
            return Err(ApiError::bad_request(field, format!("larger than {limit} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Sets its flag when dropped: the request that owns it is over.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_read_lowest_first_and_other_configs_have_none() {
        let config: toml::Table = toml::from_str(
            "tiers = [{ minutes = 60, reward = \"b\" }, { minutes = 30, reward = \"a\" }, { minutes = \"x\" }]",
        )
        .unwrap();
        assert_eq!(tiers(&config), vec![(30, "a".to_string()), (60, "b".to_string())]);
        assert!(tiers(&toml::Table::new()).is_empty());
    }

    #[test]
    fn a_costly_overview_is_served_longer() {
        assert_eq!(fresh_for(Duration::from_millis(20)), Duration::from_millis(900));
        assert_eq!(fresh_for(Duration::from_millis(500)), Duration::from_millis(2500));
    }

    #[test]
    fn out_of_range_parameters_are_refused_by_name() {
        let q = |bucket_secs, buckets, viewers| OverviewQuery { bucket_secs, buckets, viewers }.checked();
        assert_eq!(q(None, None, None).unwrap(), (10_000, 60, 10));
        assert_eq!(q(Some(0), None, None).unwrap_err().field.as_deref(), Some("bucket_secs"));
        assert_eq!(q(None, Some(361), None).unwrap_err().field.as_deref(), Some("buckets"));
        assert_eq!(q(None, None, Some(101)).unwrap_err().field.as_deref(), Some("viewers"));
    }
}
