//! Watch-time segments: a campaign's viewers' progress stored column by
//! column in compressed blobs, so a checkpoint costs what changed in bytes
//! written in sequence, not an upsert per (campaign, viewer).
//!
//! A segment holds up to [`ROWS_PER_SEGMENT`] rows. A checkpoint writes the
//! rows that changed (a delta) or, when the stored log would otherwise grow
//! past twice the campaign's viewers, all of them (a base, after which the
//! older segments go): a restart reads at most twice the campaign's rows, and
//! each row is written at most twice per change on average. Segments are
//! written before the checkpoint that names them and committed by it, so a
//! crash or a host that lost its lease leaves only uncommitted segments,
//! which nothing reads and the next owner deletes.
//!
//! The format: one version byte, the encoded length (u32, little-endian),
//! then an LZ4 block of the columns as postcard (varints: lengths and minutes
//! take a byte or two each, and LZ4 folds the runs of equal masks and minutes
//! a heartbeat leaves behind).

use serde::{Deserialize, Serialize};

use super::{list_placeholders, Store, StoreError};

/// Rows per segment: one blob stays a few megabytes, and a huge campaign is
/// written (and read back) as a sequence of them.
pub const ROWS_PER_SEGMENT: usize = 1 << 20;

/// The current encoding's first byte.
const FORMAT_V1: u8 = 1;
/// Largest decoded segment accepted: a million rows of 255-byte ids and their
/// progress is under 300 MB; a larger length is a corrupt blob, not an allocation.
const MAX_DECODED: usize = 512 << 20;

/// Watch-time rows of one campaign, column by column.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchTimeColumns {
    /// The viewer ids, end to end.
    ids: String,
    /// Each id's length in bytes.
    id_lens: Vec<u32>,
    minutes: Vec<u32>,
    last_minute: Vec<u32>,
    recent_mask: Vec<u64>,
}

/// One row of [`WatchTimeColumns`]: (viewer id, minutes, last minute, recent mask).
pub type WatchTimeColumnRow<'a> = (&'a str, u32, u32, u64);

impl WatchTimeColumns {
    /// Room for `rows` rows.
    pub fn with_capacity(rows: usize) -> WatchTimeColumns {
        WatchTimeColumns {
            ids: String::with_capacity(rows * 10),
            id_lens: Vec::with_capacity(rows),
            minutes: Vec::with_capacity(rows),
            last_minute: Vec::with_capacity(rows),
            recent_mask: Vec::with_capacity(rows),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, viewer_id: &str, minutes: u32, last_minute: u32, recent_mask: u64) {
        self.ids.push_str(viewer_id);
        self.id_lens.push(viewer_id.len() as u32);
        self.minutes.push(minutes);
        self.last_minute.push(last_minute);
        self.recent_mask.push(recent_mask);
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.id_lens.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.id_lens.is_empty()
    }

    /// The rows in order.
    pub fn rows(&self) -> impl Iterator<Item = WatchTimeColumnRow<'_>> + '_ {
        let mut start = 0usize;
        self.id_lens.iter().enumerate().map(move |(i, &len)| {
            let end = start + len as usize;
            let id = self.ids.get(start..end).unwrap_or_default();
            start = end;
            (id, self.minutes[i], self.last_minute[i], self.recent_mask[i])
        })
    }

    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let raw = postcard::to_stdvec(self).map_err(|e| StoreError::Encode(format!("watch-time segment: {e}")))?;
        let len = u32::try_from(raw.len())
            .ok()
            .filter(|&n| n as usize <= MAX_DECODED)
            .ok_or_else(|| StoreError::Encode(format!("watch-time segment of {} bytes", raw.len())))?;
        let mut out = Vec::with_capacity(5 + raw.len() / 2);
        out.push(FORMAT_V1);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&lz4_flex::block::compress(&raw));
        Ok(out)
    }

    /// Reads the stored form back; `segment` names it in the error.
    pub fn decode(data: &[u8], segment: i64) -> Result<WatchTimeColumns, StoreError> {
        let corrupt =
            |reason: String| StoreError::Corrupt { seq: segment, reason: format!("watch-time segment: {reason}") };
        let (&version, rest) = data.split_first().ok_or_else(|| corrupt("empty".into()))?;
        if version != FORMAT_V1 {
            return Err(corrupt(format!("format {version}, this host reads {FORMAT_V1}")));
        }
        let (len, block) = rest.split_at_checked(4).ok_or_else(|| corrupt("truncated".into()))?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_DECODED {
            return Err(corrupt(format!("claims {len} bytes")));
        }
        let raw = lz4_flex::block::decompress(block, len).map_err(|e| corrupt(e.to_string()))?;
        let columns: WatchTimeColumns = postcard::from_bytes(&raw).map_err(|e| corrupt(e.to_string()))?;
        let n = columns.id_lens.len();
        let ids_len: u64 = columns.id_lens.iter().map(|&l| u64::from(l)).sum();
        let consistent =
            [columns.minutes.len(), columns.last_minute.len(), columns.recent_mask.len()].iter().all(|&l| l == n)
                && ids_len == columns.ids.len() as u64
                && columns
                    .id_lens
                    .iter()
                    .scan(0usize, |end, &len| {
                        *end += len as usize;
                        Some(*end)
                    })
                    .all(|end| columns.ids.is_char_boundary(end));
        if !consistent {
            return Err(corrupt("columns of different lengths".into()));
        }
        Ok(columns)
    }
}

/// A committed segment, named for a restore to read.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SegmentRef {
    pub id: i64,
    pub campaign_id: String,
    pub row_count: i64,
}

/// What the console shows of a campaign's viewers, as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignViewers {
    pub campaign_id: String,
    /// Viewers with counted watch-time.
    pub viewers: u64,
    /// Their minutes added up.
    pub minutes: u64,
    /// The longest watchers, longest first: (viewer id, minutes).
    pub top: Vec<(String, u32)>,
}

impl Store {
    /// Writes one segment of a campaign's watch-time, not yet part of any
    /// checkpoint; returns its id for the checkpoint to commit.
    pub async fn write_segment(&self, campaign_id: &str, rows: usize, data: &[u8]) -> Result<i64, StoreError> {
        // Held only for this one insert: a huge checkpoint is many short
        // writes, so lease renewals and grants get the lock in between.
        let _guard = self.write_lock().await;
        Ok(sqlx::query_scalar(
            "INSERT INTO watch_time_segments (campaign_id, row_count, committed, data) VALUES ($1, $2, 0, $3) RETURNING id",
        )
        .bind(campaign_id)
        .bind(rows as i64)
        .bind(data)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The committed segments of the campaigns `owns` accepts, oldest first;
    /// their uncommitted ones (a crash, or a host that lost the lease, wrote
    /// them) are deleted.
    pub(super) async fn owned_segments(
        &self,
        owns: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<SegmentRef>, StoreError> {
        let all: Vec<(i64, String, i64, i64)> =
            sqlx::query_as("SELECT id, campaign_id, row_count, committed FROM watch_time_segments ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let (committed, orphans): (Vec<_>, Vec<_>) =
            all.into_iter().filter(|(_, campaign, ..)| owns(campaign)).partition(|(.., committed)| *committed != 0);
        let orphans: Vec<i64> = orphans.into_iter().map(|(id, ..)| id).collect();
        if !orphans.is_empty() {
            let _guard = self.write_lock().await;
            for chunk in orphans.chunks(500) {
                let sql =
                    format!("DELETE FROM watch_time_segments WHERE id IN ({})", list_placeholders(1, chunk.len()));
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                q.execute(&self.pool).await?;
            }
            tracing::info!(segments = orphans.len(), "deleted watch-time segments no checkpoint committed");
        }
        Ok(committed
            .into_iter()
            .map(|(id, campaign_id, row_count, _)| SegmentRef { id, campaign_id, row_count })
            .collect())
    }

    /// Reads and decodes one segment (off the async threads: a segment
    /// decodes a million rows).
    pub async fn read_segment(&self, id: i64) -> Result<WatchTimeColumns, StoreError> {
        let data: Vec<u8> = sqlx::query_scalar("SELECT data FROM watch_time_segments WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        tokio::task::spawn_blocking(move || WatchTimeColumns::decode(&data, id))
            .await
            .map_err(|e| StoreError::Invariant(format!("decoding a watch-time segment: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_through_their_stored_form() {
        let mut columns = WatchTimeColumns::default();
        for i in 0..10_000u32 {
            columns.push(&format!("viewer-{i}"), i % 90, 29_000_000 + i % 3, u64::MAX >> (i % 64));
        }
        columns.push("é✓", 1, 2, 3);
        let data = columns.encode().unwrap();
        assert!(data.len() < 10_000 * 10, "compressed: {} bytes", data.len());
        let back = WatchTimeColumns::decode(&data, 7).unwrap();
        assert_eq!(back, columns);
        assert_eq!(back.rows().last(), Some(("é✓", 1, 2, 3)));
        assert_eq!(back.rows().nth(5), Some(("viewer-5", 5, 29_000_002, u64::MAX >> 5)));
    }

    #[test]
    fn corrupt_segments_are_refused_naming_the_segment() {
        let mut columns = WatchTimeColumns::default();
        columns.push("v1", 1, 2, 3);
        let good = columns.encode().unwrap();
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        let mut huge = good.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let truncated = &good[..good.len() - 2];
        for bad in [&[][..], &wrong_version, &huge, truncated, &good[..3]] {
            let err = WatchTimeColumns::decode(bad, 42).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { seq: 42, .. }), "{err}");
        }
    }
}
