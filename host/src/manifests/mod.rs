//! Batches new grants into Twitch bulk drops grant manifests.
//!
//! A manifest is first recorded as pending, with its grants assigned to it, in
//! one transaction; its file is then written (temp file, fsync, rename) and
//! the manifest marked written. A crash in between leaves a pending manifest
//! whose file is rebuilt from its grants at the next start: every grant ends
//! up in exactly one manifest file. Its grants never change after that, so
//! every upload attempt (`crate::delivery`) sends the same users under the
//! same id.
//!
//! Twitch processes one large file faster than many small ones, so a flush
//! keeps filling a group's manifest across the pages it reads, up to
//! `max_file_bytes`, and files are streamed: neither the batcher's memory nor
//! the writer's grows with a manifest's users.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ManifestSettings;
use crate::files::write_atomically_with;
use crate::store::{ManifestRow, Store, StoreError, UnbatchedGrant};

/// Grants read per step.
const READ_BATCH: u32 = 50_000;
/// Users read per page while a file is written.
const WRITE_PAGE: u32 = 10_000;
/// JSON bytes of a manifest apart from its users, at least (see [`header_bytes`]).
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
    /// Whether written manifests are to be uploaded (Twitch credentials are set).
    upload: bool,
}

type BatchKey = (String, String, String, String, String, String);

impl Batcher {
    /// A batcher writing manifest files into `dir`; `upload` says whether
    /// they go on to Twitch or stay `not_configured`.
    pub fn new(store: Arc<Store>, dir: PathBuf, settings: ManifestSettings, upload: bool) -> Batcher {
        Batcher { store, dir, settings, upload }
    }

    /// Flushes every interval (the longest a grant waits for its manifest),
    /// or early once `flush_at_grants` grants wait, until `stop`, then once more.
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
        let mut open = OpenManifests::new(self.settings.max_file_bytes);
        // Grants committed while this flush runs wait for the next one: under
        // steady load a flush still ends, and its files get written.
        let through = self.store.last_grant_id().await?;
        loop {
            let grants = self.store.unbatched_grants(through, READ_BATCH).await?;
            if grants.is_empty() {
                break;
            }
            for part in open.assign(grants) {
                if part.new {
                    self.store.create_manifest(&part.row, &part.grant_ids).await?;
                } else {
                    self.store.add_to_manifest(&part.row.id, &part.grant_ids).await?;
                }
            }
        }
        for row in open.finish() {
            self.write(&row).await?;
            written.push(row);
        }
        Ok(written)
    }

    /// Streams a manifest's file from its grants, page by page, then marks it written.
    async fn write(&self, row: &ManifestRow) -> Result<(), ManifestError> {
        let path = self.dir.join(format!("{}.json", row.id));
        let (pages, mut next_page) = mpsc::channel::<Option<Vec<(i64, String)>>>(2);
        let (target, header) = (path.clone(), row.clone());
        let writer = tokio::task::spawn_blocking(move || {
            write_atomically_with(&target, |out| {
                let pages = std::iter::from_fn(|| next_page.blocking_recv());
                write_manifest(out, &header, pages)
            })
        });
        let (mut after, mut count) = (0, 0u64);
        let read = loop {
            match self.store.manifest_users_page(&row.id, after, WRITE_PAGE).await {
                Ok(page) if page.is_empty() => break Ok(()),
                Ok(page) => {
                    after = page.last().map_or(after, |(id, _)| *id);
                    count += page.len() as u64;
                    if pages.send(Some(page)).await.is_err() {
                        break Ok(());
                    }
                }
                Err(e) => {
                    // Tell the writer to fail, so no file with some users missing is renamed into place.
                    let _ = pages.send(None).await;
                    break Err(e);
                }
            }
        };
        drop(pages);
        let written = writer.await?;
        read?;
        written.map_err(|source| ManifestError::Io { path: path.clone(), source })?;
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.store.mark_manifest_written(&row.id, &path.display().to_string(), bytes, self.upload).await?;
        metrics::counter!("drops_manifests_written_total").increment(1);
        metrics::counter!("drops_manifest_users_total").increment(count);
        tracing::info!(manifest = %row.id, campaign = %row.campaign_id, broadcaster = %row.broadcaster_id,
            item = %row.item_id, users = count, bytes, path = %path.display(), "manifest written");
        Ok(())
    }
}

/// Writes a manifest file: the row's fields, then the users from `pages`. A
/// `None` page means reading the users failed: the file must not be kept.
fn write_manifest(
    out: &mut impl Write,
    row: &ManifestRow,
    pages: impl Iterator<Item = Option<Vec<(i64, String)>>>,
) -> std::io::Result<()> {
    out.write_all(b"{")?;
    let fields = [
        ("campaign_id", &row.campaign_id),
        ("client_id", &row.client_id),
        ("game_watched", &row.game),
        ("broadcaster_id", &row.broadcaster_id),
        ("item_id", &row.item_id),
        ("reason", &row.reason),
    ];
    for (name, value) in fields {
        write!(out, "\"{name}\":")?;
        serde_json::to_writer(&mut *out, value)?;
        out.write_all(b",")?;
    }
    out.write_all(b"\"users\":[")?;
    let mut first = true;
    for page in pages {
        let page = page.ok_or_else(|| std::io::Error::other("reading the manifest's users failed"))?;
        for (_, user) in page {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            serde_json::to_writer(&mut *out, &user)?;
        }
    }
    out.write_all(b"]}")
}

/// Bytes `s` takes as a JSON string with its quotes (ids have no control characters,
/// but count their escapes anyway).
fn json_string_len(s: &str) -> u64 {
    let escaped: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() as u64 + escaped + 2
}

/// Grants given to a manifest in one step: a new manifest, or more for one
/// created earlier in the same flush.
#[derive(Debug)]
struct Part {
    row: ManifestRow,
    grant_ids: Vec<i64>,
    new: bool,
}

/// The manifests a flush is filling: one open manifest per batch key, in
/// first-seen order, each closed when the next user would take it past the
/// size limit. They stay pending (not uploadable) until the flush writes them.
struct OpenManifests {
    max_bytes: u64,
    order: Vec<BatchKey>,
    seen: std::collections::HashSet<BatchKey>,
    /// Each key's open manifest, the bytes its users take, and its header's bytes.
    open: HashMap<BatchKey, (ManifestRow, u64, u64)>,
    closed: Vec<ManifestRow>,
}

impl OpenManifests {
    fn new(max_bytes: u64) -> OpenManifests {
        OpenManifests {
            max_bytes,
            order: Vec::new(),
            seen: Default::default(),
            open: HashMap::new(),
            closed: Vec::new(),
        }
    }

    /// Gives each grant a manifest of its (campaign, client, game,
    /// broadcaster, reward, reason), opening a new one where the current one is full.
    fn assign(&mut self, grants: Vec<UnbatchedGrant>) -> Vec<Part> {
        let mut parts: Vec<Part> = Vec::new();
        let mut part_of: HashMap<String, usize> = HashMap::new();
        for g in grants {
            let key = (g.campaign_id, g.client_id, g.game, g.broadcaster_id, g.reward_id, g.reason);
            // The user id, its quotes and its comma.
            let user_bytes = json_string_len(&g.user_id) + 1;
            let full = self
                .open
                .get(&key)
                .is_some_and(|(row, bytes, header)| row.users > 0 && bytes + user_bytes + header > self.max_bytes);
            if full {
                if let Some((row, _, _)) = self.open.remove(&key) {
                    self.closed.push(row);
                }
            }
            let (row, bytes, _) = self.open.entry(key.clone()).or_insert_with(|| {
                if self.seen.insert(key.clone()) {
                    self.order.push(key.clone());
                }
                let row = new_row(&key);
                part_of.insert(row.id.clone(), parts.len());
                parts.push(Part { row: row.clone(), grant_ids: Vec::new(), new: true });
                (row, 0, header_bytes(&key))
            });
            *bytes += user_bytes;
            row.users += 1;
            let at = *part_of.entry(row.id.clone()).or_insert_with(|| {
                parts.push(Part { row: row.clone(), grant_ids: Vec::new(), new: false });
                parts.len() - 1
            });
            parts[at].grant_ids.push(g.id);
        }
        for part in &mut parts {
            part.row.users = part.grant_ids.len() as i64;
        }
        parts
    }

    /// Every manifest filled, closed ones first, then the open ones in first-seen order.
    fn finish(mut self) -> Vec<ManifestRow> {
        for key in &self.order {
            if let Some((row, _, _)) = self.open.remove(key) {
                self.closed.push(row);
            }
        }
        self.closed
    }
}

/// Bytes a manifest's file takes apart from its users: its six fields (ids
/// may be 256 bytes, escapes doubled), at least [`FIXED_BYTES`].
fn header_bytes(key: &BatchKey) -> u64 {
    let (a, b, c, d, e, f) = key;
    let fields: u64 = [a, b, c, d, e, f].iter().map(|v| json_string_len(v)).sum();
    // Field names, colons, commas and brackets: about 110 bytes.
    (fields + 128).max(FIXED_BYTES)
}

fn new_row(key: &BatchKey) -> ManifestRow {
    let (campaign_id, client_id, game, broadcaster_id, item_id, reason) = key.clone();
    ManifestRow {
        id: uuid::Uuid::new_v4().to_string(),
        campaign_id,
        client_id,
        game,
        broadcaster_id,
        item_id,
        reason,
        status: crate::store::manifest_status::PENDING.into(),
        ..Default::default()
    }
}

/// Groups grants of one read by key, splitting a group whose file would pass
/// `max_bytes` (what one flush of a single page does).
#[cfg(test)]
fn batches(grants: Vec<UnbatchedGrant>, max_bytes: u64) -> Vec<(ManifestRow, Vec<i64>)> {
    let mut open = OpenManifests::new(max_bytes);
    open.assign(grants).into_iter().map(|p| (p.row, p.grant_ids)).collect()
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

    #[test]
    fn a_later_page_fills_the_same_manifest_until_it_is_full() {
        let mut open = OpenManifests::new(FIXED_BYTES + 36);
        let first = open.assign(vec![grant(1, "b", "user-0001"), grant(2, "b", "user-0002")]);
        assert_eq!(first.iter().map(|p| (p.new, p.grant_ids.clone())).collect::<Vec<_>>(), vec![(true, vec![1, 2])]);
        let second = open.assign(vec![grant(3, "b", "user-0003"), grant(4, "b", "user-0004")]);
        assert_eq!(
            second.iter().map(|p| (p.new, p.grant_ids.clone())).collect::<Vec<_>>(),
            vec![(false, vec![3]), (true, vec![4])]
        );
        assert_eq!(second[0].row.id, first[0].row.id, "the open manifest took the next page's grant");
        let rows = open.finish();
        assert_eq!(rows.iter().map(|r| r.users).collect::<Vec<_>>(), vec![3, 1]);
    }

    #[test]
    fn a_streamed_file_is_the_manifest_with_its_users_in_order() {
        let row = ManifestRow {
            campaign_id: "c".into(),
            client_id: "cl".into(),
            game: "Gé \"x\"".into(),
            broadcaster_id: "b".into(),
            item_id: "r".into(),
            reason: "watching".into(),
            ..Default::default()
        };
        let pages = vec![Some(vec![(1, "u1".to_string()), (2, "ü\\2".into())]), Some(vec![(5, "日本".into())])];
        let mut out = Vec::new();
        write_manifest(&mut out, &row, pages.into_iter()).unwrap();
        let file: ManifestFile = serde_json::from_slice(&out).unwrap();
        assert_eq!(file.game_watched, "Gé \"x\"");
        assert_eq!(file.users, ["u1", "ü\\2", "日本"]);
        let mut none = Vec::new();
        assert!(write_manifest(&mut none, &row, vec![Some(vec![]), None].into_iter()).is_err());
        assert!(serde_json::from_slice::<ManifestFile>(br#"{"users":[]}"#).is_err());
        for s in ["plain", "quo\"te", "back\\slash", "日本語"] {
            assert_eq!(json_string_len(s), serde_json::to_string(s).unwrap().len() as u64, "{s}");
        }
    }

    #[test]
    fn the_header_allowance_covers_the_longest_escaped_fields() {
        let long = "\"".repeat(256);
        let key: BatchKey = (long.clone(), long.clone(), long.clone(), long.clone(), long.clone(), "watching".into());
        let mut out = Vec::new();
        write_manifest(&mut out, &new_row(&key), std::iter::empty()).unwrap();
        assert!(out.len() as u64 <= header_bytes(&key), "{} > {}", out.len(), header_bytes(&key));
        assert!(header_bytes(&key) > FIXED_BYTES);
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
                    let bytes: u64 = ids.iter().map(|&i| json_string_len(&grants[i as usize].user_id) + 1).sum();
                    prop_assert!(ids.len() == 1 || bytes + FIXED_BYTES <= max_bytes, "{} bytes", bytes);
                    prop_assert!(ids.iter().all(|&i| grants[i as usize].broadcaster_id == row.broadcaster_id));
                }
            }
        }
    }
}
