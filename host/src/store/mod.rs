//! Durable state: the inbox, watch-time checkpoints, grants, manifests,
//! account links and the history of rule versions. Owns how each domain
//! value is stored ([`encoding`]) and wakes readers after commits ([`Signals`]).
//!
//! One SQL text serves SQLite and PostgreSQL through sqlx's `Any` driver
//! (`$N` placeholders, `ON CONFLICT`, `RETURNING` work in both); only the
//! migrations differ per backend. Two write paths never wait for each other:
//! the inbox has its own writer task with group commit ([`inbox`]; on SQLite
//! its own file, attached to every connection so queries name its table as
//! usual), and everything else goes through one in-process lock, since
//! SQLite has a single writer per file anyway.

mod checkpoint;
mod cluster;
mod encoding;
mod entitlements;
mod grants;
mod history;
mod inbox;
mod links;
mod manifests;
mod notify;
mod progress;
mod segments;
mod signals;
mod sinks;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::SqliteSynchronous;

pub use checkpoint::{Checkpoint, CheckpointWrite, GameStateRow, PartitionKey, WatchTimeRow, WatcherRow};
pub use cluster::{Fence, HostRow, LeaseRow, RuleFileChange, RuleFileRow};
pub use entitlements::{EntitlementBacklog, EntitlementFilter, EntitlementRow, Fulfilment, Seen};
pub use grants::{GrantFilter, GrantRow};
pub use history::{PluginVersion, RuleHistoryEntry};
use inbox::InboxWriter;
pub use inbox::InsertOutcome;
pub use manifests::{status as manifest_status, ManifestRow, UnbatchedGrant, UploadOutcome};
pub use progress::{GrantBucket, ViewerMinutes, TOP_VIEWERS_KEPT};
pub use segments::{CampaignViewers, SegmentRef, WatchTimeColumns, ROWS_PER_SEGMENT};
pub use signals::Signals;
pub use sinks::SinkBacklog;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static SQLITE_INBOX_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite-inbox");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A storage failure; the HTTP layer answers it with 503 so Twitch retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL `{0}` is neither sqlite:// nor postgres://")]
    UnknownBackend(String),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored event {seq} is corrupt: {reason}")]
    Corrupt { seq: i64, reason: String },
    #[error("cannot encode for storage: {0}")]
    Encode(String),
    #[error("the inbox writer has stopped")]
    WriterStopped,
    /// A write that would break one of the store's promises, refused.
    #[error("refused: {0}")]
    Invariant(String),
    /// A fenced write by a host that no longer holds the lease.
    #[error("lease `{0}` is held by another host now")]
    LeaseLost(String),
    #[error("{0}")]
    Shared(std::sync::Arc<StoreError>),
}

impl StoreError {
    /// Whether trying again cannot help: a corrupt row, or a value the
    /// database refuses (SQLSTATE class 22, data exception, such as a NUL in
    /// text on PostgreSQL). The engine stops on these instead of retrying
    /// forever while ingest keeps acknowledging.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } | StoreError::Encode(_) | StoreError::LeaseLost(_) => true,
            StoreError::Sqlx(sqlx::Error::Database(db)) => db.code().is_some_and(|c| c.starts_with("22")),
            StoreError::Shared(e) => e.is_permanent(),
            _ => false,
        }
    }
}

/// The database behind drops-host.
#[derive(Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    writer: Mutex<()>,
    signals: Arc<Signals>,
    inbox: InboxWriter,
    /// The inbox writer's own connection (SQLite), closed with the store.
    inbox_pool: Option<AnyPool>,
    /// For the connection that listens to other hosts' notifications (PostgreSQL).
    url: String,
    /// Names this store's notifications, so it does not hear its own.
    instance: String,
}

impl Store {
    /// Connects (creating a SQLite file and its folder if needed), with
    /// SQLite's strongest durability.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, SqliteSynchronous::Full).await
    }

    /// Connects with the given SQLite durability (ignored for PostgreSQL).
    pub async fn connect_with(url: &str, synchronous: SqliteSynchronous) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let signals = Arc::new(Signals::default());
        if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = AnyConnectOptions::from_str(url)?;
            let pool = AnyPoolOptions::new().max_connections(8).connect_with(options).await?;
            let instance = uuid::Uuid::new_v4().simple().to_string();
            let inbox = InboxWriter::start(pool.clone(), signals.clone(), Some(format!("{instance} 1")));
            return Ok(Store {
                pool,
                backend: Backend::Postgres,
                writer: Mutex::new(()),
                signals,
                inbox,
                inbox_pool: None,
                url: url.to_string(),
                instance,
            });
        }
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnknownBackend(crate::secrets::redact_url(url)));
        }
        let files = SqliteFiles::of(url)?;
        // Every connection sees the other file attached: the main pool reads
        // the inbox, the inbox writer reads `watchers` when it prunes.
        // The main file is always synced at commit: nothing there is on the
        // acknowledgement path, and the inbox is pruned only behind a
        // checkpoint that is durable (else a power cut could keep the prune
        // and lose the checkpoint). `sqlite_synchronous` is the inbox's.
        let main = SqliteSynchronous::Full;
        let pool = sqlite_pool(&files.main_url, 4, main, ("inbox_file", files.inbox_path.clone())).await?;
        let inbox_pool = sqlite_pool(&files.inbox_url, 1, synchronous, ("engine_file", files.main_path)).await?;
        let inbox = InboxWriter::start(inbox_pool.clone(), signals.clone(), None);
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
            writer: Mutex::new(()),
            signals,
            inbox,
            inbox_pool: Some(inbox_pool),
            url: url.to_string(),
            instance: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// Applies the backend's migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match (self.backend, &self.inbox_pool) {
            (Backend::Sqlite, Some(inbox_pool)) => {
                SQLITE_INBOX_MIGRATIONS.run(inbox_pool).await?;
                self.move_sqlite_inbox().await?;
                SQLITE_MIGRATIONS.run(&self.pool).await?;
                self.align_sqlite_inbox_sequence(inbox_pool).await?;
            }
            _ => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Copies the rows of an inbox kept in the main file (before the inbox
    /// had a file of its own) into the inbox file; the next migration drops
    /// the old table. Copying is idempotent, so a crash here loses nothing.
    async fn move_sqlite_inbox(&self) -> Result<(), StoreError> {
        let old: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'inbox'")
                .fetch_optional(&self.pool)
                .await?;
        if old.is_some() {
            let moved = sqlx::query(
                "INSERT OR IGNORE INTO inbox_file.inbox (seq, source, dedup_key, header, viewers, received_at) \
                 SELECT seq, source, dedup_key, header, viewers, received_at FROM main.inbox",
            )
            .execute(&self.pool)
            .await?;
            tracing::info!(rows = moved.rows_affected(), "inbox moved to its own file");
        }
        Ok(())
    }

    /// An inbox file newer than the main file (lost, or restored from another
    /// backup) would number new events behind the engine's checkpoint, and the
    /// engine would never read them; numbering continues after the checkpoint.
    async fn align_sqlite_inbox_sequence(&self, inbox_pool: &AnyPool) -> Result<(), StoreError> {
        // Partitions' checkpoints: numbering continues after the newest.
        let checkpoint: Option<i64> =
            sqlx::query_scalar("SELECT max(inbox_seq) FROM engine_checkpoint").fetch_one(&self.pool).await?;
        let Some(checkpoint) = checkpoint else { return Ok(()) };
        let last: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM inbox").fetch_one(inbox_pool).await?;
        if last.unwrap_or(0) < checkpoint {
            tracing::warn!(
                checkpoint,
                inbox = last.unwrap_or(0),
                "the inbox file is behind the engine's checkpoint; numbering new events after it"
            );
            let mut tx = inbox_pool.begin().await?;
            sqlx::query("DELETE FROM sqlite_sequence WHERE name = 'inbox'").execute(&mut *tx).await?;
            sqlx::query("INSERT INTO sqlite_sequence (name, seq) VALUES ('inbox', $1)")
                .bind(checkpoint)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// The wake-ups this store raises after its commits.
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
        if let Some(inbox) = &self.inbox_pool {
            inbox.close().await;
        }
    }

    async fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().await
    }
}

/// The two files of a SQLite store: the main database and the inbox beside it.
struct SqliteFiles {
    main_url: String,
    main_path: String,
    inbox_url: String,
    inbox_path: String,
}

impl SqliteFiles {
    /// `data/drops-host.db` keeps its inbox in `data/drops-host.inbox.db`;
    /// a file of another extension adds to its whole name (`x.sqlite.inbox.db`),
    /// so two databases in one folder never share an inbox.
    /// Creates the folder; the URLs get `mode=rwc` so the files are created.
    fn of(url: &str) -> Result<SqliteFiles, StoreError> {
        let rest = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        if path.is_empty() || path.starts_with(":memory:") || query.contains("mode=memory") {
            // Two pools cannot share one in-memory database.
            return Err(StoreError::UnknownBackend(format!(
                "{url} (an in-memory SQLite database cannot hold the inbox; give a file)"
            )));
        }
        let main = Path::new(path);
        if let Some(dir) = main.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlx(sqlx::Error::Io(e)))?;
        }
        let name = match main.extension().and_then(|e| e.to_str()) {
            Some("db") => main.file_stem(),
            _ => main.file_name(),
        };
        let name = name.map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let inbox = main.with_file_name(format!("{name}.inbox.db")).to_string_lossy().into_owned();
        let query = if query.contains("mode=") {
            query.to_string()
        } else if query.is_empty() {
            "mode=rwc".to_string()
        } else {
            format!("{query}&mode=rwc")
        };
        Ok(SqliteFiles {
            main_url: format!("sqlite://{path}?{query}"),
            main_path: path.to_string(),
            inbox_url: format!("sqlite://{inbox}?{query}"),
            inbox_path: inbox,
        })
    }
}

/// A SQLite pool in WAL mode with the other file of the store attached as `attach.0`.
async fn sqlite_pool(
    url: &str,
    connections: u32,
    synchronous: SqliteSynchronous,
    attach: (&'static str, String),
) -> Result<AnyPool, StoreError> {
    let options = AnyConnectOptions::from_str(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(connections)
        .after_connect(move |conn, _| {
            let (schema, path) = attach.clone();
            Box::pin(async move {
                // WAL lets readers run beside the writer; FULL (the default)
                // makes an acknowledged heartbeat survive a power cut, not only a crash.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                let pragma = match synchronous {
                    SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
                    SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
                };
                conn.execute(pragma).await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                sqlx::query(&format!("ATTACH DATABASE $1 AS {schema}")).bind(path).execute(&mut *conn).await?;
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// `($1,$2),($3,$4)` for `rows` rows of `cols` columns.
fn values_placeholders(rows: usize, cols: usize) -> String {
    values_placeholders_after(0, rows, cols)
}

/// [`values_placeholders`] numbered from `$skip+1`, after `skip` parameters of the statement's own.
fn values_placeholders_after(skip: usize, rows: usize, cols: usize) -> String {
    values_params(Backend::Postgres, skip, rows, cols)
}

/// `$first,$first+1,...` for `n` parameters.
fn list_placeholders(first: usize, n: usize) -> String {
    list_params(Backend::Postgres, first, n)
}

impl Backend {
    /// Appends placeholder number `i` (1-based) of a statement whose
    /// parameters all appear in order. SQLite gets a bare `?`: sqlx finds a
    /// named parameter's number through `sqlite3_bind_parameter_name`, which
    /// walks the statement's list of names, so binding `$n` parameters costs
    /// O(n²) per statement (81% of the CPU of storing 10 M grants in
    /// 4,000-row statements). sqlx numbers bare `?` by position, so a
    /// statement uses one style throughout.
    fn push_param(self, s: &mut String, i: usize) {
        match self {
            Backend::Sqlite => s.push('?'),
            Backend::Postgres => {
                s.push('$');
                s.push_str(&i.to_string());
            }
        }
    }
}

/// [`values_placeholders_after`] in `backend`'s style (see [`Backend::push_param`]).
fn values_params(backend: Backend, skip: usize, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 7);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            backend.push_param(&mut s, skip + r * cols + c + 1);
        }
        s.push(')');
    }
    s
}

/// [`list_placeholders`] in `backend`'s style (see [`Backend::push_param`]).
fn list_params(backend: Backend, first: usize, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in first..first + n {
        if i > first {
            s.push(',');
        }
        backend.push_param(&mut s, i);
    }
    s
}

/// A migrated SQLite store in a fresh folder, for unit tests (the folder goes when dropped).
#[cfg(test)]
pub(crate) async fn temp_sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("t.db").display())).await.expect("sqlite");
    store.migrate().await.expect("migrations");
    (dir, store)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(values_placeholders(2, 2), "($1,$2),($3,$4)");
        assert_eq!(values_placeholders_after(3, 2, 1), "($4),($5)");
        assert_eq!(list_placeholders(2, 3), "$2,$3,$4");
        assert_eq!(values_params(Backend::Sqlite, 3, 2, 2), "(?,?),(?,?)");
        assert_eq!(list_params(Backend::Sqlite, 2, 3), "?,?,?");
        assert_eq!(list_params(Backend::Postgres, 2, 2), "$2,$3");
    }

    #[test]
    fn sqlite_stores_are_two_files() {
        let files = SqliteFiles::of("sqlite:///srv/drops/drops-host.db").unwrap();
        assert_eq!(files.main_url, "sqlite:///srv/drops/drops-host.db?mode=rwc");
        assert_eq!(files.inbox_url, "sqlite:///srv/drops/drops-host.inbox.db?mode=rwc");
        assert_eq!(files.inbox_path, "/srv/drops/drops-host.inbox.db");
        let files = SqliteFiles::of("sqlite://x.db?mode=ro").unwrap();
        assert_eq!(
            (files.main_url.as_str(), files.inbox_url.as_str()),
            ("sqlite://x.db?mode=ro", "sqlite://x.inbox.db?mode=ro")
        );
        assert!(SqliteFiles::of("sqlite::memory:").is_err());
        assert_eq!(SqliteFiles::of("sqlite://x.sqlite").unwrap().inbox_path, "x.sqlite.inbox.db");
    }
}
