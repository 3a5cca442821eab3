//! Account links: which game account a Twitch user is.

use std::collections::HashMap;

use super::{list_placeholders, Store, StoreError};
use crate::domain::{now_ms, AccountLink, Id};

/// Ids bound per statement: below SQLite's historical limit of 999 parameters.
const IDS_PER_STATEMENT: usize = 900;

impl Store {
    /// Registers links in one transaction (all or none); a Twitch user linked
    /// again points at the new game account. Returns how many were written.
    pub async fn put_links(&self, links: &[AccountLink]) -> Result<u64, StoreError> {
        let _guard = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        for link in links {
            sqlx::query(
                "INSERT INTO account_links (twitch_user_id, game_account_id, updated_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (twitch_user_id) DO UPDATE SET game_account_id = excluded.game_account_id, \
                 updated_at = excluded.updated_at",
            )
            .bind(&link.twitch_user_id.0)
            .bind(&link.game_account_id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(links.len() as u64)
    }

    /// The game account linked to a Twitch user, if any.
    pub async fn link_of(&self, twitch_user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT game_account_id FROM account_links WHERE twitch_user_id = $1")
            .bind(twitch_user_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// The game accounts linked to each of `twitch_user_ids` that has one, in one query per 900 ids.
    pub async fn links_of(&self, twitch_user_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let mut found = HashMap::new();
        for chunk in twitch_user_ids.chunks(IDS_PER_STATEMENT) {
            let sql = format!(
                "SELECT twitch_user_id, game_account_id FROM account_links WHERE twitch_user_id IN ({})",
                list_placeholders(1, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, String)>(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            found.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(found)
    }

    /// Links, optionally of one Twitch user or one game account, ordered by Twitch user id.
    pub async fn links(
        &self,
        twitch_user_id: Option<&str>,
        game_account_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AccountLink>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT twitch_user_id, game_account_id FROM account_links \
             WHERE ($1 = '' OR twitch_user_id = $1) AND ($2 = '' OR game_account_id = $2) \
             ORDER BY twitch_user_id LIMIT $3",
        )
        .bind(twitch_user_id.unwrap_or_default())
        .bind(game_account_id.unwrap_or_default())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(twitch_user_id, game_account_id)| AccountLink {
                twitch_user_id: Id(twitch_user_id),
                game_account_id: Id(game_account_id),
            })
            .collect())
    }
}
