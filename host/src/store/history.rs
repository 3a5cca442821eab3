//! Plugin versions and rule history: which version served which campaign when.

use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

/// A stored plugin version (without its bytes).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PluginVersion {
    pub name: String,
    pub hash: String,
    pub size: i64,
    pub first_seen_at: i64,
}

/// One entry of a campaign's history.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RuleHistoryEntry {
    pub campaign_id: String,
    pub campaign_revision: String,
    pub plugin_name: String,
    pub plugin_hash: String,
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

    /// Records that a campaign revision now runs with a plugin version,
    /// unless that is already its latest entry.
    pub async fn record_activation(&self, entry: &RuleHistoryEntry) -> Result<(), StoreError> {
        let _guard = self.write_lock().await;
        let latest = sqlx::query(
            "SELECT campaign_revision, plugin_hash FROM rule_history WHERE campaign_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(&entry.campaign_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = latest {
            let (revision, hash): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            if revision == entry.campaign_revision && hash == entry.plugin_hash {
                return Ok(());
            }
        }
        sqlx::query(
            "INSERT INTO rule_history (campaign_id, campaign_revision, plugin_name, plugin_hash, activated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&entry.campaign_id)
        .bind(&entry.campaign_revision)
        .bind(&entry.plugin_name)
        .bind(&entry.plugin_hash)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A plugin's versions, oldest first.
    pub async fn plugin_versions(&self, name: &str) -> Result<Vec<PluginVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, hash, size, first_seen_at FROM plugin_versions WHERE name = $1 ORDER BY first_seen_at, hash",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(PluginVersion {
                    name: r.try_get("name")?,
                    hash: r.try_get("hash")?,
                    size: r.try_get("size")?,
                    first_seen_at: r.try_get("first_seen_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The bytes of a stored plugin version.
    pub async fn plugin_bytes(&self, name: &str, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT bytes FROM plugin_versions WHERE name = $1 AND hash = $2")
            .bind(name)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// A campaign's history, oldest first.
    pub async fn rule_history(&self, campaign_id: &str) -> Result<Vec<RuleHistoryEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT campaign_id, campaign_revision, plugin_name, plugin_hash, activated_at FROM rule_history \
             WHERE campaign_id = $1 ORDER BY id",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(RuleHistoryEntry {
                    campaign_id: r.try_get("campaign_id")?,
                    campaign_revision: r.try_get("campaign_revision")?,
                    plugin_name: r.try_get("plugin_name")?,
                    plugin_hash: r.try_get("plugin_hash")?,
                    activated_at: r.try_get("activated_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }
}
