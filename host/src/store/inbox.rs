//! The durable inbox: ingest appends, the engine reads in order.
//!
//! Every write to the inbox goes through one writer task with its own
//! connection (on SQLite, to its own file), so an acknowledgement never waits
//! for the engine's checkpoints or grant writes. The writer commits whatever
//! is waiting in one transaction: requests that arrive together share one
//! fsync (group commit).
//!
//! The engine reads the inbox in sequence order and never goes back, so a
//! sequence number must never become visible after a higher one. On SQLite
//! this writer is the only one. On PostgreSQL several hosts write: each
//! commit takes a transaction-scoped advisory lock before it draws its
//! sequence numbers and holds it until it has committed, so commits (and
//! their numbers) are serialized across hosts: when a reader sees number n,
//! every lower number's transaction had already committed.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::encoding::{
    decode_entitlement, decode_game_state, decode_heartbeat, encode_entitlement, encode_game_state, encode_heartbeat,
};
use super::signals::Signals;
use super::{values_placeholders, Store, StoreError};

use crate::domain::{now_ms, Entitlement, Event, GameStateEvent, Heartbeat, InboxEvent, Linked, ViewerList};

/// Jobs waiting for the writer; a full queue makes callers wait, not fail.
const QUEUE: usize = 256;

/// Jobs committed together at most, so one commit stays short.
const MAX_GROUP: usize = 64;

/// Bytes committed together at most: a group never grows past what one
/// statement should carry (a larger request is a group of its own).
const MAX_GROUP_BYTES: usize = 64 << 20;

/// Rows per INSERT statement (5 parameters each, well under every backend's limit).
const ROWS_PER_STATEMENT: usize = 1000;

/// The PostgreSQL advisory lock that orders inbox commits across hosts ("dropsinb").
const INBOX_ORDER_LOCK: i64 = 0x6472_6f70_7369_6e62;

/// The inbox source of EventSub entitlements.
const SOURCE_EVENTSUB: &str = "eventsub";
/// The inbox source of link events ([`Linked`]).
const SOURCE_LINKS: &str = "links";

/// How a batch of heartbeats was taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Newly stored.
    pub accepted: u64,
    /// Already stored under the same id (Twitch's retries).
    pub duplicates: u64,
}

/// A heartbeat in its stored form, owned so it can travel to the writer.
struct StoredHeartbeat {
    id: String,
    header: String,
    viewers: Arc<ViewerList>,
}

/// What one caller asked the writer for.
enum Work {
    /// Heartbeats of one request: all of them or none.
    Heartbeats(Vec<StoredHeartbeat>),
    /// One E2 message.
    GameState { dedup_key: String, header: String, received_at: i64 },
    /// Rows of one source without viewers (an EventSub notification's
    /// entitlements, link events): all of them or none.
    Rows { source: &'static str, rows: Vec<(String, String)> },
    /// Drop what the engine's checkpoint at `0` has passed.
    Prune(i64),
}

struct Job {
    work: Work,
    reply: oneshot::Sender<Result<InsertOutcome, StoreError>>,
}

/// The handle callers send inbox writes through.
#[derive(Debug)]
pub(super) struct InboxWriter {
    queue: mpsc::Sender<Job>,
}

impl InboxWriter {
    /// Starts the writer task on `pool` (whose connections the task alone
    /// writes the inbox with). `shared` is the notification payload when
    /// other hosts write the same database (PostgreSQL).
    pub(super) fn start(pool: AnyPool, signals: Arc<Signals>, shared: Option<String>) -> InboxWriter {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(pool, signals, jobs, shared));
        InboxWriter { queue }
    }

    async fn submit(&self, work: Work) -> Result<InsertOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { work, reply }).await.map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn write_loop(pool: AnyPool, signals: Arc<Signals>, mut jobs: mpsc::Receiver<Job>, shared: Option<String>) {
    let mut next = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut bytes = first.work.bytes();
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            let Ok(job) = jobs.try_recv() else { break };
            let more = job.work.bytes();
            if bytes + more > MAX_GROUP_BYTES {
                next = Some(job);
                break;
            }
            bytes += more;
            group.push(job);
        }
        // A prune commits on its own: it never delays or fails an acknowledgement's group.
        let (prunes, inserts): (Vec<Job>, Vec<Job>) = group.into_iter().partition(|j| matches!(j.work, Work::Prune(_)));
        if !inserts.is_empty() {
            let started = std::time::Instant::now();
            let result = commit(&pool, &inserts, shared.as_deref()).await;
            metrics::histogram!("drops_inbox_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("drops_inbox_commit_jobs").record(inserts.len() as f64);
            answer(inserts, result, &signals);
        }
        for job in prunes {
            let Work::Prune(to) = job.work else { continue };
            let result = prune(&pool, to).await.map(|()| vec![InsertOutcome::default()]);
            answer(vec![job], result, &signals);
        }
    }
}

/// Tells each job of a group how it went.
fn answer(group: Vec<Job>, result: Result<Vec<InsertOutcome>, StoreError>, signals: &Signals) {
    match result {
        Ok(outcomes) => {
            if outcomes.iter().any(|o| o.accepted > 0) {
                signals.inbox_grew();
            }
            for (job, outcome) in group.into_iter().zip(outcomes) {
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            // Nothing of the group was stored: each caller answers 503 and Twitch retries.
            let shared = Arc::new(e);
            for job in group {
                let _ = job.reply.send(Err(StoreError::Shared(shared.clone())));
            }
        }
    }
}

/// Events behind the checkpoint are never read again; their ids stay for
/// deduplication. Each broadcaster's latest heartbeat keeps its viewers (who
/// watches now). Game-state messages live on in the checkpointed state and
/// are never resent.
async fn prune(pool: &AnyPool, to: i64) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE inbox SET viewers = NULL WHERE viewers IS NOT NULL AND seq <= $1 \
         AND seq NOT IN (SELECT inbox_seq FROM watchers)",
    )
    .bind(to)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM inbox WHERE source = 'e2' AND seq <= $1").bind(to).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

impl Work {
    /// Bytes the job stores.
    fn bytes(&self) -> usize {
        match self {
            Work::Heartbeats(heartbeats) => {
                heartbeats.iter().map(|hb| hb.id.len() + hb.header.len() + hb.viewers.joined().len()).sum()
            }
            Work::GameState { dedup_key, header, .. } => dedup_key.len() + header.len(),
            Work::Rows { rows, .. } => rows.iter().map(|(key, header)| key.len() + header.len()).sum(),
            Work::Prune(_) => 0,
        }
    }
}

/// One inbox row to insert.
struct NewRow<'a> {
    source: &'static str,
    dedup_key: &'a str,
    header: &'a str,
    viewers: Option<&'a [u8]>,
    received_at: i64,
}

/// Stores a group of jobs atomically: on a database of its own, as one
/// statement when the rows fit in one (autocommit: one round trip to the
/// database and one fsync), otherwise in one transaction; on a shared one,
/// in a transaction ordered by [`INBOX_ORDER_LOCK`] that notifies the other
/// hosts as it commits.
async fn commit(pool: &AnyPool, group: &[Job], shared: Option<&str>) -> Result<Vec<InsertOutcome>, StoreError> {
    let now = now_ms();
    let mut rows = Vec::new();
    for job in group {
        match &job.work {
            Work::Heartbeats(heartbeats) => rows.extend(heartbeats.iter().map(|hb| NewRow {
                source: "vhs",
                dedup_key: &hb.id,
                header: &hb.header,
                viewers: Some(hb.viewers.joined()),
                received_at: now,
            })),
            Work::GameState { dedup_key, header, received_at } => {
                rows.push(NewRow { source: "e2", dedup_key, header, viewers: None, received_at: *received_at })
            }
            Work::Rows { source, rows: new } => rows.extend(new.iter().map(|(dedup_key, header)| NewRow {
                source,
                dedup_key,
                header,
                viewers: None,
                received_at: now,
            })),
            Work::Prune(_) => {}
        }
    }
    let mut inserted = HashSet::new();
    if let Some(payload) = shared {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1), pg_notify($2, $3)")
            .bind(INBOX_ORDER_LOCK)
            .bind(super::notify::INBOX)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            inserted.extend(insert(&mut *tx, chunk).await?);
        }
        tx.commit().await?;
    } else if rows.len() <= ROWS_PER_STATEMENT {
        if !rows.is_empty() {
            inserted = insert(pool, &rows).await?;
        }
    } else {
        let mut tx = pool.begin().await?;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            inserted.extend(insert(&mut *tx, chunk).await?);
        }
        tx.commit().await?;
    }
    // Each stored key is credited to the first job that sent it; a second
    // sender in the same group (a retry racing its original) sees a duplicate.
    let outcomes = group
        .iter()
        .map(|job| {
            let mut outcome = InsertOutcome::default();
            let mut credit = |key: &str| {
                if inserted.remove(key) {
                    outcome.accepted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            };
            match &job.work {
                Work::Heartbeats(heartbeats) => heartbeats.iter().for_each(|hb| credit(&hb.id)),
                Work::GameState { dedup_key, .. } => credit(dedup_key),
                Work::Rows { rows, .. } => rows.iter().for_each(|(key, _)| credit(key)),
                Work::Prune(_) => {}
            }
            outcome
        })
        .collect();
    Ok(outcomes)
}

/// Inserts rows in one statement; returns the keys that were new.
async fn insert<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Any>,
    rows: &[NewRow<'_>],
) -> Result<HashSet<String>, StoreError> {
    let sql = format!(
        "INSERT INTO inbox (source, dedup_key, header, viewers, received_at) VALUES {} \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING dedup_key",
        values_placeholders(rows.len(), 5)
    );
    let mut query = sqlx::query_scalar::<_, String>(&sql);
    for row in rows {
        query = query.bind(row.source).bind(row.dedup_key).bind(row.header).bind(row.viewers).bind(row.received_at);
    }
    Ok(query.fetch_all(db).await?.into_iter().collect())
}

impl Store {
    /// Stores heartbeats in one transaction: all of them or none.
    pub async fn insert_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<InsertOutcome, StoreError> {
        let stored = heartbeats
            .iter()
            .map(|hb| {
                let (header, _) = encode_heartbeat(hb)?;
                Ok(StoredHeartbeat { id: hb.id.0.clone(), header, viewers: hb.viewer_list.clone() })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.inbox.submit(Work::Heartbeats(stored)).await
    }

    /// Stores one accepted E2 message. Its id is unique per message, so a
    /// client's resend after a reconnect is a new event; applying the same
    /// state again changes nothing, which is what makes it harmless.
    pub async fn insert_game_state(&self, event: &GameStateEvent) -> Result<(), StoreError> {
        let work = Work::GameState {
            dedup_key: format!("e2:{}", event.id),
            header: encode_game_state(event)?,
            received_at: event.received_at_ms,
        };
        self.inbox.submit(work).await.map(|_| ())
    }

    /// Stores the entitlements of one EventSub notification in one
    /// transaction, deduplicated by entitlement id (Twitch delivers at least once).
    pub async fn insert_entitlements(&self, entitlements: &[Entitlement]) -> Result<InsertOutcome, StoreError> {
        let rows = entitlements
            .iter()
            .map(|e| Ok((format!("ent:{}", e.entitlement_id), encode_entitlement(e)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.inbox.submit(Work::Rows { source: SOURCE_EVENTSUB, rows }).await
    }

    /// Stores link events under their keys (see [`Store::announce_links`]);
    /// a key stored before is a duplicate.
    pub async fn insert_linked(&self, events: &[(String, Linked)]) -> Result<InsertOutcome, StoreError> {
        let rows = events
            .iter()
            .map(|(key, event)| {
                let header = serde_json::to_string(event).map_err(|e| StoreError::Encode(e.to_string()))?;
                Ok((key.clone(), header))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.inbox.submit(Work::Rows { source: SOURCE_LINKS, rows }).await
    }

    /// Drops the viewer lists and game-state messages the checkpoint at `seq`
    /// has passed, once that checkpoint is committed.
    pub(super) async fn prune_inbox(&self, seq: i64) -> Result<(), StoreError> {
        self.inbox.submit(Work::Prune(seq)).await.map(|_| ())
    }

    /// The newest inbox sequence number (0: the inbox is empty).
    pub async fn inbox_head(&self) -> Result<i64, StoreError> {
        let head: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM inbox").fetch_one(&self.pool).await?;
        Ok(head.unwrap_or(0))
    }

    /// Up to `limit` events after `seq`, in order.
    pub async fn inbox_after(&self, seq: i64, limit: u32) -> Result<Vec<InboxEvent>, StoreError> {
        let rows: Vec<InboxRow> = sqlx::query_as(
            "SELECT seq, source, header, viewers, received_at FROM inbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        // Decoding a batch of large heartbeats takes milliseconds: not on an
        // executor thread, where it would hold up acknowledgements.
        tokio::task::spawn_blocking(move || rows.into_iter().map(InboxRow::decode).collect())
            .await
            .map_err(|e| StoreError::Encode(format!("decoding task failed: {e}")))?
    }
}

/// An inbox row as stored.
#[derive(sqlx::FromRow)]
struct InboxRow {
    seq: i64,
    source: String,
    header: String,
    viewers: Option<Vec<u8>>,
    received_at: i64,
}

impl InboxRow {
    fn decode(self) -> Result<InboxEvent, StoreError> {
        let seq = self.seq;
        let corrupt = |reason| StoreError::Corrupt { seq, reason };
        let event = if self.source == "e2" {
            Event::GameState(decode_game_state(&self.header).map_err(corrupt)?)
        } else if self.source == SOURCE_EVENTSUB {
            Event::Entitlement(Box::new(decode_entitlement(&self.header).map_err(corrupt)?))
        } else if self.source == SOURCE_LINKS {
            Event::Linked(Box::new(serde_json::from_str(&self.header).map_err(|e| corrupt(e.to_string()))?))
        } else {
            Event::Heartbeat(decode_heartbeat(&self.header, self.viewers.unwrap_or_default()).map_err(corrupt)?)
        };
        Ok(InboxEvent { seq, received_at_ms: self.received_at, event })
    }
}
