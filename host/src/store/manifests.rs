//! Manifest bookkeeping: each grant is assigned to exactly one manifest in the
//! same transaction that records the manifest as pending; the file is written
//! afterwards and can always be rebuilt from the grants that name it.

use serde::Serialize;

use super::{list_params, Backend, Store, StoreError};
use crate::domain::now_ms;

/// A grant not yet in any manifest.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UnbatchedGrant {
    pub id: i64,
    pub campaign_id: String,
    pub client_id: String,
    pub game: String,
    pub broadcaster_id: String,
    pub reward_id: String,
    pub reason: String,
    pub user_id: String,
}

/// A manifest as recorded in the database: what it holds and how its delivery goes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct ManifestRow {
    pub id: String,
    pub campaign_id: String,
    pub client_id: String,
    pub game: String,
    pub broadcaster_id: String,
    pub item_id: String,
    pub reason: String,
    pub users: i64,
    /// One of the [`status`] values.
    pub status: String,
    pub path: Option<String>,
    /// Size of the written file.
    pub bytes: Option<i64>,
    /// Upload attempts started (a restart mid-upload counts one more).
    pub attempts: i64,
    /// Why the last attempt did not succeed.
    pub last_error: Option<String>,
    /// When the next upload attempt is due (ms since the epoch).
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub uploaded_at: Option<i64>,
}

/// The values of `manifests.status`.
pub mod status {
    /// Grants assigned; the file is not written yet.
    pub const PENDING: &str = "pending";
    /// The file is written and waits for its first upload attempt.
    pub const WRITTEN: &str = "written";
    /// Attempts have started; retried until Twitch takes it or refuses it for good.
    pub const UPLOADING: &str = "uploading";
    /// Twitch answered 200 to the file's PUT.
    pub const UPLOADED: &str = "uploaded";
    /// Twitch refused it for good; `POST /v1/manifests/{id}/retry` queues it again.
    pub const FAILED: &str = "failed";
    /// Written while no Twitch credentials were configured.
    pub const NOT_CONFIGURED: &str = "not_configured";
    /// Every value, for validating filters.
    pub const ALL: [&str; 6] = [PENDING, WRITTEN, UPLOADING, UPLOADED, FAILED, NOT_CONFIGURED];
}

/// What an upload attempt ended with, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadOutcome {
    Uploaded,
    /// Try again at this time (ms since the epoch).
    RetryAt {
        at_ms: i64,
        error: String,
    },
    Failed {
        error: String,
    },
}

/// Grant ids per assigning statement (one parameter each, plus the manifest id).
const IDS_PER_STATEMENT: usize = 8000;

const MANIFEST_COLUMNS: &str = "id, campaign_id, client_id, game, broadcaster_id, item_id, reason, users, status, \
     path, bytes, attempts, last_error, next_attempt_at, created_at, uploaded_at";

impl Store {
    /// Up to `limit` grants not yet in a manifest with an id at most
    /// `through`, oldest first.
    pub async fn unbatched_grants(&self, through: i64, limit: u32) -> Result<Vec<UnbatchedGrant>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, campaign_id, client_id, game, broadcaster_id, reward_id, reason, user_id FROM grants \
             WHERE manifest_id IS NULL AND id <= $1 ORDER BY id LIMIT $2",
        )
        .bind(through)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The id of the newest grant (0: none).
    pub async fn last_grant_id(&self) -> Result<i64, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM grants").fetch_one(&self.pool).await?;
        Ok(last.unwrap_or(0))
    }

    /// Records a pending manifest and assigns the grants to it, atomically.
    pub async fn create_manifest(&self, manifest: &ManifestRow, grant_ids: &[i64]) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO manifests (id, campaign_id, client_id, game, broadcaster_id, item_id, reason, users, \
             status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
        )
        .bind(&manifest.id)
        .bind(&manifest.campaign_id)
        .bind(&manifest.client_id)
        .bind(&manifest.game)
        .bind(&manifest.broadcaster_id)
        .bind(&manifest.item_id)
        .bind(&manifest.reason)
        .bind(0i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        assign_grants(self.backend, &mut tx, &manifest.id, grant_ids).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Assigns more grants to a pending manifest (a flush filling it across
    /// pages), atomically with its user count.
    pub async fn add_to_manifest(&self, manifest_id: &str, grant_ids: &[i64]) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        assign_grants(self.backend, &mut tx, manifest_id, grant_ids).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` users of a manifest after grant `after` (exclusive), in
    /// grant order, with their grant ids: a manifest of millions is read in pages.
    pub async fn manifest_users_page(
        &self,
        manifest_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(sqlx::query_as("SELECT id, user_id FROM grants WHERE manifest_id = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(manifest_id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Marks a manifest's file as written, `bytes` long; it is then `written`
    /// (to upload) or `not_configured` (no Twitch credentials).
    pub async fn mark_manifest_written(
        &self,
        manifest_id: &str,
        path: &str,
        bytes: u64,
        upload: bool,
    ) -> Result<(), StoreError> {
        {
            let _guard = self.write_lock().await;
            sqlx::query(
                "UPDATE manifests SET status = $2, path = $3, bytes = $4, written_at = $5 \
                 WHERE id = $1 AND status = 'pending'",
            )
            .bind(manifest_id)
            .bind(if upload { status::WRITTEN } else { status::NOT_CONFIGURED })
            .bind(path)
            .bind(bytes as i64)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        }
        self.signals.manifest_written();
        Ok(())
    }

    /// Manifests whose upload is due at `now_ms`, oldest first: written ones
    /// and those whose attempts go on (including one a crash interrupted).
    pub async fn manifests_to_upload(&self, now_ms: i64, limit: u32) -> Result<Vec<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests WHERE status IN ('written', 'uploading') \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY created_at, id LIMIT $2"
        ))
        .bind(now_ms)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records that an upload attempt starts, before anything is sent: a
    /// crash from here on leaves the manifest `uploading`, to be sent again
    /// under the same id.
    /// Answers false when the manifest is no longer one to upload.
    pub async fn start_upload_attempt(&self, manifest_id: &str) -> Result<bool, StoreError> {
        let _guard = self.write_lock().await;
        let started = sqlx::query(
            "UPDATE manifests SET status = 'uploading', attempts = attempts + 1, next_attempt_at = NULL \
             WHERE id = $1 AND status IN ('written', 'uploading')",
        )
        .bind(manifest_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(started == 1)
    }

    /// Records how an upload attempt ended.
    pub async fn finish_upload_attempt(&self, manifest_id: &str, outcome: &UploadOutcome) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let query = match outcome {
            UploadOutcome::Uploaded => sqlx::query(
                "UPDATE manifests SET status = 'uploaded', uploaded_at = $2, last_error = NULL, \
                 next_attempt_at = NULL WHERE id = $1 AND status = 'uploading'",
            )
            .bind(manifest_id)
            .bind(now_ms()),
            UploadOutcome::RetryAt { at_ms, error } => sqlx::query(
                "UPDATE manifests SET next_attempt_at = $2, last_error = $3 WHERE id = $1 AND status = 'uploading'",
            )
            .bind(manifest_id)
            .bind(*at_ms)
            .bind(error.as_str()),
            UploadOutcome::Failed { error } => sqlx::query(
                "UPDATE manifests SET status = 'failed', next_attempt_at = NULL, last_error = $2 \
                 WHERE id = $1 AND status = 'uploading'",
            )
            .bind(manifest_id)
            .bind(error.as_str()),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Sends a manifest whose file is gone back to `pending`, so the batcher
    /// writes its file again from its (unchanged) grants.
    pub async fn rewrite_manifest(&self, manifest_id: &str) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        sqlx::query("UPDATE manifests SET status = 'pending' WHERE id = $1 AND status = 'uploading'")
            .bind(manifest_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Queues a failed manifest for upload again (same id, same users).
    /// Returns false when no failed manifest has that id.
    pub async fn retry_manifest(&self, manifest_id: &str) -> Result<bool, StoreError> {
        let done = {
            let _guard = self.write_lock().await;
            // Attempts start again from 0, so the backoff does too.
            sqlx::query(
                "UPDATE manifests SET status = 'written', attempts = 0, next_attempt_at = NULL \
                 WHERE id = $1 AND status = 'failed'",
            )
            .bind(manifest_id)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1
        };
        if done {
            self.signals.manifest_written();
        }
        Ok(done)
    }

    /// Turns manifests written without credentials into ones to upload, now
    /// that credentials are configured. Returns how many.
    pub async fn queue_unconfigured_manifests(&self) -> Result<u64, StoreError> {
        let _guard = self.write_lock().await;
        Ok(sqlx::query("UPDATE manifests SET status = 'written' WHERE status = 'not_configured'")
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// How many manifests are in each status, and the creation time of the
    /// oldest one not yet uploaded (pending, written or uploading).
    pub async fn manifest_backlog(&self) -> Result<(Vec<(String, i64)>, Option<i64>), StoreError> {
        let counts =
            sqlx::query_as("SELECT status, COUNT(*) FROM manifests GROUP BY status").fetch_all(&self.pool).await?;
        let oldest = sqlx::query_scalar(
            "SELECT MIN(created_at) FROM manifests WHERE status IN ('pending', 'written', 'uploading')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((counts, oldest))
    }

    /// One manifest by id.
    pub async fn manifest(&self, manifest_id: &str) -> Result<Option<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(&format!("SELECT {MANIFEST_COLUMNS} FROM manifests WHERE id = $1"))
            .bind(manifest_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Manifests whose file may not have been written (a crash in between).
    pub async fn pending_manifests(&self) -> Result<Vec<ManifestRow>, StoreError> {
        self.query_manifests(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests WHERE status = 'pending' ORDER BY created_at, id"
        ))
        .await
    }

    /// Up to `limit` manifests, oldest first, in `status` if given, after the
    /// manifest `after` if given (keyset paging: pass the last id of a page).
    pub async fn list_manifests_page(
        &self,
        status: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests WHERE ($1 = '' OR status = $1) AND ($2 = '' OR \
             (created_at, id) > (SELECT created_at, id FROM manifests WHERE id = $2)) \
             ORDER BY created_at, id LIMIT $3"
        ))
        .bind(status.unwrap_or_default())
        .bind(after.unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every manifest, oldest first.
    pub async fn list_manifests(&self) -> Result<Vec<ManifestRow>, StoreError> {
        self.query_manifests(&format!("SELECT {MANIFEST_COLUMNS} FROM manifests ORDER BY created_at, id")).await
    }

    async fn query_manifests(&self, sql: &str) -> Result<Vec<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }
}

/// Gives the still unassigned `grant_ids` to a pending manifest and counts
/// them in its `users`: a grant another manifest holds stays there.
async fn assign_grants(
    backend: Backend,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    manifest_id: &str,
    grant_ids: &[i64],
) -> Result<(), StoreError> {
    let mut added = 0;
    for chunk in grant_ids.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "UPDATE grants SET manifest_id = {} WHERE manifest_id IS NULL AND id IN ({})",
            list_params(backend, 1, 1),
            list_params(backend, 2, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(manifest_id);
        for id in chunk {
            q = q.bind(*id);
        }
        added += q.execute(&mut **tx).await?.rows_affected();
    }
    let counted = sqlx::query("UPDATE manifests SET users = users + $2 WHERE id = $1 AND status = 'pending'")
        .bind(manifest_id)
        .bind(added as i64)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    // A manifest past `pending` has its file, and maybe Twitch has it: its users never change.
    if counted != 1 {
        return Err(StoreError::Invariant(format!("manifest {manifest_id} is not pending; its grants are fixed")));
    }
    Ok(())
}
