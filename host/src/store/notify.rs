//! Commits made by other hosts, heard through PostgreSQL's LISTEN/NOTIFY:
//! the inbox writer, grant inserts and rule publishing send a notification
//! in the transaction they commit, so it is delivered exactly when the rows
//! are visible. Each becomes the same wake-up a local commit raises. A
//! notification is only a hint: every reader also polls, and after the
//! listening connection is lost every reader is woken once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use super::{Backend, Store};

/// The channels, each raised by one kind of commit.
pub(super) const INBOX: &str = "drops_inbox";
pub(super) const GRANTS: &str = "drops_grants";
pub(super) const RULES: &str = "drops_rules";

impl Store {
    /// Listens to the other hosts' commits until `stop` (PostgreSQL only;
    /// a SQLite database has one host).
    pub fn listen_to_other_hosts(self: &Arc<Self>, stop: CancellationToken) {
        if self.backend != Backend::Postgres {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                match store.listen(&stop).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!("listening to other hosts: {e}; reconnecting in 1 s"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }

    async fn listen(&self, stop: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen_all([INBOX, GRANTS, RULES]).await?;
        self.wake_everyone();
        loop {
            let notification = tokio::select! {
                n = listener.try_recv() => n?,
                _ = stop.cancelled() => return Ok(()),
            };
            let Some(notification) = notification else {
                // The connection dropped and is reopened by the next call:
                // what was sent meanwhile is lost.
                self.wake_everyone();
                continue;
            };
            let (from, count) = notification.payload().split_once(' ').unwrap_or((notification.payload(), "1"));
            if from == self.instance {
                continue;
            }
            match notification.channel() {
                INBOX => self.signals.inbox_grew(),
                GRANTS => self.signals.grants_stored(count.parse().unwrap_or(1)),
                RULES => self.signals.rules_published(),
                _ => {}
            }
        }
    }

    fn wake_everyone(&self) {
        self.signals.inbox_grew();
        self.signals.grants_stored(1);
        self.signals.rules_published();
    }

    /// The payload of this store's notifications: who sent it, and a count.
    pub(super) fn notification(&self, count: u64) -> String {
        format!("{} {count}", self.instance)
    }
}
