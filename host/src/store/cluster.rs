//! What several hosts on one database share: leases (who runs each piece of
//! work that must have one owner), the hosts that are up, the number of
//! engine partitions, and the rule files every host serves.
//!
//! Lease times are the database's clock, never a host's: hosts' clocks need
//! not agree. A lease's `epoch` grows with every change of holder; a write
//! that needs the lease checks (holder, epoch) inside its own transaction
//! ([`Fence`]), so a host that lost its lease (paused, cut off) cannot
//! overwrite what its successor wrote.

use super::{Backend, Store, StoreError};

/// A lease as held: the proof a fenced write presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease (`engine/0`, `manifests`, `sink/webhook`, ...).
    pub name: String,
    /// The host holding it.
    pub holder: String,
    /// The epoch it was taken at.
    pub epoch: i64,
}

/// A lease as stored, for status pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LeaseRow {
    pub name: String,
    pub holder: Option<String>,
    pub epoch: i64,
    /// Milliseconds until it expires by the database's clock (negative: expired).
    pub expires_in_ms: i64,
}

/// A host that renewed its row recently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct HostRow {
    pub host_id: String,
    /// Its listen address, as it reported it.
    pub listen: String,
    /// drops-host version.
    pub version: String,
    pub started_at: i64,
    /// Milliseconds since it last renewed, by the database's clock.
    pub seen_ms_ago: i64,
}

/// A change to publish: a rule file's path and its new bytes and hash, or `None` to delete it.
pub type RuleFileChange = (String, Option<(Vec<u8>, String)>);

/// A rule file as stored: `campaigns/<name>.toml` or `plugins/<name>.wasm`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RuleFileRow {
    pub path: String,
    pub sha256: String,
}

impl Store {
    /// On SQLite (one writer per file), lease writes wait for the store's
    /// other writes instead of failing with `SQLITE_BUSY`; PostgreSQL needs no wait.
    async fn lease_write_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.write_lock().await),
            Backend::Postgres => None,
        }
    }

    /// The database's clock in unix milliseconds, as SQL.
    fn now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "(CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT))",
            Backend::Sqlite => "(CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER))",
        }
    }

    /// Takes the lease `name` if it is free or expired (or always, with
    /// `force`: a host alone on its database); returns the new epoch.
    pub async fn try_acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        force: bool,
    ) -> Result<Option<i64>, StoreError> {
        let _guard = self.lease_write_lock().await;
        sqlx::query("INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, NULL, 0, 0) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .execute(&self.pool)
            .await?;
        let now = self.now_sql();
        let epoch: Option<i64> = sqlx::query_scalar(&format!(
            "UPDATE leases SET holder = $2, epoch = epoch + 1, expires_at = {now} + $3 \
             WHERE name = $1 AND (holder IS NULL OR expires_at < {now} OR $4 = 1) RETURNING epoch"
        ))
        .bind(name)
        .bind(holder)
        .bind(ttl_ms as i64)
        .bind(i64::from(force))
        .fetch_optional(&self.pool)
        .await?;
        Ok(epoch)
    }

    /// Renews every lease `holder` has; returns them (name, epoch). A lease
    /// missing from the answer was taken over.
    pub async fn renew_leases(&self, holder: &str, ttl_ms: u64) -> Result<Vec<(String, i64)>, StoreError> {
        let _guard = self.lease_write_lock().await;
        let now = self.now_sql();
        Ok(sqlx::query_as(&format!(
            "UPDATE leases SET expires_at = {now} + $2 WHERE holder = $1 RETURNING name, epoch"
        ))
        .bind(holder)
        .bind(ttl_ms as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Gives a lease back, if it is still held at that epoch.
    pub async fn release_lease(&self, fence: &Fence) -> Result<(), StoreError> {
        let _guard = self.lease_write_lock().await;
        sqlx::query("UPDATE leases SET holder = NULL, expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3")
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every lease, for status pages.
    pub async fn leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        let now = self.now_sql();
        Ok(sqlx::query_as(&format!(
            "SELECT name, holder, epoch, expires_at - {now} AS expires_in_ms FROM leases ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that `host` is up (renewed with its leases).
    pub async fn host_seen(&self, host: &str, listen: &str) -> Result<(), StoreError> {
        let _guard = self.lease_write_lock().await;
        let now = self.now_sql();
        sqlx::query(&format!(
            "INSERT INTO cluster_hosts (host_id, listen, version, started_at, seen_at) VALUES ($1, $2, $3, {now}, {now}) \
             ON CONFLICT (host_id) DO UPDATE SET seen_at = excluded.seen_at, listen = excluded.listen"
        ))
        .bind(host)
        .bind(listen)
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Hosts seen within `within_ms`, in the order they started (ties by id).
    pub async fn live_hosts(&self, within_ms: u64) -> Result<Vec<HostRow>, StoreError> {
        let now = self.now_sql();
        Ok(sqlx::query_as(&format!(
            "SELECT host_id, listen, version, started_at, {now} - seen_at AS seen_ms_ago FROM cluster_hosts \
             WHERE seen_at > {now} - $1 ORDER BY started_at, host_id"
        ))
        .bind(within_ms as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A host starting to leave: it is no longer counted among the hosts up,
    /// so the others make room for its work while it drains.
    pub async fn host_leaving(&self, host: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cluster_hosts WHERE host_id = $1").bind(host).execute(&self.pool).await?;
        Ok(())
    }

    /// A host leaving for good: its row goes and the leases `holder` (this
    /// start of it) holds are freed, so
    /// the others take its work at once instead of after the lease expires.
    pub async fn host_left(&self, host: &str, holder: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE leases SET holder = NULL, expires_at = 0 WHERE holder = $1")
            .bind(holder)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cluster_hosts WHERE host_id = $1").bind(host).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The database's engine partition count: set to `wanted` by the first
    /// host, refused if another count was set before. A database that one
    /// engine used before (its state is partition 0's) is split when the
    /// count is first set: every partition starts from that checkpoint's
    /// position and per-broadcaster state, and each paused campaign moves to
    /// its partition, in one transaction.
    pub async fn engine_partitions(&self, wanted: u32) -> Result<u32, StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let stored: Option<i64> = sqlx::query_scalar("SELECT engine_partitions FROM cluster_settings WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(stored) = stored {
            if stored != i64::from(wanted) {
                return Err(StoreError::Invariant(format!(
                    "cluster.engine_partitions is {wanted}, but this database's state is split into {stored} \
                     partitions; set it to {stored} (changing it is not supported)"
                )));
            }
            return Ok(wanted);
        }
        // Each partition gets partition 0's rows (the one engine's).
        const COPIES: [&str; 3] = [
            "INSERT INTO engine_checkpoint (id, inbox_seq, taken_at, pruned_seq) \
             SELECT $1, inbox_seq, taken_at, pruned_seq FROM engine_checkpoint WHERE id = 0 ON CONFLICT DO NOTHING",
            "INSERT INTO game_state (part, broadcaster_id, twitch_user_id, state, changed_minute) \
             SELECT $1, broadcaster_id, twitch_user_id, state, changed_minute FROM game_state WHERE part = 0 \
             ON CONFLICT DO NOTHING",
            "INSERT INTO watchers (part, broadcaster_id, inbox_seq, minute) \
             SELECT $1, broadcaster_id, inbox_seq, minute FROM watchers WHERE part = 0 ON CONFLICT DO NOTHING",
        ];
        for part in 1..i64::from(wanted) {
            for copy in COPIES {
                sqlx::query(copy).bind(part).execute(&mut *tx).await?;
            }
        }
        let paused: Vec<String> =
            sqlx::query_scalar("SELECT campaign_id FROM campaign_breakers").fetch_all(&mut *tx).await?;
        for campaign in paused {
            sqlx::query("UPDATE campaign_breakers SET part = $2 WHERE campaign_id = $1")
                .bind(&campaign)
                .bind(i64::from(crate::domain::partition_of(&campaign, wanted)))
                .execute(&mut *tx)
                .await?;
        }
        // Hosts starting together: the first to commit sets it, the others check it.
        sqlx::query("INSERT INTO cluster_settings (id, engine_partitions) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
            .bind(i64::from(wanted))
            .execute(&mut *tx)
            .await?;
        let stored: i64 = sqlx::query_scalar("SELECT engine_partitions FROM cluster_settings WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        if stored != i64::from(wanted) {
            return Err(StoreError::Invariant(format!(
                "cluster.engine_partitions is {wanted}, but another host set {stored} at the same time"
            )));
        }
        tx.commit().await?;
        Ok(wanted)
    }

    /// Checks inside `tx` that `fence` still holds its lease, and keeps the
    /// lease row locked until the transaction ends (a takeover waits for it).
    pub(super) async fn check_fence(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        let held = sqlx::query("UPDATE leases SET epoch = epoch WHERE name = $1 AND holder = $2 AND epoch = $3")
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .execute(&mut **tx)
            .await?;
        if held.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(fence.name.clone()))
        }
    }

    /// Every rule file's path and hash.
    pub async fn rule_files(&self) -> Result<Vec<RuleFileRow>, StoreError> {
        Ok(sqlx::query_as("SELECT path, sha256 FROM rule_files ORDER BY path").fetch_all(&self.pool).await?)
    }

    /// One rule file's bytes, if it is stored.
    pub async fn rule_file(&self, path: &str) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT bytes, sha256 FROM rule_files WHERE path = $1")
            .bind(path)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Whether rules were ever published to this database.
    pub async fn rules_published(&self) -> Result<bool, StoreError> {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT id FROM rule_files_published WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Stores rule files (`Some(bytes)`) and deletes others (`None`) in one
    /// transaction, then tells every host (NOTIFY `drops_rules` on PostgreSQL).
    pub async fn publish_rule_files(&self, changes: &[RuleFileChange], by: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = crate::domain::now_ms();
        for (path, change) in changes {
            match change {
                Some((bytes, sha256)) => {
                    sqlx::query(
                        "INSERT INTO rule_files (path, bytes, sha256, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (path) DO UPDATE SET bytes = excluded.bytes, sha256 = excluded.sha256, \
                         updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                    )
                    .bind(path)
                    .bind(bytes.as_slice())
                    .bind(sha256)
                    .bind(now)
                    .bind(by)
                    .execute(&mut *tx)
                    .await?;
                }
                None => {
                    sqlx::query("DELETE FROM rule_files WHERE path = $1").bind(path).execute(&mut *tx).await?;
                }
            }
        }
        sqlx::query(
            "INSERT INTO rule_files_published (id, published_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET published_at = excluded.published_at",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(super::notify::RULES)
                .bind(self.notification(1))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
