//! Manifest bookkeeping: each grant is assigned to exactly one manifest in the
//! same transaction that records the manifest as pending; the file is written
//! afterwards and can always be rebuilt from the grants that name it.

use serde::Serialize;

use super::{list_placeholders, Store, StoreError};
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

/// A manifest as recorded in the database.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow)]
pub struct ManifestRow {
    pub id: String,
    pub campaign_id: String,
    pub client_id: String,
    pub game: String,
    pub broadcaster_id: String,
    pub item_id: String,
    pub reason: String,
    pub users: i64,
    pub status: String,
    pub path: Option<String>,
}

const IDS_PER_STATEMENT: usize = 900;

const MANIFEST_COLUMNS: &str = "id, campaign_id, client_id, game, broadcaster_id, item_id, reason, users, status, path";

impl Store {
    /// Up to `limit` grants not yet in a manifest, oldest first.
    pub async fn unbatched_grants(&self, limit: u32) -> Result<Vec<UnbatchedGrant>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, campaign_id, client_id, game, broadcaster_id, reward_id, reason, user_id FROM grants \
             WHERE manifest_id IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
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
        .bind(grant_ids.len() as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for chunk in grant_ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "UPDATE grants SET manifest_id = $1 WHERE manifest_id IS NULL AND id IN ({})",
                list_placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(&manifest.id);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The users of a manifest, in grant order.
    pub async fn manifest_users(&self, manifest_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT user_id FROM grants WHERE manifest_id = $1 ORDER BY id")
            .bind(manifest_id)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Marks a manifest's file as written.
    pub async fn mark_manifest_written(&self, manifest_id: &str, path: &str) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        sqlx::query("UPDATE manifests SET status = 'written', path = $2, written_at = $3 WHERE id = $1")
            .bind(manifest_id)
            .bind(path)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Manifests whose file may not have been written (a crash in between).
    pub async fn pending_manifests(&self) -> Result<Vec<ManifestRow>, StoreError> {
        self.query_manifests(&format!(
            "SELECT {MANIFEST_COLUMNS} FROM manifests WHERE status = 'pending' ORDER BY created_at, id"
        ))
        .await
    }

    /// Every manifest, oldest first.
    pub async fn list_manifests(&self) -> Result<Vec<ManifestRow>, StoreError> {
        self.query_manifests(&format!("SELECT {MANIFEST_COLUMNS} FROM manifests ORDER BY created_at, id")).await
    }

    async fn query_manifests(&self, sql: &str) -> Result<Vec<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(sql).fetch_all(&self.pool).await?)
    }
}
