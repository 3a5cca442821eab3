//! Handling secrets: comparing them without leaking their length or
//! content through timing, and keeping them out of logs and answers.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest secret the host accepts (`vhs.token`, `admin.token`).
pub const MIN_SECRET_BYTES: usize = 16;

/// Whether `given` is the secret `expected`. Compares SHA-256 digests in
/// constant time, so neither the length nor a common prefix shows in timing.
pub fn same_secret(given: &str, expected: &str) -> bool {
    bool::from(Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(expected.as_bytes())))
}

/// HMAC-SHA256 of `parts` (concatenated) under `key`, in hex: how the host
/// signs what it sends (webhook deliveries, console sessions).
pub fn hmac_sha256_hex(key: &str, parts: &[&[u8]]) -> String {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// A URL with its password replaced by `***`, for logs and output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let redacted = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    match path {
        Some(path) => format!("{scheme}://{redacted}/{path}"),
        None => format!("{scheme}://{redacted}"),
    }
}

/// A request path fit for logs: the VHS token in `/vhs/{token}` is not.
pub fn redact_path(path: &str) -> &str {
    if path.starts_with("/vhs/") {
        "/vhs/{token}"
    } else {
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_by_digest() {
        assert!(same_secret("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_secret("0123456789abcdef", "0123456789abcdeg"));
        assert!(!same_secret("", "0123456789abcdef"));
    }

    #[test]
    fn passwords_and_tokens_stay_out_of_logs() {
        assert_eq!(redact_url("postgres://app:hunter2@db:5432/drops"), "postgres://app:***@db:5432/drops");
        assert_eq!(redact_url("postgres://app@db/drops"), "postgres://app@db/drops");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
        assert_eq!(redact_path("/vhs/s3cret-s3cret-s3cret"), "/vhs/{token}");
        assert_eq!(redact_path("/v1/grants"), "/v1/grants");
    }
}
