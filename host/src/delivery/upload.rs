//! The upload task: takes written manifests from the database and uploads
//! them to Twitch, a few at a time, each until Twitch takes it (200 to the
//! PUT) or refuses it for good.
//!
//! Exactly once, by construction: a manifest's users and id are fixed when
//! it is created; an attempt is recorded as started before anything is
//! sent; an attempt that a crash or a shutdown cuts off leaves the manifest
//! `uploading`, and it is sent again, whole and under the same id, at the
//! next start. Twitch never sees one user under two manifest ids.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::twitch::{TwitchClient, UploadError};
use super::Backoff;
use crate::config::TwitchSettings;
use crate::domain::now_ms;
use crate::store::{ManifestRow, Store, UploadOutcome};

/// How often due retries are looked for when nothing else wakes the task.
const POLL: Duration = Duration::from_secs(1);
/// How often the backlog gauges are refreshed.
const GAUGES_EVERY: Duration = Duration::from_secs(5);
/// How long a manifest whose attempt could not be recorded waits before the next.
const FAILED_RECORD_PAUSE: Duration = Duration::from_secs(10);

/// Uploads written manifests; runs only with Twitch credentials.
pub struct Uploader {
    store: Arc<Store>,
    client: Arc<TwitchClient>,
    settings: TwitchSettings,
}

impl Uploader {
    /// An uploader through `client`.
    pub fn new(store: Arc<Store>, client: TwitchClient, settings: TwitchSettings) -> Uploader {
        Uploader { store, client: Arc::new(client), settings }
    }

    /// Uploads until `stop`. Attempts in flight then are abandoned; their
    /// manifests stay `uploading` and go again (same id) at the next start.
    pub async fn run(self, stop: CancellationToken) {
        match self.store.queue_unconfigured_manifests().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(manifests = n, "Twitch credentials are set: queued manifests written without them"),
            Err(e) => tracing::error!("queueing manifests written without credentials: {e}"),
        }
        let limit = self.settings.uploads_in_flight.max(1);
        let mut attempts: JoinSet<Option<Duration>> = JoinSet::new();
        // The manifest each attempt works on, by task: a panicked task still gives its id back.
        let mut busy: HashMap<tokio::task::Id, String> = HashMap::new();
        // Manifests whose last attempt could not be recorded: not retried before this time,
        // so a database that refuses writes does not turn into a loop of uploads.
        let mut cooling: HashMap<String, tokio::time::Instant> = HashMap::new();
        let mut gauges_due = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            if now >= gauges_due {
                report_backlog(&self.store).await;
                gauges_due = now + GAUGES_EVERY;
            }
            cooling.retain(|_, until| *until > now);
            if attempts.len() < limit {
                match self.store.manifests_to_upload(now_ms(), (limit * 2) as u32).await {
                    Ok(due) => {
                        let free = limit - attempts.len();
                        let taken: HashSet<&String> = busy.values().collect();
                        let due: Vec<ManifestRow> = due
                            .into_iter()
                            .filter(|m| !taken.contains(&m.id) && !cooling.contains_key(&m.id))
                            .take(free)
                            .collect();
                        for manifest in due {
                            let id = manifest.id.clone();
                            let (store, client, settings) =
                                (self.store.clone(), self.client.clone(), self.settings.clone());
                            let task =
                                attempts.spawn(async move { attempt(&store, &client, &settings, &manifest).await });
                            busy.insert(task.id(), id);
                        }
                    }
                    Err(e) => tracing::error!("reading manifests to upload: {e}"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.store.signals().manifest_ready() => {}
                Some(done) = attempts.join_next_with_id(), if !attempts.is_empty() => {
                    let (task, cool_for) = match done {
                        Ok((task, cool_for)) => (task, cool_for),
                        Err(e) => {
                            tracing::error!("an upload attempt panicked: {e}");
                            (e.id(), Some(FAILED_RECORD_PAUSE))
                        }
                    };
                    if let (Some(id), Some(pause)) = (busy.remove(&task), cool_for) {
                        cooling.insert(id, tokio::time::Instant::now() + pause);
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        if !attempts.is_empty() {
            tracing::info!(
                manifests = attempts.len(),
                "stopping with uploads in flight; they are sent again at the next start"
            );
        }
        attempts.shutdown().await;
    }
}

/// Sets the delivery gauges: manifests per status and the age of the oldest not yet uploaded.
async fn report_backlog(store: &Store) {
    match store.manifest_backlog().await {
        Ok((counts, oldest)) => {
            for status in crate::store::manifest_status::ALL {
                let n = counts.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
                metrics::gauge!("drops_manifests", "status" => status).set(n as f64);
            }
            let age = oldest.map_or(0.0, |created| (now_ms() - created).max(0) as f64 / 1000.0);
            metrics::gauge!("drops_manifest_oldest_undelivered_age_seconds").set(age);
        }
        Err(e) => tracing::warn!("reading the manifest backlog: {e}"),
    }
}

/// One upload attempt of one manifest, recorded before and after. Answers
/// how long to leave the manifest alone when its record could not be written.
async fn attempt(
    store: &Store,
    client: &TwitchClient,
    settings: &TwitchSettings,
    manifest: &ManifestRow,
) -> Option<Duration> {
    match store.start_upload_attempt(&manifest.id).await {
        Ok(true) => {}
        // Another status by now (an admin retry raced the read): nothing to do.
        Ok(false) => return None,
        Err(e) => {
            tracing::error!(manifest = %manifest.id, "recording an upload attempt: {e}");
            return Some(FAILED_RECORD_PAUSE);
        }
    }
    let number = manifest.attempts + 1;
    let path = manifest.path.as_deref().map(PathBuf::from);
    let result = match &path {
        Some(path) => client.upload(&manifest.id, path).await,
        None => Err(UploadError::MissingFile("the manifest has no file".into())),
    };
    let outcome = match result {
        Ok(()) => {
            metrics::counter!("drops_manifest_uploads_total", "outcome" => "uploaded").increment(1);
            metrics::counter!("drops_manifest_users_uploaded_total").increment(manifest.users.max(0) as u64);
            tracing::info!(manifest = %manifest.id, users = manifest.users, attempt = number, "manifest uploaded to Twitch");
            UploadOutcome::Uploaded
        }
        Err(UploadError::Transient { reason, wait }) => {
            let backoff = Backoff { initial_ms: settings.retry_initial_ms, max_secs: settings.retry_max_secs };
            let failures = u32::try_from(number).unwrap_or(u32::MAX);
            // What Twitch asks for, but never less than the backoff: a `Retry-After: 0` must not spin.
            let wait =
                wait.unwrap_or_default().max(backoff.wait(failures)).min(Duration::from_secs(settings.retry_max_secs));
            metrics::counter!("drops_manifest_uploads_total", "outcome" => "retry").increment(1);
            tracing::warn!(manifest = %manifest.id, attempt = number, retry_in_ms = wait.as_millis() as u64,
                "manifest upload failed, will retry: {reason}");
            UploadOutcome::RetryAt { at_ms: now_ms() + wait.as_millis() as i64, error: reason }
        }
        Err(UploadError::MissingFile(error)) => {
            // Its grants are fixed: the batcher writes the same file again, and it goes under the same id.
            tracing::warn!(manifest = %manifest.id, "{error}; the file is rebuilt from the manifest's grants");
            return match store.rewrite_manifest(&manifest.id).await {
                Ok(()) => None,
                Err(e) => {
                    tracing::error!(manifest = %manifest.id, "marking a manifest for rewriting: {e}");
                    Some(FAILED_RECORD_PAUSE)
                }
            };
        }
        Err(UploadError::Permanent(error)) => {
            metrics::counter!("drops_manifest_uploads_total", "outcome" => "failed").increment(1);
            tracing::error!(manifest = %manifest.id, attempt = number,
                "manifest upload refused for good (retry with POST /v1/manifests/{{id}}/retry): {error}");
            UploadOutcome::Failed { error }
        }
    };
    match store.finish_upload_attempt(&manifest.id, &outcome).await {
        Ok(()) => None,
        Err(e) => {
            // Not recorded: the manifest stays `uploading` and is sent again, same id, after a pause.
            tracing::error!(manifest = %manifest.id, "recording an upload's outcome: {e}");
            Some(FAILED_RECORD_PAUSE)
        }
    }
}
