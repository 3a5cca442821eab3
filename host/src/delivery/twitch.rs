//! Twitch's side of a manifest upload, as the VHS and Drops guide describes
//! it ("Notify the viewers about earned Rewards"): an app access token by the
//! client-credentials flow, an upload URL from
//! `POST /helix/entitlements/upload?manifest_id=..&type=bulk_drops_grant`, and
//! a PUT of the file to that URL.
//!
//! Every answer is bounded: Twitch's bodies are read up to
//! [`super::MAX_ANSWER_BYTES`] and every request has a deadline.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{quote, read_bounded, read_prefix, without_url};
use crate::config::TwitchSettings;

/// A token is renewed this long before Twitch says it expires.
const RENEW_MARGIN: Duration = Duration::from_secs(300);

/// Why an upload did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Worth trying again later (a timeout, a 5xx, a 429); `wait` is what
    /// Twitch asked for (`Retry-After`, `Ratelimit-Reset`), if anything.
    #[error("{reason}")]
    Transient { reason: String, wait: Option<Duration> },
    /// Twitch refused it in a way that will not change by itself (400, a
    /// 403 for a wrong client).
    #[error("{0}")]
    Permanent(String),
    /// The manifest's file is gone or unreadable: it is rebuilt from its grants.
    #[error("{0}")]
    MissingFile(String),
}

impl UploadError {
    pub(crate) fn transient(reason: impl Into<String>) -> UploadError {
        UploadError::Transient { reason: reason.into(), wait: None }
    }
}

/// An app access token and when to stop using it.
struct AppToken {
    value: String,
    renew_at: Instant,
}

/// Talks to Twitch for one application (its client id and secret).
pub struct TwitchClient {
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
    settings: TwitchSettings,
    token: Mutex<Option<AppToken>>,
    /// Until when Helix asked us to wait: its points bucket ran out
    /// (`Ratelimit-Remaining: 0`, or a 429) and refills at `Ratelimit-Reset`.
    rate_limited_until: std::sync::Mutex<Option<Instant>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct UploadAnswer {
    data: Vec<UploadUrl>,
}

#[derive(Deserialize)]
struct UploadUrl {
    url: String,
}

impl TwitchClient {
    /// A client for the configured application, or None without credentials.
    pub fn new(settings: &TwitchSettings) -> Result<Option<TwitchClient>, reqwest::Error> {
        let Some((client_id, client_secret)) = settings.credentials() else { return Ok(None) };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(settings.request_timeout_secs))
            // A presigned URL that redirected would not be Twitch's any more.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(TwitchClient {
            http,
            client_id: client_id.trim().to_string(),
            client_secret: client_secret.to_string(),
            settings: settings.clone(),
            token: Mutex::new(None),
            rate_limited_until: std::sync::Mutex::new(None),
        }))
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.settings.request_timeout_secs)
    }

    /// Uploads one manifest file: an upload URL for `manifest_id`, then the
    /// file PUT to it; a URL that expired before the PUT is replaced once.
    pub async fn upload(&self, manifest_id: &str, file: &Path) -> Result<(), UploadError> {
        if let Err(e) = tokio::fs::metadata(file).await {
            return Err(UploadError::MissingFile(format!("reading {}: {e}", file.display())));
        }
        for _ in 0..2 {
            let url = self.upload_url(manifest_id).await?;
            match self.put(&url, file).await? {
                Put::Done => return Ok(()),
                Put::Expired(why) => {
                    tracing::warn!(manifest = manifest_id, "upload URL refused ({why}); asking for a new one")
                }
            }
        }
        Err(UploadError::transient("the upload URL was refused twice (403); trying again later"))
    }

    /// An app access token, cached until shortly before it expires.
    async fn token(&self) -> Result<String, UploadError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        let url = format!("{}/oauth2/token", self.settings.auth_base_url.trim_end_matches('/'));
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let answer = self.http.post(&url).form(&form).timeout(self.request_timeout()).send().await;
        let answer = answer.map_err(|e| transport("token request", &e))?;
        let status = answer.status();
        if !status.is_success() {
            let headers = answer.headers().clone();
            let body = read_prefix(answer).await;
            // Refused credentials concern every manifest, not this one: retried (with the
            // backoff growing to its cap) rather than failing each manifest in turn.
            metrics::counter!("drops_twitch_token_refusals_total").increment(1);
            tracing::error!(status = status.as_u16(), "Twitch refused the app credentials: {}", quote(&body));
            let error = classify("token request", status, &headers, &body, "Twitch refused the app credentials");
            return Err(match error {
                UploadError::Permanent(reason) => UploadError::transient(reason),
                transient => transient,
            });
        }
        let body = read_bounded(answer).await?;
        let token: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| UploadError::transient(format!("token request: unreadable answer: {e}")))?;
        if token.access_token.is_empty() || token.access_token.len() > 4096 {
            return Err(UploadError::transient("token request: the answer's access_token is empty or too long"));
        }
        let life = Duration::from_secs(token.expires_in.min(365 * 86_400));
        let renew_at = Instant::now() + life.saturating_sub(RENEW_MARGIN).max(life / 2);
        metrics::counter!("drops_twitch_tokens_total").increment(1);
        tracing::info!(expires_in_secs = token.expires_in, "Twitch app access token obtained");
        *slot = Some(AppToken { value: token.access_token.clone(), renew_at });
        Ok(token.access_token)
    }

    /// Drops the cached token if it is still `value` (Twitch answered 401 to it).
    async fn forget_token(&self, value: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.value == value) {
            *slot = None;
        }
    }

    /// Asks Helix for a presigned upload URL for `manifest_id`; a 401 renews the token once.
    async fn upload_url(&self, manifest_id: &str) -> Result<String, UploadError> {
        let query = [("manifest_id", manifest_id), ("type", "bulk_drops_grant")];
        let what = "upload URL request";
        let (status, headers, body) =
            self.helix(reqwest::Method::POST, "/helix/entitlements/upload", &query, None, what).await?;
        if !status.is_success() {
            return Err(classify(what, status, &headers, &body, "Twitch refused the upload"));
        }
        // A real JSON parser turns the answer's `\u0026` escapes into `&`.
        let answer: UploadAnswer = serde_json::from_slice(&body)
            .map_err(|e| UploadError::transient(format!("upload URL request: unreadable answer: {e}")))?;
        let url = answer
            .data
            .into_iter()
            .next()
            .map(|d| d.url)
            .ok_or_else(|| UploadError::transient("upload URL request: the answer holds no URL"))?;
        // User ids travel in the file: https only, unless the API itself is plain http (a local stand-in).
        match reqwest::Url::parse(&url) {
            Ok(u) if u.scheme() == "https" || (self.plain_http_allowed() && u.scheme() == "http") => Ok(url),
            // Not quoted: a presigned URL carries credentials.
            _ => Err(UploadError::transient("upload URL request: the answer's URL is not an https URL")),
        }
    }

    /// A Helix request under the app token (a 401 renews it once): the
    /// status and the body (bounded), or why there was no answer.
    pub(super) async fn helix(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        json: Option<&serde_json::Value>,
        what: &str,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), UploadError> {
        let url = format!("{}{path}", self.settings.api_base_url.trim_end_matches('/'));
        for renewed in [false, true] {
            let until = *self.rate_limited_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = until.filter(|u| *u > Instant::now()) {
                tracing::debug!(
                    wait_ms = (until - Instant::now()).as_millis() as u64,
                    "waiting for Helix's rate limit to reset"
                );
                tokio::time::sleep_until(until).await;
            }
            let token = self.token().await?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .query(query)
                .header("Client-ID", &self.client_id)
                .bearer_auth(&token)
                .timeout(self.request_timeout());
            if let Some(json) = json {
                request = request.json(json);
            }
            let answer = request.send().await.map_err(|e| transport(what, &e))?;
            let status = answer.status();
            let headers = answer.headers().clone();
            self.note_rate_limit(status, &headers);
            let body = if status.is_success() { read_bounded(answer).await? } else { read_prefix(answer).await };
            if status == StatusCode::UNAUTHORIZED {
                self.forget_token(&token).await;
                if !renewed {
                    tracing::info!("Twitch answered 401 to the app token; renewing it");
                    continue;
                }
            }
            return Ok((status, headers, body));
        }
        Err(UploadError::transient(format!("{what}: 401 after renewing the token")))
    }

    /// Whether callbacks may be plain http (the API itself is: a local stand-in).
    /// Remembers to wait for the reset when the points bucket is empty.
    fn note_rate_limit(&self, status: StatusCode, headers: &HeaderMap) {
        let empty = headers.get("ratelimit-remaining").and_then(|v| v.to_str().ok()).map(str::trim) == Some("0");
        if empty || status == StatusCode::TOO_MANY_REQUESTS {
            // At most a minute: a reset far away is a clock or a server gone wrong.
            let wait = asked_wait(headers).unwrap_or(Duration::from_secs(1)).min(Duration::from_secs(60));
            metrics::counter!("drops_twitch_rate_limited_total").increment(1);
            *self.rate_limited_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + wait);
        }
    }

    pub(super) fn plain_http_allowed(&self) -> bool {
        self.settings.api_base_url.starts_with("http://")
    }

    /// PUTs the file to a presigned URL, streamed from disk with its length.
    async fn put(&self, url: &str, file: &Path) -> Result<Put, UploadError> {
        let unreadable = |e: std::io::Error| UploadError::MissingFile(format!("reading {}: {e}", file.display()));
        let opened = tokio::fs::File::open(file).await.map_err(unreadable)?;
        let len = opened.metadata().await.map_err(unreadable)?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(opened, 256 << 10));
        let answer = self
            .http
            .put(url)
            // Presigned S3 URLs refuse chunked bodies: the length goes first.
            .header(CONTENT_LENGTH, len)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .timeout(Duration::from_secs(self.settings.upload_timeout_secs))
            .send()
            .await
            .map_err(|e| transport("file upload", &e))?;
        let status = answer.status();
        if status.is_success() {
            // Whatever the body says, 200 is the answer; it is not read.
            return Ok(Put::Done);
        }
        let headers = answer.headers().clone();
        let body = read_prefix(answer).await;
        if status == StatusCode::FORBIDDEN {
            // Presigned URLs live 900 s; S3 answers an expired one with 403 and an XML body.
            return Ok(Put::Expired(format!("HTTP 403: {}", quote(&body))));
        }
        Err(classify("file upload", status, &headers, &body, "the upload URL refused the file"))
    }
}

enum Put {
    Done,
    Expired(String),
}

/// A request that got no answer: always worth another try.
fn transport(what: &str, e: &reqwest::Error) -> UploadError {
    if e.is_timeout() {
        UploadError::transient(format!("{what}: timed out"))
    } else {
        UploadError::transient(format!("{what}: {}", without_url(e)))
    }
}

/// Sorts a non-2xx answer into try-again (429, 5xx, 408) and give-up (other 4xx).
pub(super) fn classify(what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8], refused: &str) -> UploadError {
    let text = format!("{what}: HTTP {}: {}", status.as_u16(), quote(body));
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        UploadError::Transient { reason: text, wait: asked_wait(headers) }
    } else if status == StatusCode::UNAUTHORIZED {
        UploadError::transient(text)
    } else {
        UploadError::Permanent(format!("{refused}: {text}"))
    }
}

/// The wait an answer asks for: `Retry-After` (seconds) or Helix's
/// `Ratelimit-Reset` (a Unix time in seconds).
fn asked_wait(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
    if let Some(secs) = number("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    let reset = number("ratelimit-reset")?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_sort_into_retry_and_give_up() {
        let h = HeaderMap::new();
        assert!(matches!(classify("x", StatusCode::INTERNAL_SERVER_ERROR, &h, b"", ""), UploadError::Transient { .. }));
        assert!(matches!(classify("x", StatusCode::TOO_MANY_REQUESTS, &h, b"", ""), UploadError::Transient { .. }));
        assert!(matches!(classify("x", StatusCode::BAD_REQUEST, &h, b"", ""), UploadError::Permanent(_)));
        assert!(matches!(classify("x", StatusCode::FORBIDDEN, &h, b"", ""), UploadError::Permanent(_)));
    }

    #[test]
    fn waits_come_from_retry_after_or_the_rate_limit_reset() {
        let mut h = HeaderMap::new();
        assert_eq!(asked_wait(&h), None);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        h.insert("ratelimit-reset", HeaderValue::from_str(&(now + 30).to_string()).unwrap());
        let wait = asked_wait(&h).unwrap();
        assert!((Duration::from_secs(29)..=Duration::from_secs(30)).contains(&wait), "{wait:?}");
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(asked_wait(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert!(asked_wait(&h).is_some(), "an unreadable Retry-After falls back to the reset");
    }
}
