//! Delivery of what the engine granted: manifest files uploaded to Twitch
//! (`upload`, through `twitch`), each under the id it was created with, so a
//! retry or a restart can only ever re-send the same users under the same id;
//! and every grant told to the studio's own entitlement systems (`sink`, with
//! `webhook`, `nats`), in grant order, each under an idempotency key of its own.

pub mod eventsub;
pub mod fulfil;
pub mod items;
pub mod nats;
pub mod sink;
pub mod twitch;
pub mod upload;
pub mod webhook;

pub use sink::Sink;
pub use twitch::{TwitchClient, UploadError};
pub use upload::Uploader;

/// Most bytes read of any answer that is parsed (Twitch's): a page of
/// 1,000 Drops entitlements is about 250 KB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// Most bytes of an answer quoted in an error.
const QUOTED_BYTES: usize = 300;

/// Reads an answer's body, at most [`MAX_ANSWER_BYTES`].
pub(crate) async fn read_bounded(mut answer: reqwest::Response) -> Result<Vec<u8>, UploadError> {
    let mut body = Vec::new();
    while let Some(chunk) =
        answer.chunk().await.map_err(|e| UploadError::transient(format!("reading the answer: {e}")))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(UploadError::transient(format!("an answer was longer than {MAX_ANSWER_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of an answer we only quote (an error's body): at most
/// [`QUOTED_BYTES`] are kept and the rest is not read, so a long answer is
/// never a failure of its own and never fills memory.
pub(crate) async fn read_prefix(mut answer: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() <= QUOTED_BYTES {
        match answer.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(QUOTED_BYTES + 1 - body.len())]),
            _ => break,
        }
    }
    body
}

/// The start of an answer, fit for a log line and the manifest's last error.
pub(crate) fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_BYTES)]);
    let text: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if body.len() > QUOTED_BYTES {
        format!("{}…", text.trim())
    } else {
        text.trim().to_string()
    }
}

/// A request's error without its URL (a presigned URL carries credentials).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Exponential backoff with jitter, shared by the uploader and the sinks.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_secs: u64,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row: `initial_ms`
    /// doubling per failure, jittered in its upper half, capped at `max_secs`.
    pub fn wait(&self, failures: u32) -> std::time::Duration {
        let base = self.initial_ms.saturating_mul(1u64 << failures.clamp(1, 31).saturating_sub(1).min(30));
        let capped = base.min(self.max_secs.saturating_mul(1000));
        std::time::Duration::from_millis(capped / 2 + fastrand::u64(0..=capped / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let b = Backoff { initial_ms: 1000, max_secs: 60 };
        for _ in 0..100 {
            assert!((Duration::from_millis(500)..=Duration::from_millis(1000)).contains(&b.wait(1)));
            assert!((Duration::from_millis(4000)..=Duration::from_millis(8000)).contains(&b.wait(4)));
            assert!((Duration::from_secs(30)..=Duration::from_secs(60)).contains(&b.wait(1_000)));
        }
    }

    #[test]
    fn quotes_are_short_and_single_line() {
        assert_eq!(quote(b"<Error>\n<Code>AccessDenied</Code></Error>"), "<Error> <Code>AccessDenied</Code></Error>");
        assert_eq!(quote(&[b'a'; 1000]).chars().count(), QUOTED_BYTES + 1);
        assert_eq!(quote(&[0xff, 0xfe]), "\u{fffd}\u{fffd}");
    }
}
