//! Rules shared through the database, for several hosts.
//!
//! The database holds the rule files every host serves (`rule_files`). Each
//! host keeps its rules directory in step with it: a file changed here (an
//! edit, an upload through this host's admin API) is published; a file
//! changed in the database (by another host) is written here, and the
//! ordinary reload path picks it up. Each side's change is told apart by
//! the hash both sides last agreed on. Publishing sends `NOTIFY
//! drops_rules`, so the other hosts mirror it at once, not at their next
//! poll.
//!
//! What both sides last agreed on is kept in a file beside the host's data
//! (`data_dir/rules-mirror.json`), so a restart tells an edit made here
//! while the host was down from a change made through another host
//! meanwhile. At its first start, one host (`cluster.publish_rules`)
//! replaces the database's rules with its directory; every other host
//! replaces its directory with the database's (or, before any host
//! published, keeps its own).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::reload::Reloader;
use crate::files::write_atomically;
use crate::store::{Store, StoreError};

/// A rules file larger than this is not mirrored (plugins and campaign files are far smaller).
const MAX_RULE_FILE_BYTES: u64 = 64 << 20;

/// How often the database is compared even without a notification.
const POLL: Duration = Duration::from_secs(2);

/// A failure to keep the directory and the database in step.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rules mirror: {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Keeps one host's rules directory and the database's rules in step.
pub struct RulesMirror {
    store: Arc<Store>,
    dir: PathBuf,
    /// Where `agreed` is kept across restarts.
    state_file: PathBuf,
    host: String,
    /// Path → hash both sides last agreed on; `None` until this host first
    /// mirrored (it waits for a publisher).
    agreed: Mutex<Option<BTreeMap<String, String>>>,
}

impl RulesMirror {
    /// Brings the directory and the database in step before the first load:
    /// `publish` makes the directory the source, otherwise the database is.
    pub async fn start(
        store: Arc<Store>,
        dir: PathBuf,
        state_file: PathBuf,
        host: String,
        publish: bool,
    ) -> Result<RulesMirror, MirrorError> {
        if !publish {
            // A mirror: made here if missing. A publisher's missing folder is
            // an error instead (it would publish every rule as deleted).
            for sub in ["campaigns", "plugins"] {
                let folder = dir.join(sub);
                std::fs::create_dir_all(&folder).map_err(|source| MirrorError::Io { path: folder, source })?;
            }
        }
        let remembered = read_state(&state_file);
        let mirror = RulesMirror { store, dir, state_file, host, agreed: Mutex::new(None) };
        if let Some(agreed) = remembered {
            // A restart: each side's changes since are told apart.
            *mirror.agreed.lock().await = Some(agreed);
            mirror.sync().await?;
        } else if publish {
            let local = local_files(&mirror.dir)?;
            let stored = mirror.stored().await?;
            let mut changes = Vec::new();
            for path in local.keys().chain(stored.keys()).collect::<BTreeSet<_>>() {
                match (local.get(path), stored.get(path)) {
                    (Some(l), Some(s)) if l == s => {}
                    (Some(_), _) => changes.push((path.clone(), Some(mirror.read(path)?))),
                    (None, _) => changes.push((path.clone(), None)),
                }
            }
            mirror.store.publish_rule_files(&changes, &mirror.host).await?;
            tracing::info!(files = local.len(), changed = changes.len(), dir = %mirror.dir.display(), "rules published to the database");
            mirror.remember(&local)?;
            *mirror.agreed.lock().await = Some(local);
        } else {
            mirror.sync().await?;
        }
        Ok(mirror)
    }

    /// Keeps the two in step until `stop`: on another host's notification,
    /// after this host's reloads, and every few seconds.
    pub async fn run(self: Arc<Self>, reloader: Arc<Reloader>, stop: CancellationToken) {
        let mut reloads = reloader.swaps();
        loop {
            tokio::select! {
                _ = self.store.signals().rules_changed() => {}
                _ = reloads.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.cancelled() => return,
            }
            match self.sync().await {
                Ok(true) => reloader.reload_now().await,
                Ok(false) => {}
                Err(e) => tracing::warn!("rules mirror: {e}"),
            }
        }
    }

    /// Whether this host shares its rules with the others yet (false until
    /// some host published them: nothing is published from here before).
    pub async fn shared(&self) -> bool {
        self.agreed.lock().await.is_some()
    }

    /// One comparison: publishes what changed here, writes what changed in
    /// the database. Returns whether files here were written.
    pub async fn sync(&self) -> Result<bool, MirrorError> {
        let mut agreed = self.agreed.lock().await;
        let stored = self.stored().await?;
        let local = local_files(&self.dir)?;
        let Some(agreed) = agreed.as_mut() else {
            if !self.store.rules_published().await? {
                return Ok(false);
            }
            // First mirror: the database is the source.
            let wrote = self.write_local(&local, &stored, stored.keys().chain(local.keys())).await?;
            self.remember(&stored)?;
            *agreed = Some(stored);
            return Ok(wrote);
        };
        let before = agreed.clone();
        let mut publish = Vec::new();
        let mut from_db = Vec::new();
        for path in local.keys().chain(stored.keys()).chain(agreed.keys()).cloned().collect::<BTreeSet<_>>() {
            let (l, s, a) = (local.get(&path), stored.get(&path), agreed.get(&path));
            if l == s {
                match l {
                    Some(hash) => agreed.insert(path, hash.clone()),
                    None => agreed.remove(&path),
                };
            } else if s == a {
                // Changed here only.
                publish.push((path.clone(), if l.is_some() { Some(self.read(&path)?) } else { None }));
            } else {
                // Changed in the database (and maybe here too: the database wins).
                from_db.push(path);
            }
        }
        if !publish.is_empty() {
            self.store.publish_rule_files(&publish, &self.host).await?;
            for (path, change) in &publish {
                match change {
                    Some((_, hash)) => agreed.insert(path.clone(), hash.clone()),
                    None => agreed.remove(path),
                };
                tracing::info!(file = %path, deleted = change.is_none(), "rules file published to the other hosts");
            }
        }
        let wrote = self.write_local(&local, &stored, from_db.iter()).await?;
        for path in &from_db {
            match stored.get(path) {
                Some(hash) => agreed.insert(path.clone(), hash.clone()),
                None => agreed.remove(path),
            };
        }
        if *agreed != before {
            self.remember(agreed)?;
        }
        Ok(wrote)
    }

    /// Keeps what both sides agreed on for the next start.
    fn remember(&self, agreed: &BTreeMap<String, String>) -> Result<(), MirrorError> {
        let json = serde_json::to_vec(agreed).unwrap_or_default();
        write_atomically(&self.state_file, &json)
            .map_err(|source| MirrorError::Io { path: self.state_file.clone(), source })
    }

    /// Makes each of `paths` here what the database holds; whether any changed.
    async fn write_local<'a>(
        &self,
        local: &BTreeMap<String, String>,
        stored: &BTreeMap<String, String>,
        paths: impl Iterator<Item = &'a String>,
    ) -> Result<bool, MirrorError> {
        let mut wrote = false;
        for path in paths.collect::<BTreeSet<_>>() {
            if local.get(path) == stored.get(path) {
                continue;
            }
            let target = self.dir.join(path);
            let io = |source| MirrorError::Io { path: target.clone(), source };
            match self.store.rule_file(path).await? {
                Some((bytes, _)) => {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    write_atomically(&target, &bytes).map_err(io)?;
                }
                None => match std::fs::remove_file(&target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                },
            }
            tracing::info!(file = %path, "rules file mirrored from the database");
            wrote = true;
        }
        Ok(wrote)
    }

    /// The database's rule files: path → hash. A path that is not a rule
    /// file's (`../x`, another folder) is never written here.
    async fn stored(&self) -> Result<BTreeMap<String, String>, MirrorError> {
        let mut files = BTreeMap::new();
        for file in self.store.rule_files().await? {
            if rule_file_path(&file.path) {
                files.insert(file.path, file.sha256);
            } else {
                tracing::warn!(path = %file.path.escape_debug(), "rules mirror: not a rule file's path; ignored");
            }
        }
        Ok(files)
    }

    /// A local file's bytes and hash.
    fn read(&self, path: &str) -> Result<(Vec<u8>, String), MirrorError> {
        let full = self.dir.join(path);
        let bytes = std::fs::read(&full).map_err(|source| MirrorError::Io { path: full, source })?;
        let hash = hex::encode(Sha256::digest(&bytes));
        Ok((bytes, hash))
    }
}

/// What a previous start agreed on, if it left a readable file (a damaged
/// one is treated as none: the start rule applies again).
fn read_state(path: &Path) -> Option<BTreeMap<String, String>> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<BTreeMap<String, String>>(&bytes) {
        Ok(agreed) => Some(agreed.into_iter().filter(|(path, _)| rule_file_path(path)).collect()),
        Err(e) => {
            tracing::warn!(file = %path.display(), "rules mirror state unreadable ({e}); starting afresh");
            None
        }
    }
}

/// Whether `path` names a rule file: `campaigns/<name>.toml` or
/// `plugins/<name>.wasm`, the name of ASCII letters, digits, `-`, `_`, `.`
/// and not starting with a dot.
fn rule_file_path(path: &str) -> bool {
    let Some((folder, name)) = path.split_once('/') else { return false };
    let extension = match folder {
        "campaigns" => ".toml",
        "plugins" => ".wasm",
        _ => return false,
    };
    name.len() > extension.len()
        && name.len() <= 255
        && name.ends_with(extension)
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The rules directory's files (`campaigns/*.toml`, `plugins/*.wasm`): path → hash.
/// Anything this cannot read fails the comparison: a file that reads as
/// absent would be published as deleted on every host.
fn local_files(dir: &Path) -> Result<BTreeMap<String, String>, MirrorError> {
    let io = |path: &Path, source| MirrorError::Io { path: path.to_path_buf(), source };
    if !dir.is_dir() {
        return Err(io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "the rules directory is missing")));
    }
    let mut files = BTreeMap::new();
    for sub in ["campaigns", "plugins"] {
        let folder = dir.join(sub);
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(io(&folder, source)),
        };
        for entry in entries {
            let path = entry.map_err(|source| io(&folder, source))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if !rule_file_path(&format!("{sub}/{name}")) {
                continue;
            }
            // Follows symlinks (a mounted config map is a folder of them).
            let meta = std::fs::metadata(&path).map_err(|source| io(&path, source))?;
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_RULE_FILE_BYTES {
                let message = format!("larger than {MAX_RULE_FILE_BYTES} bytes: not shared");
                return Err(io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, message)));
            }
            let bytes = std::fs::read(&path).map_err(|source| io(&path, source))?;
            files.insert(format!("{sub}/{name}"), hex::encode(Sha256::digest(&bytes)));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rule_files_paths_are_mirrored() {
        for good in ["campaigns/summer-boss-rush.toml", "plugins/watch-time-tiers.wasm", "plugins/a.b_c.wasm"] {
            assert!(rule_file_path(good), "{good}");
        }
        for bad in [
            "../etc/passwd",
            "campaigns/../../x.toml",
            "campaigns/.hidden.toml",
            "campaigns/x.wasm",
            "plugins/x.toml",
            "plugins/.wasm",
            "other/x.toml",
            "campaigns/sub/x.toml",
            "campaigns/ünï.toml",
            "campaigns/x y.toml",
            "campaigns/x\0.toml",
        ] {
            assert!(!rule_file_path(bad), "{bad}");
        }
    }
}
