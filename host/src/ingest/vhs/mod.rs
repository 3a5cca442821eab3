//! `POST /vhs` and `POST /vhs/{token}`: authenticate, parse, store, acknowledge.
//!
//! [`auth`] checks the path token or the signature, [`body`] streams and
//! parses the body; this module ties them to the store.

pub mod auth;
pub mod body;

use std::io;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::Json;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::io::{StreamReader, SyncIoBridge};

use auth::SignatureHeaders;
use body::BodyError;

use crate::config::VhsSettings;
use crate::domain::Heartbeat;
use crate::health::Liveness;
use crate::http::ApiError;
use crate::store::Store;
use crate::telemetry::live::{self, Source};

/// What the VHS handlers need.
pub struct VhsIngest {
    pub settings: VhsSettings,
    pub store: Arc<Store>,
    pub liveness: Arc<Liveness>,
    /// Bodies being read; each holds a thread of the blocking pool while it
    /// streams, so their number is bounded to leave threads for the engine.
    /// A slot is held by the parse task itself, until it has really ended.
    bodies: Arc<Semaphore>,
    /// KiB of signed bodies buffered before their signature is checked.
    signed_kib: Semaphore,
}

impl VhsIngest {
    /// The VHS ingest over `store`.
    pub fn new(settings: VhsSettings, store: Arc<Store>, liveness: Arc<Liveness>) -> VhsIngest {
        let bodies = Arc::new(Semaphore::new(settings.max_bodies_in_flight.max(1)));
        let kib = (settings.max_signed_bytes_in_flight / 1024).clamp(1, Semaphore::MAX_PERMITS as u64) as usize;
        VhsIngest { settings, store, liveness, bodies, signed_kib: Semaphore::new(kib) }
    }
}

/// The answer Twitch gets once the heartbeats are durably stored.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: u64,
    pub duplicates: u64,
}

/// `POST /vhs`.
pub async fn post(
    State(vhs): State<Arc<VhsIngest>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    ingest(&vhs, None, headers, body).await
}

/// `POST /vhs/{token}`.
pub async fn post_with_token(
    State(vhs): State<Arc<VhsIngest>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    ingest(&vhs, Some(token), headers, body).await
}

async fn ingest(
    vhs: &VhsIngest,
    token: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let started = std::time::Instant::now();
    let result = ingest_inner(vhs, token, &headers, body).await;
    let outcome = match &result {
        Ok(Json(accepted)) => {
            live::acknowledged(Source::Vhs, accepted.accepted, accepted.duplicates, started.elapsed());
            "accepted"
        }
        Err(e) => {
            live::refused(Source::Vhs, e.outcome());
            e.outcome()
        }
    };
    metrics::counter!("drops_vhs_requests_total", "outcome" => outcome).increment(1);
    result
}

async fn ingest_inner(
    vhs: &VhsIngest,
    token: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Json<Accepted>, ApiError> {
    let started = std::time::Instant::now();
    if let Some(reason) = vhs.liveness.stopped() {
        return Err(ApiError::not_serving(reason));
    }
    let settings = &vhs.settings;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signature = SignatureHeaders {
        id: header("drops-message-id"),
        timestamp: header("drops-message-timestamp"),
        signature: header("drops-message-signature"),
    };
    let now = OffsetDateTime::now_utc();
    let pending =
        auth::check(settings.token.as_deref(), token.as_deref(), &signature, now).map_err(ApiError::unauthorized)?;

    let Ok(reading) = vhs.bodies.clone().try_acquire_owned() else {
        metrics::counter!("drops_vhs_busy_total").increment(1);
        return Err(ApiError::busy(
            format!(
                "more than {} bodies in flight (vhs.max_bodies_in_flight); retry shortly",
                settings.max_bodies_in_flight
            ),
            1,
        ));
    };
    let limit = settings.max_body_bytes;
    let content_length = header("content-length").and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = content_length {
        if len > limit {
            // Read (and drop) a little so the sender gets this answer rather than a broken pipe.
            let mut stream = body.into_data_stream();
            let mut drained = 0u64;
            while let Some(Ok(chunk)) = stream.next().await {
                drained += chunk.len() as u64;
                if drained > body::DRAIN_BYTES {
                    break;
                }
            }
            return Err(ApiError::too_large(limit));
        }
    }
    let gzip = match header(header::CONTENT_ENCODING.as_str()).map(str::trim) {
        None | Some("identity") => false,
        Some(e) if e.eq_ignore_ascii_case("gzip") => true,
        Some(other) => return Err(ApiError::unsupported_encoding(other)),
    };

    // The request deadline drops this handler, but not a blocking parse task:
    // the body stream itself ends at the deadline, so the task ends too.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(settings.request_timeout_secs);
    let stream = body.into_data_stream().take_until(Box::pin(tokio::time::sleep_until(deadline)));
    let heartbeats = match pending {
        // Signed: nothing of an unauthenticated body is decompressed or parsed.
        // The raw bytes are read and checked first, within a budget of bytes
        // buffered at once (so it needs a Content-Length).
        Some(pending) => {
            let Some(len) = content_length else { return Err(ApiError::length_required()) };
            let kib = u32::try_from(len.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
            let Ok(_buffered) = vhs.signed_kib.try_acquire_many(kib) else {
                metrics::counter!("drops_vhs_busy_total").increment(1);
                return Err(ApiError::busy("too many signed bytes in flight (vhs.max_signed_bytes_in_flight)", 1));
            };
            let raw = read_raw(stream, len).await?;
            pending.verify(&raw).map_err(ApiError::unauthorized)?;
            if !gzip && len <= INLINE_PARSE_BYTES {
                parse_inline(reading, &raw, limit)?
            } else {
                parse_blocking(reading, move || body::parse(&raw[..], gzip, limit)).await?
            }
        }
        // Small and plain (the common case: one channel's report): read whole
        // and parsed here, which spares two thread hand-offs per request.
        None if !gzip && content_length.is_some_and(|len| len <= INLINE_PARSE_BYTES) => {
            let raw = read_raw(stream, content_length.unwrap_or(0)).await?;
            parse_inline(reading, &raw, limit)?
        }
        // Unsigned (no secret, or the path token already matched): parsed as it streams.
        None => {
            let reader = SyncIoBridge::new(StreamReader::new(stream.map_err(io::Error::other)));
            parse_blocking(reading, move || body::parse(reader, gzip, limit)).await?
        }
    };
    check_times(&heartbeats, now, settings.max_future_secs, settings.max_age_secs)?;
    metrics::histogram!("drops_vhs_read_seconds").record(started.elapsed().as_secs_f64());

    let storing = std::time::Instant::now();
    let outcome = vhs.store.insert_heartbeats(&heartbeats).await?;
    metrics::histogram!("drops_vhs_store_seconds").record(storing.elapsed().as_secs_f64());
    metrics::counter!("drops_vhs_heartbeats_total", "outcome" => "accepted").increment(outcome.accepted);
    metrics::counter!("drops_vhs_heartbeats_total", "outcome" => "duplicate").increment(outcome.duplicates);
    let viewers: usize = heartbeats.iter().map(|h| h.viewer_list.len()).sum();
    tracing::debug!(accepted = outcome.accepted, duplicates = outcome.duplicates, viewers, "vhs stored");
    Ok(Json(Accepted { accepted: outcome.accepted, duplicates: outcome.duplicates }))
}

/// Reads a whole body of the `limit` bytes it announced (already checked
/// against `vhs.max_body_bytes` and the signed-bytes budget), refusing more.
async fn read_raw(
    mut stream: impl futures_util::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
    limit: u64,
) -> Result<Vec<u8>, ApiError> {
    let mut raw = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("", format!("the body could not be read: {e}")))?;
        if raw.len() as u64 + chunk.len() as u64 > limit {
            return Err(ApiError::too_large(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

/// Bodies up to this size are parsed on the executor thread: about 100 µs of work.
const INLINE_PARSE_BYTES: u64 = 64 << 10;

/// Parses a small body in place.
fn parse_inline(reading: OwnedSemaphorePermit, raw: &[u8], limit: u64) -> Result<Vec<Heartbeat>, ApiError> {
    let parsed = body::parse(raw, false, limit).map_err(parse_error);
    drop(reading);
    parsed
}

fn parse_error(e: BodyError) -> ApiError {
    match e {
        BodyError::TooLarge { limit } => ApiError::too_large(limit),
        BodyError::Invalid { field, message } => ApiError::bad_request(field, message),
    }
}

/// Parses off the async executor (a large body takes a while); the task holds
/// the body slot `reading` until it ends, even if the request was given up.
async fn parse_blocking(
    reading: OwnedSemaphorePermit,
    parse: impl FnOnce() -> Result<Vec<Heartbeat>, BodyError> + Send + 'static,
) -> Result<Vec<Heartbeat>, ApiError> {
    let parsed = tokio::task::spawn_blocking(move || {
        let parsed = parse();
        drop(reading);
        parsed
    })
    .await
    .map_err(|e| ApiError::internal(format!("parser task failed: {e}")))?;
    parsed.map_err(parse_error)
}

/// Refuses heartbeats from too far in the future (and too old, when configured).
fn check_times(
    heartbeats: &[Heartbeat],
    now: OffsetDateTime,
    max_future: u64,
    max_age: Option<u64>,
) -> Result<(), ApiError> {
    let many = heartbeats.len() > 1;
    for (i, hb) in heartbeats.iter().enumerate() {
        let field = if many { format!("[{i}].time") } else { "time".to_string() };
        let ahead = (hb.time.0 - now).whole_seconds();
        if ahead > max_future as i64 {
            return Err(ApiError::bad_request(
                field,
                format!("{ahead} s ahead of the host's clock (at most {max_future} s)"),
            ));
        }
        if let Some(max_age) = max_age {
            if -ahead > max_age as i64 {
                return Err(ApiError::bad_request(field, format!("{} s old (at most {max_age} s)", -ahead)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[tokio::test]
    async fn nothing_is_acknowledged_once_the_engine_has_stopped() {
        let (_dir, store) = crate::store::temp_sqlite().await;
        let vhs = Arc::new(VhsIngest::new(VhsSettings::default(), Arc::new(store), Arc::new(Liveness::default())));
        let body = r#"{"id":"h","broadcaster":"b","game":"G","time":"2026-11-23T10:00:00Z","viewer_list":["v"]}"#;
        let answer = post(State(vhs.clone()), HeaderMap::new(), Body::from(body)).await;
        assert_eq!(answer.map(|a| a.accepted).map_err(|e| e.status), Ok(1));
        vhs.liveness.stop("the engine stopped: test");
        let answer = post(State(vhs.clone()), HeaderMap::new(), Body::from(body.replace("\"h\"", "\"h2\""))).await;
        assert_eq!(answer.map(|a| a.accepted).map_err(|e| e.status), Err(StatusCode::SERVICE_UNAVAILABLE));
    }
}
