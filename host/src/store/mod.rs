//! Durable state: the inbox, watch-time checkpoints, grants, manifests,
//! account links and the history of rule versions. Owns how each domain
//! value is stored ([`encoding`]) and wakes readers after commits ([`Signals`]).
//!
//! One SQL text serves SQLite and PostgreSQL through sqlx's `Any` driver
//! (`$N` placeholders, `ON CONFLICT`, `RETURNING` work in both); only the
//! migrations differ per backend. Writes go through one in-process lock:
//! SQLite has a single writer anyway, and on PostgreSQL it keeps inbox
//! sequence numbers committing in order, so the engine never skips one.

mod checkpoint;
mod encoding;
mod grants;
mod history;
mod inbox;
mod links;
mod manifests;
mod signals;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};
use tokio::sync::{Mutex, MutexGuard};

use crate::config::SqliteSynchronous;

pub use checkpoint::{Checkpoint, CheckpointWrite, GameStateRow, WatchTimeRow, WatcherRow};
pub use grants::{GrantFilter, GrantRow};
pub use history::{PluginVersion, RuleHistoryEntry};
pub use inbox::InsertOutcome;
pub use manifests::{ManifestRow, UnbatchedGrant};
pub use signals::Signals;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
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
}

impl StoreError {
    /// Whether trying again cannot help: a corrupt row, or a value the
    /// database refuses (SQLSTATE class 22, data exception, such as a NUL in
    /// text on PostgreSQL). The engine stops on these instead of retrying
    /// forever while ingest keeps acknowledging.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Corrupt { .. } | StoreError::Encode(_) => true,
            StoreError::Sqlx(sqlx::Error::Database(db)) => db.code().is_some_and(|c| c.starts_with("22")),
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
    signals: Signals,
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
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnknownBackend(crate::secrets::redact_url(url)));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(url)?,
            Backend::Postgres => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; FULL (the default)
                        // makes an acknowledged heartbeat survive a power cut, not only a crash.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        let pragma = match synchronous {
                            SqliteSynchronous::Full => "PRAGMA synchronous = FULL",
                            SqliteSynchronous::Normal => "PRAGMA synchronous = NORMAL",
                        };
                        conn.execute(pragma).await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store { pool, backend, writer: Mutex::new(()), signals: Signals::default() })
    }

    /// Applies the backend's migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
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
        self.pool.close().await
    }

    async fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().await
    }
}

/// Adds `mode=rwc` so the file is created, and creates its folder.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or("");
    if !path.is_empty() && path != ":memory:" {
        if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlx(sqlx::Error::Io(e)))?;
        }
    }
    Ok(if url.contains("mode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

/// `($1,$2),($3,$4)` for `rows` rows of `cols` columns.
fn values_placeholders(rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

/// `$first,$first+1,...` for `n` parameters.
fn list_placeholders(first: usize, n: usize) -> String {
    (first..first + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(",")
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
        assert_eq!(list_placeholders(2, 3), "$2,$3,$4");
    }

    #[test]
    fn sqlite_urls_create_files() {
        assert_eq!(sqlite_url("sqlite::memory:").unwrap(), "sqlite::memory:?mode=rwc");
        assert_eq!(sqlite_url("sqlite://x.db?mode=ro").unwrap(), "sqlite://x.db?mode=ro");
    }
}
