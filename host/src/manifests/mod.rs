//! Batches new grants into Twitch bulk drops grant manifests.
//!
//! A manifest is first recorded as pending, with its grants assigned to it, in
//! one transaction; its file is then written (temp file, fsync, rename) and
//! the manifest marked written. A crash in between leaves a pending manifest
//! whose file is rebuilt from its grants at the next start: every grant ends
//! up in exactly one manifest file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::ManifestSettings;
use crate::files::write_atomically_with;
use crate::store::{ManifestRow, Store, StoreError, UnbatchedGrant};

/// Grants read per step.
const READ_BATCH: u32 = 50_000;
/// JSON bytes of a manifest apart from its users (generous).
const FIXED_BYTES: u64 = 1024;

/// Twitch's manifest file, field for field.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub campaign_id: String,
    pub client_id: String,
    pub game_watched: String,
    pub broadcaster_id: String,
    pub item_id: String,
    pub reason: String,
    pub users: Vec<String>,
}

/// A failure while batching.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("file task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The batcher task: woken by the store when grants commit.
pub struct Batcher {
    store: Arc<Store>,
    dir: PathBuf,
    settings: ManifestSettings,
}

type BatchKey = (String, String, String, String, String, String);

impl Batcher {
    /// A batcher writing manifest files into `dir`.
    pub fn new(store: Arc<Store>, dir: PathBuf, settings: ManifestSettings) -> Batcher {
        Batcher { store, dir, settings }
    }

    /// Flushes every interval, or early once `flush_at_grants` grants wait
    /// (one large file is processed faster by Twitch than many small ones),
    /// until `stop`, then once more.
    pub async fn run(self, stop: CancellationToken) {
        let interval = Duration::from_secs(self.settings.flush_interval_secs.max(1));
        let mut next = tokio::time::Instant::now() + interval;
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep_until(next) => false,
                _ = self.store.signals().grants_committed() => {
                    if self.store.signals().grants_waiting() < self.settings.flush_at_grants {
                        continue;
                    }
                    false
                }
                _ = stop.cancelled() => true,
            };
            self.store.signals().take_grants_waiting();
            if let Err(e) = self.flush().await {
                tracing::error!("manifest flush failed, will retry: {e}");
            }
            next = tokio::time::Instant::now() + interval;
            if stopping {
                return;
            }
        }
    }

    /// Rewrites pending manifests, then batches every unbatched grant.
    /// Returns the manifests written.
    pub async fn flush(&self) -> Result<Vec<ManifestRow>, ManifestError> {
        let mut written = Vec::new();
        for pending in self.store.pending_manifests().await? {
            self.write(&pending).await?;
            written.push(pending);
        }
        loop {
            let grants = self.store.unbatched_grants(READ_BATCH).await?;
            if grants.is_empty() {
                break;
            }
            for (row, ids) in batches(grants, self.settings.max_file_bytes) {
                self.store.create_manifest(&row, &ids).await?;
                self.write(&row).await?;
                written.push(row);
            }
        }
        Ok(written)
    }

    async fn write(&self, row: &ManifestRow) -> Result<(), ManifestError> {
        let users = self.store.manifest_users(&row.id).await?;
        let count = users.len();
        let file = ManifestFile {
            campaign_id: row.campaign_id.clone(),
            client_id: row.client_id.clone(),
            game_watched: row.game.clone(),
            broadcaster_id: row.broadcaster_id.clone(),
            item_id: row.item_id.clone(),
            reason: row.reason.clone(),
            users,
        };
        let path = self.dir.join(format!("{}.json", row.id));
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            write_atomically_with(&target, |out| serde_json::to_writer(out, &file).map_err(std::io::Error::from))
        })
        .await?
        .map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        self.store.mark_manifest_written(&row.id, &path.display().to_string()).await?;
        metrics::counter!("drops_manifests_written_total").increment(1);
        metrics::counter!("drops_manifest_users_total").increment(count as u64);
        tracing::info!(manifest = %row.id, campaign = %row.campaign_id, broadcaster = %row.broadcaster_id,
            item = %row.item_id, users = count, path = %path.display(), "manifest written");
        Ok(())
    }
}

/// Groups grants by (campaign, client, game, broadcaster, reward, reason),
/// splitting a group whose file would pass `max_bytes`.
fn batches(grants: Vec<UnbatchedGrant>, max_bytes: u64) -> Vec<(ManifestRow, Vec<i64>)> {
    /// The parts of one group so far; the last one's users take `last_bytes`.
    #[derive(Default)]
    struct Parts {
        parts: Vec<Vec<i64>>,
        last_bytes: u64,
    }
    let mut order: Vec<BatchKey> = Vec::new();
    let mut groups: HashMap<BatchKey, Parts> = HashMap::new();
    for g in grants {
        let key = (g.campaign_id, g.client_id, g.game, g.broadcaster_id, g.reward_id, g.reason);
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key);
            Parts { parts: vec![Vec::new()], last_bytes: 0 }
        });
        // The user id, its quotes and its comma.
        let user_bytes = g.user_id.len() as u64 + 3;
        let last_is_empty = group.parts.last().is_none_or(Vec::is_empty);
        if group.last_bytes + user_bytes + FIXED_BYTES > max_bytes && !last_is_empty {
            group.parts.push(Vec::new());
            group.last_bytes = 0;
        }
        group.last_bytes += user_bytes;
        if let Some(part) = group.parts.last_mut() {
            part.push(g.id);
        }
    }
    let mut out = Vec::new();
    for key in order {
        for part in groups.remove(&key).map(|g| g.parts).unwrap_or_default() {
            let (campaign_id, client_id, game, broadcaster_id, item_id, reason) = key.clone();
            let row = ManifestRow {
                id: uuid::Uuid::new_v4().to_string(),
                campaign_id,
                client_id,
                game,
                broadcaster_id,
                item_id,
                reason,
                users: part.len() as i64,
                status: "pending".into(),
                path: None,
            };
            out.push((row, part));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: i64, broadcaster: &str, user: &str) -> UnbatchedGrant {
        UnbatchedGrant {
            id,
            campaign_id: "c".into(),
            client_id: "cl".into(),
            game: "G".into(),
            broadcaster_id: broadcaster.into(),
            reward_id: "r".into(),
            reason: "watching".into(),
            user_id: user.into(),
        }
    }

    #[test]
    fn one_batch_per_key_in_first_seen_order() {
        let b = batches(vec![grant(1, "b1", "u1"), grant(2, "b2", "u2"), grant(3, "b1", "u3")], 100_000_000);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].0.broadcaster_id.as_str(), b[0].1.clone()), ("b1", vec![1, 3]));
        assert_eq!((b[1].0.broadcaster_id.as_str(), b[1].1.clone()), ("b2", vec![2]));
    }

    #[test]
    fn large_batches_split_by_size() {
        let grants = (0..10).map(|i| grant(i, "b", "user-0000")).collect();
        let b = batches(grants, FIXED_BYTES + 30);
        assert_eq!(b.iter().map(|(_, ids)| ids.len()).collect::<Vec<_>>(), vec![2, 2, 2, 2, 2]);
    }

    mod properties {
        use super::*;
        use crate::test_values::hostile_string;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn every_grant_lands_in_exactly_one_batch_within_the_size(
                users in prop::collection::vec((0u8..3, hostile_string()), 0..200),
                max_bytes in (FIXED_BYTES + 1)..(FIXED_BYTES + 400),
            ) {
                let grants: Vec<UnbatchedGrant> = users
                    .iter()
                    .enumerate()
                    .map(|(i, (b, user))| grant(i as i64, &format!("b{b}"), user))
                    .collect();
                let out = batches(grants.clone(), max_bytes);
                let mut seen: Vec<i64> = out.iter().flat_map(|(_, ids)| ids.clone()).collect();
                seen.sort();
                prop_assert_eq!(seen, (0..grants.len() as i64).collect::<Vec<_>>());
                for (row, ids) in &out {
                    prop_assert!(!ids.is_empty());
                    let bytes: u64 = ids.iter().map(|&i| grants[i as usize].user_id.len() as u64 + 3).sum();
                    prop_assert!(ids.len() == 1 || bytes + FIXED_BYTES <= max_bytes, "{} bytes", bytes);
                    prop_assert!(ids.iter().all(|&i| grants[i as usize].broadcaster_id == row.broadcaster_id));
                }
            }
        }
    }
}
