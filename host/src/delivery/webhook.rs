//! The webhook sink: each batch of grants POSTed as JSON to the studio's
//! endpoint, signed the way drops-host checks VHS signatures, so a studio
//! verifies both with the same code:
//!
//! - `Drops-Message-Id`: the batch id (`grants-<first id>-<last id>`);
//! - `Drops-Message-Timestamp`: RFC 3339, when this attempt was signed;
//! - `Drops-Message-Signature`: `sha256=` + hex HMAC-SHA256(secret, id + timestamp + body);
//! - `Drops-Message-Kind`: `grants` (`{"batch_id", "grants": [...]}`) or
//!   `items` (`{"batch_id", "deliveries": [...]}`, decided entitlements' items).
//!
//! Every 2xx acknowledges the whole batch; anything else (or no answer within
//! `request_timeout_secs`) is retried, the same grants under the same keys.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;

use super::sink::{GrantBatch, ItemBatch, Sink, SinkError};
use super::{quote, read_prefix, without_url};
use crate::config::WebhookSettings;
use crate::secrets::hmac_sha256_hex;

/// The webhook sink.
pub struct WebhookSink {
    http: reqwest::Client,
    url: String,
    secret: String,
    max_batch: u32,
}

impl WebhookSink {
    /// A sink posting to the configured endpoint.
    pub fn new(settings: &WebhookSettings) -> Result<WebhookSink, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.request_timeout_secs))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(WebhookSink {
            http,
            url: settings.url.clone(),
            secret: settings.secret.clone().unwrap_or_default(),
            max_batch: settings.max_batch,
        })
    }
}

/// `sha256=<hex>` of HMAC-SHA256(secret, id + timestamp + body).
pub fn signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_sha256_hex(secret, &[id.as_bytes(), timestamp.as_bytes(), body]))
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn max_batch(&self) -> u32 {
        self.max_batch
    }

    async fn deliver(&self, batch: &GrantBatch) -> Result<(), SinkError> {
        let body = serde_json::to_vec(batch).map_err(|e| SinkError(format!("encoding the batch: {e}")))?;
        self.post(&batch.batch_id, "grants", body).await
    }

    async fn deliver_items(&self, batch: &ItemBatch) -> Result<(), SinkError> {
        let body = serde_json::to_vec(batch).map_err(|e| SinkError(format!("encoding the batch: {e}")))?;
        self.post(&batch.batch_id, "items", body).await
    }
}

impl WebhookSink {
    /// POSTs one signed batch; Ok on any 2xx.
    async fn post(&self, id: &str, kind: &str, body: Vec<u8>) -> Result<(), SinkError> {
        let timestamp = time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
        let signed = signature(&self.secret, id, &timestamp, &body);
        let answer = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("Drops-Message-Kind", kind)
            .header("Drops-Message-Id", id)
            .header("Drops-Message-Timestamp", &timestamp)
            .header("Drops-Message-Signature", signed)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                let why = if e.is_timeout() { "timed out".to_string() } else { without_url(&e) };
                SinkError(format!("POST: {why}"))
            })?;
        let status = answer.status();
        if status.is_success() {
            // Any 2xx acknowledges the batch, whatever (and however long) its body.
            return Ok(());
        }
        let text = read_prefix(answer).await;
        Err(SinkError(format!("HTTP {}: {}", status.as_u16(), quote(&text))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_covers_id_timestamp_and_body() {
        let s = signature("secret-0123456789", "grants-1-2", "2026-11-24T10:00:00Z", b"{}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        assert_ne!(s, signature("secret-0123456789", "grants-1-3", "2026-11-24T10:00:00Z", b"{}"));
        assert_ne!(s, signature("secret-0123456789", "grants-1-2", "2026-11-24T10:00:01Z", b"{}"));
        assert_ne!(s, signature("secret-0123456789", "grants-1-2", "2026-11-24T10:00:00Z", b"[]"));
    }
}
