//! Plugin versions and rule history: which version served which campaign when.

use super::{Store, StoreError};
use crate::domain::now_ms;
use serde::Serialize;

/// A stored plugin version (without its bytes).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct PluginVersion {
    pub name: String,
    pub hash: String,
    pub size: i64,
    pub first_seen_at: i64,
}

/// One entry of a campaign's history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, sqlx::FromRow, utoipa::ToSchema)]
pub struct RuleHistoryEntry {
    pub campaign_id: String,
    pub campaign_revision: String,
    pub plugin_name: String,
    pub plugin_hash: String,
    /// The wasmtime version and sandbox limits it ran under (`PluginRuntime::fingerprint`).
    pub runtime: String,
    pub activated_at: i64,
}

impl Store {
    /// Records a plugin version (once per hash).
    pub async fn record_plugin_version(&self, name: &str, hash: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        sqlx::query(
            "INSERT INTO plugin_versions (hash, name, bytes, size, first_seen_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(hash)
        .bind(name)
        .bind(bytes)
        .bind(bytes.len() as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records that a campaign revision now runs with a plugin version under
    /// a plugin runtime, unless that is already its latest entry.
    pub async fn record_activation(&self, entry: &RuleHistoryEntry) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let latest: Option<(String, String, String)> = sqlx::query_as(
            "SELECT campaign_revision, plugin_hash, runtime FROM rule_history WHERE campaign_id = $1 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(&entry.campaign_id)
        .fetch_optional(&self.pool)
        .await?;
        let current = (&entry.campaign_revision, &entry.plugin_hash, &entry.runtime);
        if latest.is_some_and(|(revision, hash, runtime)| (&revision, &hash, &runtime) == current) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rule_history (campaign_id, campaign_revision, plugin_name, plugin_hash, runtime, activated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&entry.campaign_id)
        .bind(&entry.campaign_revision)
        .bind(&entry.plugin_name)
        .bind(&entry.plugin_hash)
        .bind(&entry.runtime)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A plugin's versions, oldest first.
    pub async fn plugin_versions(&self, name: &str) -> Result<Vec<PluginVersion>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT name, hash, size, first_seen_at FROM plugin_versions WHERE name = $1 ORDER BY first_seen_at, hash",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The bytes of a stored plugin version.
    pub async fn plugin_bytes(&self, name: &str, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT bytes FROM plugin_versions WHERE name = $1 AND hash = $2")
            .bind(name)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Keeps the text of a campaign file revision (once per revision).
    pub async fn record_campaign_revision(
        &self,
        campaign_id: &str,
        revision: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        sqlx::query(
            "INSERT INTO campaign_revisions (revision, campaign_id, text, first_seen_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (revision) DO NOTHING",
        )
        .bind(revision)
        .bind(campaign_id)
        .bind(text)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The text of a stored campaign file revision.
    pub async fn campaign_revision_text(&self, revision: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT text FROM campaign_revisions WHERE revision = $1")
            .bind(revision)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A campaign's history, oldest first.
    pub async fn rule_history(&self, campaign_id: &str) -> Result<Vec<RuleHistoryEntry>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT campaign_id, campaign_revision, plugin_name, plugin_hash, runtime, activated_at FROM rule_history \
             WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
