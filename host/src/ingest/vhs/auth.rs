//! VHS authentication: the shared secret in the path (Twitch's console takes
//! only a URL), or an EventSub-style HMAC signature for senders that can sign.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::secrets::same_secret;

/// HMAC-SHA256 over `id + timestamp + raw body`.
pub type Signer = Hmac<Sha256>;

/// Oldest signature timestamp accepted.
const MAX_SIGNATURE_AGE_SECS: i64 = 600;

/// The signature headers of a request.
#[derive(Debug, Default)]
pub struct SignatureHeaders<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// What the raw body must still prove once read.
pub struct PendingSignature {
    pub signer: Signer,
    pub expected: Vec<u8>,
}

/// Why a request is not authenticated (401).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("wrong VHS token")]
    WrongToken,
    #[error("a VHS token is required: POST /vhs/{{token}} or sign the request")]
    Missing,
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    #[error("Drops-Message-Timestamp is not an RFC 3339 time")]
    BadTimestamp,
    #[error("Drops-Message-Timestamp is more than 10 minutes from now")]
    StaleTimestamp,
    #[error("Drops-Message-Signature must be sha256=<hex>")]
    BadSignatureFormat,
    #[error("signature does not match")]
    BadSignature,
}

/// Checks what can be checked before the body: the path token, or the
/// signature headers (returning the signer the body must then satisfy).
pub fn check(
    secret: Option<&str>,
    path_token: Option<&str>,
    headers: &SignatureHeaders<'_>,
    now: OffsetDateTime,
) -> Result<Option<PendingSignature>, AuthError> {
    let Some(secret) = secret else { return Ok(None) };
    if let Some(token) = path_token {
        return if same_secret(token, secret) { Ok(None) } else { Err(AuthError::WrongToken) };
    }
    let Some(signature) = headers.signature else { return Err(AuthError::Missing) };
    let id = headers.id.ok_or(AuthError::MissingHeader("Drops-Message-Id"))?;
    let timestamp = headers.timestamp.ok_or(AuthError::MissingHeader("Drops-Message-Timestamp"))?;
    let at = OffsetDateTime::parse(timestamp, &Rfc3339).map_err(|_| AuthError::BadTimestamp)?;
    if (now - at).whole_seconds().abs() > MAX_SIGNATURE_AGE_SECS {
        return Err(AuthError::StaleTimestamp);
    }
    let expected =
        signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).ok_or(AuthError::BadSignatureFormat)?;
    let mut signer = Signer::new_from_slice(secret.as_bytes()).map_err(|_| AuthError::BadSignature)?;
    signer.update(id.as_bytes());
    signer.update(timestamp.as_bytes());
    Ok(Some(PendingSignature { signer, expected }))
}

impl PendingSignature {
    /// Finishes the MAC over the raw `body` and compares it with the header, in constant time.
    pub fn verify(mut self, body: &[u8]) -> Result<(), AuthError> {
        self.signer.update(body);
        self.signer.verify_slice(&self.expected).map_err(|_| AuthError::BadSignature)
    }
}

/// Signs a body the way senders must (used by `simulate` and tests).
pub fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Signer::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2026-11-23T12:00:00Z", &Rfc3339).unwrap()
    }

    #[test]
    fn path_token() {
        let h = SignatureHeaders::default();
        assert!(check(None, None, &h, now()).unwrap().is_none());
        assert!(check(Some("s"), Some("s"), &h, now()).unwrap().is_none());
        assert_eq!(check(Some("s"), Some("x"), &h, now()).err(), Some(AuthError::WrongToken));
        assert_eq!(check(Some("s"), None, &h, now()).err(), Some(AuthError::Missing));
    }

    #[test]
    fn signature_round_trip() {
        let ts = "2026-11-23T11:59:00Z";
        let sig = sign("s", "m1", ts, b"{}");
        let h = SignatureHeaders { id: Some("m1"), timestamp: Some(ts), signature: Some(&sig) };
        let pending = check(Some("s"), None, &h, now()).unwrap().unwrap();
        assert!(pending.verify(b"{}").is_ok());
        let tampered = check(Some("s"), None, &h, now()).unwrap().unwrap();
        assert_eq!(tampered.verify(b"[]"), Err(AuthError::BadSignature));
        let old = SignatureHeaders { timestamp: Some("2026-11-23T11:40:00Z"), ..h };
        assert_eq!(check(Some("s"), None, &old, now()).err(), Some(AuthError::StaleTimestamp));
    }
}
