//! Settings: defaults, then `drops-host.toml`, then `DROPS_HOST_*` environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything `drops-host serve` can be told; every key is optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address of the one HTTP listener.
    pub listen: SocketAddr,
    /// Manifests go to `<data_dir>/manifests`; the default database lives here too.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://<data_dir>/drops-host.db`.
    pub database_url: Option<String>,
    /// Holds `campaigns/*.toml` and `plugins/*.wasm`.
    pub rules_dir: PathBuf,
    /// Appends every event the engine evaluates to this JSON-lines file, for `replay`.
    pub record_events: Option<PathBuf>,
    /// SQLite only: `full` (an acknowledged heartbeat survives a power cut:
    /// one fsync per request) or `normal` (survives a crash of the process,
    /// not of the machine; far faster on slow disks).
    pub sqlite_synchronous: SqliteSynchronous,
    pub http: HttpSettings,
    pub vhs: VhsSettings,
    pub admin: AdminSettings,
    pub manifests: ManifestSettings,
    pub engine: EngineSettings,
    pub plugins: PluginSettings,
    pub e2: E2Settings,
    pub twitch: TwitchSettings,
    pub sink: SinkSettings,
    pub cluster: ClusterSettings,
    pub eventsub: EventSubSettings,
}

/// `POST /eventsub`: Twitch's EventSub webhook for `drop.entitlement.grant`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSubSettings {
    /// The subscription's secret (10 to 100 ASCII characters, as Twitch
    /// requires); unset: `/eventsub` answers 404. Never logged.
    #[serde(deserialize_with = "secret_text")]
    pub secret: Option<String>,
    /// Largest notification body accepted.
    pub max_body_bytes: u64,
    /// Most entitlements in one (batched) notification.
    pub max_events: usize,
    /// The sink (`webhook` or `nats`) decided items are delivered to; unset:
    /// the webhook when one is configured, else NATS.
    pub sink: Option<String>,
    /// How often Get Drops Entitlements is paged for CLAIMED entitlements the
    /// webhook missed (needs `[twitch]` credentials); 0: never.
    pub reconcile_interval_secs: u64,
    /// How often open entitlements of linked viewers (awaiting a link,
    /// failed, unmatched of a campaign loaded since) are announced again.
    pub sweep_interval_secs: u64,
}

impl Default for EventSubSettings {
    fn default() -> Self {
        EventSubSettings {
            secret: None,
            max_body_bytes: 4 << 20,
            max_events: 10_000,
            sink: None,
            reconcile_interval_secs: 3600,
            sweep_interval_secs: 30,
        }
    }
}

impl std::fmt::Debug for EventSubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSubSettings")
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_events", &self.max_events)
            .field("sink", &self.sink)
            .field("reconcile_interval_secs", &self.reconcile_interval_secs)
            .field("sweep_interval_secs", &self.sweep_interval_secs)
            .finish()
    }
}

impl Settings {
    /// The sink decided entitlement items go to, if any.
    pub fn items_sink(&self) -> Option<&'static str> {
        match self.eventsub.sink.as_deref() {
            Some("webhook") => Some("webhook"),
            Some("nats") => Some("nats"),
            _ if self.sink.webhook.is_some() => Some("webhook"),
            _ if self.sink.nats.is_some() => Some("nats"),
            _ => None,
        }
    }
}

/// Running several hosts on one PostgreSQL database (docs/operations.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// One of several hosts on this database: work is shared through leases
    /// and rules through the database. Off: this host takes every lease.
    pub enabled: bool,
    /// This host's name in leases, logs and `/v1/cluster`; unset: a new random id per start.
    pub host_id: Option<String>,
    /// Campaigns are hashed over this many engine partitions, each evaluated
    /// by one host at a time; fixed when a host first uses the database.
    pub engine_partitions: u32,
    /// A lease not renewed for this long is taken over by another host.
    pub lease_ttl_ms: u64,
    /// At start, this host's rules directory replaces the rules in the
    /// database (set it on one host); other hosts mirror the database.
    pub publish_rules: bool,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            host_id: None,
            engine_partitions: 1,
            lease_ttl_ms: 5_000,
            publish_rules: false,
        }
    }
}

/// SQLite's `synchronous` pragma, as offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

/// The HTTP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// A request's headers must arrive within this; slower clients are cut off.
    pub header_timeout_secs: u64,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// At shutdown, requests in flight get this long to finish.
    pub shutdown_timeout_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { header_timeout_secs: 10, max_connections: 4096, shutdown_timeout_secs: 30 }
    }
}

/// The VHS endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VhsSettings {
    /// Shared secret: `/vhs/{token}` or a signature is required when set.
    #[serde(deserialize_with = "secret_text")]
    pub token: Option<String>,
    /// Largest accepted body, after gzip decompression.
    pub max_body_bytes: u64,
    /// Heartbeats older than this are refused; none by default so backfills work.
    pub max_age_secs: Option<u64>,
    /// Heartbeats this far ahead of the host's clock are refused.
    pub max_future_secs: u64,
    /// A VHS request (its body included) must be done within this; Twitch gives up after 15 s.
    pub request_timeout_secs: u64,
    /// Bodies read at once; beyond, 503 with `Retry-After` (Twitch retries).
    pub max_bodies_in_flight: usize,
    /// Bytes of signed bodies held in memory at once while their signature
    /// is checked (it is checked before anything is parsed); beyond, 503.
    pub max_signed_bytes_in_flight: u64,
}

/// The admin API under `/v1`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token; when unset, `/v1` is refused.
    #[serde(deserialize_with = "secret_text")]
    pub token: Option<String>,
    /// Development only: lets `drops-host campaign reset` delete a campaign's
    /// grants, watch-time and rules' state. Never set it for a live campaign.
    pub allow_campaign_reset: bool,
}

/// Batching grants into manifest files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ManifestSettings {
    /// The longest a grant waits for its manifest: every interval all waiting
    /// grants are batched, each file filled up to `max_file_bytes`.
    pub flush_interval_secs: u64,
    /// Flush early once this many grants wait.
    pub flush_at_grants: u64,
    /// Largest manifest file; a larger batch is split. Twitch takes up to 100 MB.
    pub max_file_bytes: u64,
}

/// Uploading manifests to Twitch: the app's credentials and how hard to try.
/// Without `client_id` and `client_secret`, manifests are only written.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwitchSettings {
    /// The Twitch application's client id (the one the campaigns belong to).
    pub client_id: Option<String>,
    /// Its secret, for app access tokens (client-credentials flow). Never logged.
    #[serde(deserialize_with = "secret_text")]
    pub client_secret: Option<String>,
    /// Twitch's OAuth service (`<base>/oauth2/token`).
    pub auth_base_url: String,
    /// Twitch's API (`<base>/helix/entitlements/upload`).
    pub api_base_url: String,
    /// A token or upload-URL request must answer within this.
    pub request_timeout_secs: u64,
    /// A file's PUT must be done within this (the upload URL lives 900 s).
    pub upload_timeout_secs: u64,
    /// First wait after a failed attempt; doubled per attempt, with jitter.
    pub retry_initial_ms: u64,
    /// Longest wait between attempts (also caps `Retry-After` and `Ratelimit-Reset`).
    pub retry_max_secs: u64,
    /// Manifests uploaded at once.
    pub uploads_in_flight: usize,
}

impl std::fmt::Debug for TwitchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwitchSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "***"))
            .field("auth_base_url", &self.auth_base_url)
            .field("api_base_url", &self.api_base_url)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("upload_timeout_secs", &self.upload_timeout_secs)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_secs", &self.retry_max_secs)
            .field("uploads_in_flight", &self.uploads_in_flight)
            .finish()
    }
}

impl TwitchSettings {
    /// The client id and secret, when both are set.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        Some((self.client_id.as_deref()?, self.client_secret.as_deref()?))
    }
}

impl Default for TwitchSettings {
    fn default() -> Self {
        TwitchSettings {
            client_id: None,
            client_secret: None,
            auth_base_url: "https://id.twitch.tv".into(),
            api_base_url: "https://api.twitch.tv".into(),
            request_timeout_secs: 30,
            upload_timeout_secs: 900,
            retry_initial_ms: 1_000,
            retry_max_secs: 300,
            uploads_in_flight: 4,
        }
    }
}

/// The studio's own entitlement systems, told of every grant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSettings {
    /// POST every grant, in batches, to the studio's HTTP endpoint.
    pub webhook: Option<WebhookSettings>,
    /// Publish every grant to a NATS JetStream stream.
    pub nats: Option<NatsSettings>,
}

/// The NATS JetStream sink: one message per grant, `Nats-Msg-Id` its idempotency key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// The server, `nats://host:port`.
    pub url: String,
    /// The subject grants are published to; a stream must capture it.
    pub subject: String,
    /// Most grants published before their acknowledgements are awaited.
    #[serde(default = "defaults::sink_batch")]
    pub max_batch: u32,
    /// JetStream must acknowledge a publish within this.
    #[serde(default = "defaults::sink_timeout_secs")]
    pub ack_timeout_secs: u64,
    /// First wait after a failed batch; doubled per failure, with jitter.
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest wait between attempts of a failing batch.
    #[serde(default = "defaults::retry_max_secs")]
    pub retry_max_secs: u64,
}

/// The webhook sink: signed JSON batches, retried until the endpoint answers 2xx.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where batches are POSTed.
    pub url: String,
    /// HMAC-SHA256 key of the `Drops-Message-Signature` header. Never logged.
    #[serde(default, deserialize_with = "secret_text")]
    pub secret: Option<String>,
    /// Most grants in one POST.
    #[serde(default = "defaults::sink_batch")]
    pub max_batch: u32,
    /// The endpoint must answer within this.
    #[serde(default = "defaults::sink_timeout_secs")]
    pub request_timeout_secs: u64,
    /// First wait after a failed POST; doubled per failure, with jitter.
    #[serde(default = "defaults::retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest wait between POSTs of a failing batch.
    #[serde(default = "defaults::retry_max_secs")]
    pub retry_max_secs: u64,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &crate::secrets::redact_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("max_batch", &self.max_batch)
            .field("request_timeout_secs", &self.request_timeout_secs)
            .field("retry_initial_ms", &self.retry_initial_ms)
            .field("retry_max_secs", &self.retry_max_secs)
            .finish()
    }
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &crate::secrets::redact_url(&self.url))
            .field("subject", &self.subject)
            .field("max_batch", &self.max_batch)
            .field("ack_timeout_secs", &self.ack_timeout_secs)
            .finish_non_exhaustive()
    }
}

mod defaults {
    pub fn sink_batch() -> u32 {
        500
    }
    pub fn sink_timeout_secs() -> u64 {
        10
    }
    pub fn retry_initial_ms() -> u64 {
        1_000
    }
    pub fn retry_max_secs() -> u64 {
        300
    }
}

/// The engine that turns inbox events into grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// How often watch-time is checkpointed with the inbox position; after a
    /// crash at most this much inbox is replayed.
    pub checkpoint_interval_secs: u64,
    /// Inbox events read per step.
    pub batch_events: u32,
    /// Events kept for a campaign paused by its circuit breaker; beyond,
    /// its oldest are given up (the inbox keeps their viewer lists until then).
    pub max_paused_backlog_events: u64,
}

/// The E2 game-state websocket (`GET /e2`). Limits default to the E2 guide's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct E2Settings {
    /// (client id, game id) pairs allowed to publish.
    pub allowlist: Vec<E2Publisher>,
    /// How tokens are checked: `static` (the `tokens` table, for development
    /// and tests) or `twitch` (Twitch's validate endpoint). Unset: `static`
    /// when `tokens` has entries, else `twitch`.
    pub verifier: Option<TokenVerifierKind>,
    /// Tokens the `static` verifier knows.
    pub tokens: Vec<StaticToken>,
    /// Base URL of Twitch's OAuth service (`<base>/oauth2/validate`).
    pub twitch_auth_url: String,
    /// How long a token Twitch validated is trusted before it is asked again.
    pub token_cache_secs: u64,
    /// Most Twitch answers cached at once; older ones are evicted.
    pub token_cache_entries: usize,
    /// A connection that has not authenticated within this long is closed,
    /// whatever else it sends.
    pub connect_timeout_secs: u64,
    /// Most broadcasters one app-token connection may publish for.
    pub max_broadcaster_ids: usize,
    /// Messages one connection may send per window (fixed window).
    pub messages_per_window: u32,
    /// The rate-limit window.
    pub window_secs: u64,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_secs: u64,
    /// Largest connect or refresh message (full state), in bytes.
    pub max_full_bytes: usize,
    /// Largest delta message, in bytes.
    pub max_delta_bytes: usize,
    /// A heartbeat at most this old (or new) when game state changes says who
    /// is watching the broadcaster now.
    pub watching_window_secs: u64,
    /// Connections held at once; beyond it new ones are told to reconnect later.
    pub max_connections: usize,
    /// The delay a reconnect message asks for (overload, shutdown, storage down).
    pub reconnect_after_ms: u64,
}

/// A (client id, game id) pair allowed to publish game state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2Publisher {
    pub client_id: String,
    pub game_id: String,
}

/// Where E2 tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenVerifierKind {
    Static,
    Twitch,
}

/// What a token is: an app token (a game server) or a user token (a player).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    App,
    User,
}

/// A token of the static table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    pub token: String,
    pub kind: TokenKind,
    pub client_id: String,
    /// The Twitch user a user token belongs to (its broadcaster).
    #[serde(default)]
    pub user_id: Option<String>,
    /// After this the token is refused as expired.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<time::OffsetDateTime>,
}

/// Plugin sandbox limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    /// CPU budget of one call in fuel (about one unit per wasm instruction),
    /// before the per-viewer allowance. Counted, not timed: the same event
    /// gets the same verdict however loaded the machine is, so replays agree.
    pub max_call_fuel: u64,
    /// Fuel allowance per viewer in the call: a channel of ten million viewers
    /// legitimately needs more than one of ten.
    pub max_call_fuel_per_viewer: u64,
    /// Wall-clock backstop of one call, before the per-viewer allowance.
    pub max_call_ms: u64,
    /// Wall-clock allowance per viewer, in nanoseconds.
    pub max_call_ns_per_viewer: u64,
    /// Linear memory cap of one instance.
    pub max_memory_bytes: u64,
    /// Bytes one call may send the host (log lines, state keys and values,
    /// grant keys, error strings), before the per-viewer allowance. Counted,
    /// so the verdict is the same on replay.
    pub max_call_host_bytes: u64,
    /// Allowance per viewer in the call (repeatable grants carry keys).
    pub max_call_host_bytes_per_viewer: u64,
    /// Bytes of state (keys and values) one campaign may hold.
    pub max_campaign_state_bytes: u64,
    /// Failed calls in a row that pause a campaign (its circuit breaker).
    pub breaker_failures: u32,
    /// Most viewers passed in one call: a larger heartbeat is decided in
    /// several calls of this many viewers (rounded down to a multiple of 32),
    /// so any channel size fits the memory cap. About 17 bytes of plugin
    /// memory per viewer with the SDK.
    pub max_viewers_per_call: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            http: HttpSettings::default(),
            database_url: None,
            rules_dir: PathBuf::from("rules"),
            record_events: None,
            sqlite_synchronous: SqliteSynchronous::Full,
            vhs: VhsSettings::default(),
            admin: AdminSettings::default(),
            manifests: ManifestSettings::default(),
            engine: EngineSettings::default(),
            plugins: PluginSettings::default(),
            e2: E2Settings::default(),
            twitch: TwitchSettings::default(),
            sink: SinkSettings::default(),
            cluster: ClusterSettings::default(),
            eventsub: EventSubSettings::default(),
        }
    }
}

impl Default for E2Settings {
    fn default() -> Self {
        E2Settings {
            allowlist: Vec::new(),
            verifier: None,
            tokens: Vec::new(),
            twitch_auth_url: "https://id.twitch.tv".into(),
            token_cache_secs: 300,
            token_cache_entries: 10_000,
            connect_timeout_secs: 10,
            max_broadcaster_ids: 100,
            messages_per_window: 60,
            window_secs: 60,
            idle_timeout_secs: 195,
            max_full_bytes: 100_000,
            max_delta_bytes: 20_000,
            watching_window_secs: 120,
            max_connections: 10_000,
            reconnect_after_ms: 5_000,
        }
    }
}

impl Default for VhsSettings {
    fn default() -> Self {
        // The largest channel on record has about 10 million viewers: ~200 MB of ids.
        VhsSettings {
            token: None,
            max_body_bytes: 256 << 20,
            max_age_secs: None,
            max_future_secs: 300,
            request_timeout_secs: 30,
            max_bodies_in_flight: 64,
            max_signed_bytes_in_flight: 512 << 20,
        }
    }
}

impl Default for ManifestSettings {
    fn default() -> Self {
        ManifestSettings { flush_interval_secs: 60, flush_at_grants: 100_000, max_file_bytes: 100_000_000 }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { checkpoint_interval_secs: 10, batch_events: 64, max_paused_backlog_events: 1_000_000 }
    }
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            max_call_fuel: 20_000_000,
            max_call_fuel_per_viewer: 5_000,
            max_call_ms: 1_000,
            max_call_ns_per_viewer: 1_000,
            max_memory_bytes: 64 << 20,
            max_call_host_bytes: 16 << 20,
            max_call_host_bytes_per_viewer: 1024,
            max_campaign_state_bytes: 64 << 20,
            breaker_failures: 5,
            max_viewers_per_call: 1 << 20,
        }
    }
}

/// A setting that could not be read or is out of range, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Read(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{key}` {message}")]
    Invalid { key: &'static str, message: String },
}

/// A secret as text, whatever the environment made of it: `DROPS_HOST_ADMIN__TOKEN=1234...`
/// arrives as a number, and a type error would print the secret.
fn secret_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Str(String),
        Unsigned(u64),
        Signed(i64),
    }
    Ok(match Option::<Text>::deserialize(d)? {
        Some(Text::Str(s)) => Some(s),
        Some(Text::Unsigned(n)) => Some(n.to_string()),
        Some(Text::Signed(n)) => Some(n.to_string()),
        None => None,
    })
}

/// Ten years: no setting of seconds needs more, and `Instant + Duration` must not overflow.
const MAX_SECS: u64 = 10 * 365 * 24 * 3600;

fn invalid(key: &'static str, message: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid { key, message: message.into() })
}

/// Checks `url` is an absolute `http://` or `https://` URL with a host.
fn http_url(key: &'static str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => invalid(key, "must be an http:// or https:// URL"),
        Err(e) => Err(ConfigError::Invalid { key, message: format!("is not a URL: {e}") }),
    }
}

/// Checks `value` is in `min..=max`, naming the key and the range otherwise.
fn in_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid { key, message: format!("is {value}; it must be from {min} to {max}") })
    }
}

/// A secret is absent (the feature is off) or long enough to resist guessing.
fn secret(key: &'static str, value: Option<&str>) -> Result<(), ConfigError> {
    match value {
        Some(v) if v.len() < crate::secrets::MIN_SECRET_BYTES => Err(ConfigError::Invalid {
            key,
            message: format!(
                "is {} bytes; a secret needs at least {} (leave it unset to turn the feature off)",
                v.len(),
                crate::secrets::MIN_SECRET_BYTES
            ),
        }),
        _ => Ok(()),
    }
}

impl Settings {
    /// Reads defaults, then the file (if any), then `DROPS_HOST_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match file {
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("drops-host.toml").exists() => {
                figment = figment.merge(Toml::file_exact("drops-host.toml"))
            }
            None => {}
        }
        figment = figment.merge(Env::prefixed("DROPS_HOST_").split("__"));
        let settings: Settings = figment.extract().map_err(|e| ConfigError::Read(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every secret and numeric setting, naming the key and the range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const GIB: u64 = 1 << 30;
        secret("vhs.token", self.vhs.token.as_deref())?;
        secret("admin.token", self.admin.token.as_deref())?;
        // Viewer lists index their buffer with u32 offsets.
        in_range("vhs.max_body_bytes", self.vhs.max_body_bytes, 1024, 4 * GIB - 1)?;
        in_range("http.header_timeout_secs", self.http.header_timeout_secs, 1, 600)?;
        in_range("http.max_connections", self.http.max_connections as u64, 1, 1_000_000)?;
        in_range("http.shutdown_timeout_secs", self.http.shutdown_timeout_secs, 1, 3600)?;
        in_range("vhs.request_timeout_secs", self.vhs.request_timeout_secs, 1, 3600)?;
        in_range("vhs.max_signed_bytes_in_flight", self.vhs.max_signed_bytes_in_flight, 1 << 20, 1 << 40)?;
        in_range("vhs.max_bodies_in_flight", self.vhs.max_bodies_in_flight as u64, 1, 100_000)?;
        in_range("vhs.max_future_secs", self.vhs.max_future_secs, 0, MAX_SECS)?;
        in_range("vhs.max_age_secs", self.vhs.max_age_secs.unwrap_or(0), 0, MAX_SECS)?;
        in_range("manifests.flush_interval_secs", self.manifests.flush_interval_secs, 1, 86_400)?;
        in_range("manifests.flush_at_grants", self.manifests.flush_at_grants, 1, u32::MAX as u64)?;
        in_range("manifests.max_file_bytes", self.manifests.max_file_bytes, 4096, 100_000_000)?;
        let t = &self.twitch;
        match (t.client_id.as_deref().map(str::trim), t.client_secret.as_deref()) {
            (None, None) | (Some(_), Some(_)) => {}
            (Some(_), None) => return invalid("twitch.client_secret", "is needed with twitch.client_id"),
            (None, Some(_)) => return invalid("twitch.client_id", "is needed with twitch.client_secret"),
        }
        if t.client_id.as_deref().is_some_and(|id| id.trim().is_empty() || id.len() > 256) {
            return invalid("twitch.client_id", "must be 1 to 256 characters");
        }
        if t.client_secret.as_deref().is_some_and(|s| s.is_empty() || s.len() > 256) {
            return invalid("twitch.client_secret", "must be 1 to 256 characters");
        }
        http_url("twitch.auth_base_url", &t.auth_base_url)?;
        http_url("twitch.api_base_url", &t.api_base_url)?;
        in_range("twitch.request_timeout_secs", t.request_timeout_secs, 1, 600)?;
        in_range("twitch.upload_timeout_secs", t.upload_timeout_secs, 1, 3600)?;
        in_range("twitch.retry_initial_ms", t.retry_initial_ms, 1, 3_600_000)?;
        in_range("twitch.retry_max_secs", t.retry_max_secs, 1, 86_400)?;
        in_range("twitch.uploads_in_flight", t.uploads_in_flight as u64, 1, 64)?;
        if let Some(w) = &self.sink.webhook {
            http_url("sink.webhook.url", &w.url)?;
            match w.secret.as_deref() {
                None => {
                    return invalid("sink.webhook.secret", "is needed: the receiver checks every batch's signature")
                }
                Some(s) => secret("sink.webhook.secret", Some(s))?,
            }
            in_range("sink.webhook.max_batch", w.max_batch.into(), 1, 10_000)?;
            in_range("sink.webhook.request_timeout_secs", w.request_timeout_secs, 1, 600)?;
            in_range("sink.webhook.retry_initial_ms", w.retry_initial_ms, 1, 3_600_000)?;
            in_range("sink.webhook.retry_max_secs", w.retry_max_secs, 1, 86_400)?;
        }
        if let Some(n) = &self.sink.nats {
            if !(n.url.starts_with("nats://") || n.url.starts_with("tls://")) || n.url.len() > 1024 {
                return invalid("sink.nats.url", "must be a nats:// or tls:// URL");
            }
            let subject_ok = !n.subject.is_empty()
                && n.subject.len() <= 256
                && n.subject.split('.').all(|t| !t.is_empty() && t != "*" && t != ">")
                && !n.subject.chars().any(|c| c.is_whitespace() || c.is_control());
            if !subject_ok {
                return invalid("sink.nats.subject", "must be a NATS subject without wildcards or spaces");
            }
            in_range("sink.nats.max_batch", n.max_batch.into(), 1, 10_000)?;
            in_range("sink.nats.ack_timeout_secs", n.ack_timeout_secs, 1, 600)?;
            in_range("sink.nats.retry_initial_ms", n.retry_initial_ms, 1, 3_600_000)?;
            in_range("sink.nats.retry_max_secs", n.retry_max_secs, 1, 86_400)?;
        }
        if let Some(secret) = &self.eventsub.secret {
            if !(10..=100).contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
                return invalid("eventsub.secret", "must be 10 to 100 visible ASCII characters (Twitch's rule)");
            }
        }
        in_range("eventsub.max_body_bytes", self.eventsub.max_body_bytes, 1024, 64 << 20)?;
        in_range("eventsub.max_events", self.eventsub.max_events as u64, 1, 100_000)?;
        in_range("eventsub.sweep_interval_secs", self.eventsub.sweep_interval_secs, 1, 86_400)?;
        match self.eventsub.sink.as_deref() {
            None => {}
            Some("webhook") if self.sink.webhook.is_none() => {
                return invalid("eventsub.sink", "is `webhook`, but no [sink.webhook] is configured");
            }
            Some("nats") if self.sink.nats.is_none() => {
                return invalid("eventsub.sink", "is `nats`, but no [sink.nats] is configured");
            }
            Some("webhook" | "nats") => {}
            Some(_) => return invalid("eventsub.sink", "must be `webhook` or `nats`"),
        }
        let c = &self.cluster;
        if c.enabled && !self.database_url().starts_with("postgres") {
            return invalid("cluster.enabled", "needs a postgres:// database_url: hosts share state through it");
        }
        if c.host_id.as_deref().is_some_and(|id| {
            id.is_empty() || id.len() > 128 || !id.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch))
        }) {
            return invalid("cluster.host_id", "must be 1 to 128 characters of A-Z a-z 0-9 - _ . :");
        }
        in_range("cluster.engine_partitions", c.engine_partitions.into(), 1, 64)?;
        in_range("cluster.lease_ttl_ms", c.lease_ttl_ms, 500, 600_000)?;
        in_range("engine.checkpoint_interval_secs", self.engine.checkpoint_interval_secs, 1, 3600)?;
        in_range("engine.batch_events", self.engine.batch_events.into(), 1, 100_000)?;
        in_range("engine.max_paused_backlog_events", self.engine.max_paused_backlog_events, 1, 1 << 40)?;
        let p = &self.plugins;
        in_range("plugins.max_call_fuel", p.max_call_fuel, 1_000, 1 << 40)?;
        in_range("plugins.max_call_fuel_per_viewer", p.max_call_fuel_per_viewer, 0, 1_000_000)?;
        in_range("plugins.max_call_ms", p.max_call_ms, 1, 600_000)?;
        in_range("plugins.max_call_ns_per_viewer", p.max_call_ns_per_viewer, 0, 1_000_000)?;
        in_range("plugins.max_memory_bytes", p.max_memory_bytes, 1 << 20, 4 * GIB)?;
        in_range("plugins.max_call_host_bytes", p.max_call_host_bytes, 64 << 10, 4 * GIB)?;
        in_range("plugins.max_call_host_bytes_per_viewer", p.max_call_host_bytes_per_viewer, 0, 1 << 20)?;
        in_range("plugins.max_campaign_state_bytes", p.max_campaign_state_bytes, 64 << 10, 64 * GIB)?;
        in_range("plugins.breaker_failures", p.breaker_failures.into(), 1, 1_000_000)?;
        in_range("plugins.max_viewers_per_call", p.max_viewers_per_call, 1024, 1 << 28)?;
        let e = &self.e2;
        in_range("e2.token_cache_secs", e.token_cache_secs, 0, 86_400)?;
        in_range("e2.token_cache_entries", e.token_cache_entries as u64, 1, 10_000_000)?;
        in_range("e2.connect_timeout_secs", e.connect_timeout_secs, 1, 3600)?;
        in_range("e2.max_broadcaster_ids", e.max_broadcaster_ids as u64, 1, 10_000)?;
        in_range("e2.messages_per_window", e.messages_per_window.into(), 1, 1_000_000)?;
        in_range("e2.window_secs", e.window_secs, 1, 86_400)?;
        in_range("e2.idle_timeout_secs", e.idle_timeout_secs, 1, 86_400)?;
        in_range("e2.max_full_bytes", e.max_full_bytes as u64, 2, 16 << 20)?;
        in_range("e2.max_delta_bytes", e.max_delta_bytes as u64, 2, 16 << 20)?;
        in_range("e2.watching_window_secs", e.watching_window_secs, 1, 86_400)?;
        in_range("e2.max_connections", e.max_connections as u64, 1, 1_000_000)?;
        in_range("e2.reconnect_after_ms", e.reconnect_after_ms, 0, 3_600_000)?;
        if let Some(i) = e.tokens.iter().position(|t| t.token.trim().is_empty()) {
            return Err(ConfigError::Invalid { key: "e2.tokens", message: format!("[{i}].token must not be empty") });
        }
        Ok(())
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("drops-host.db").display()),
        }
    }

    /// Where manifest files are written.
    pub fn manifest_dir(&self) -> PathBuf {
        self.data_dir.join("manifests")
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail API returns its own large error
mod tests {
    use super::*;

    #[test]
    fn file_then_environment_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("x.toml", "listen = \"127.0.0.1:9000\"\n[vhs]\ntoken = \"from-the-file-0123\"\n")?;
            jail.set_env("DROPS_HOST_VHS__TOKEN", "from-the-environment");
            jail.set_env("DROPS_HOST_MANIFESTS__FLUSH_INTERVAL_SECS", "3");
            jail.set_env("DROPS_HOST_SQLITE_SYNCHRONOUS", "normal");
            let s = Settings::load(Some(Path::new("x.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 9000);
            assert_eq!(s.vhs.token.as_deref(), Some("from-the-environment"));
            assert_eq!(s.manifests.flush_interval_secs, 3);
            assert_eq!(s.sqlite_synchronous, SqliteSynchronous::Normal);
            assert_eq!(s.database_url(), "sqlite://data/drops-host.db");
            Ok(())
        });
    }

    #[test]
    fn out_of_range_settings_and_short_secrets_are_named() {
        let mut s = Settings::default();
        s.e2.idle_timeout_secs = u64::MAX;
        assert!(s.validate().unwrap_err().to_string().contains("`e2.idle_timeout_secs` is 18446744073709551615"));
        let mut s = Settings::default();
        s.vhs.max_future_secs = u64::MAX;
        assert!(s.validate().unwrap_err().to_string().contains("vhs.max_future_secs"));
        let mut s = Settings::default();
        s.admin.token = Some(String::new());
        assert!(s.validate().unwrap_err().to_string().contains("`admin.token` is 0 bytes"));
        s.admin.token = Some("0123456789abcdef".into());
        s.vhs.token = Some("short".into());
        assert!(s.validate().unwrap_err().to_string().contains("`vhs.token` is 5 bytes"));
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn a_numeric_secret_from_the_environment_is_text_and_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("DROPS_HOST_ADMIN__TOKEN", "12345678901234567890");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.admin.token.as_deref(), Some("12345678901234567890"));
            jail.set_env("DROPS_HOST_ADMIN__TOKEN", "[1]");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(!err.contains("[1]") || err.contains("admin"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("x.toml", "[vhs]\ntokn = \"x\"\n")?;
            let err = Settings::load(Some(Path::new("x.toml"))).unwrap_err().to_string();
            assert!(err.contains("tokn"), "{err}");
            Ok(())
        });
    }
}
