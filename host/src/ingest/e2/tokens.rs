//! Who may publish game state: E2 tokens checked against a static table
//! (development and tests) or Twitch's validate endpoint (production).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::{E2Settings, StaticToken, TokenKind, TokenVerifierKind};

/// What a valid token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub kind: TokenKind,
    pub client_id: String,
    /// The Twitch user of a user token.
    pub user_id: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown or revoked token")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token verifier unavailable: {0}")]
    Unavailable(String),
}

/// Checks tokens; one per host.
pub enum TokenVerifier {
    Static(HashMap<String, StaticToken>),
    Twitch(TwitchVerifier),
}

/// Asks Twitch (`GET <base>/oauth2/validate`) and caches the answers for a
/// while, in a cache of bounded size keyed by the token's digest: a flood of
/// made-up tokens evicts old answers instead of growing memory.
pub struct TwitchVerifier {
    client: reqwest::Client,
    validate_url: String,
    ttl: Duration,
    cache: Cache<[u8; 32], Cached>,
    /// Questions to Twitch in flight at once: a flood of distinct tokens
    /// queues here instead of becoming a flood of outbound requests.
    asking: tokio::sync::Semaphore,
}

/// Validations asked of Twitch at once.
const MAX_VALIDATIONS_IN_FLIGHT: usize = 8;

/// An answer and until when it may be reused.
type Cached = (Instant, Result<TokenInfo, TokenError>);

/// Twitch's answer for a valid token (app tokens have no `user_id`).
#[derive(Debug, Deserialize)]
struct Validated {
    client_id: String,
    user_id: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

impl TokenVerifier {
    /// The verifier the settings choose.
    pub fn from_settings(settings: &E2Settings) -> TokenVerifier {
        let kind = settings.verifier.unwrap_or(if settings.tokens.is_empty() {
            TokenVerifierKind::Twitch
        } else {
            TokenVerifierKind::Static
        });
        match kind {
            TokenVerifierKind::Static => {
                TokenVerifier::Static(settings.tokens.iter().map(|t| (t.token.clone(), t.clone())).collect())
            }
            TokenVerifierKind::Twitch => TokenVerifier::Twitch(TwitchVerifier {
                client: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default(),
                validate_url: format!("{}/oauth2/validate", settings.twitch_auth_url.trim_end_matches('/')),
                ttl: Duration::from_secs(settings.token_cache_secs),
                cache: Cache::new(settings.token_cache_entries.max(1)),
                asking: tokio::sync::Semaphore::new(MAX_VALIDATIONS_IN_FLIGHT),
            }),
        }
    }

    /// Checks a token as sent (a `Bearer`/`OAuth` prefix is refused before this).
    pub async fn verify(&self, token: &str) -> Result<TokenInfo, TokenError> {
        match self {
            TokenVerifier::Static(table) => {
                let entry = table.get(token).ok_or(TokenError::Invalid)?;
                if entry.expires_at.is_some_and(|at| at <= time::OffsetDateTime::now_utc()) {
                    return Err(TokenError::Expired);
                }
                Ok(TokenInfo { kind: entry.kind, client_id: entry.client_id.clone(), user_id: entry.user_id.clone() })
            }
            TokenVerifier::Twitch(twitch) => twitch.verify(token).await,
        }
    }
}

impl TwitchVerifier {
    async fn verify(&self, token: &str) -> Result<TokenInfo, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((until, answer)) = self.cache.get(&key) {
            if Instant::now() < until {
                return answer;
            }
        }
        let answer = self.ask(token).await;
        // Never trusted past the token's own expiry.
        let ttl = match &answer {
            Ok((_, Some(secs))) => self.ttl.min(Duration::from_secs(*secs)),
            _ => self.ttl,
        };
        let answer = answer.map(|(info, _)| info);
        if !matches!(answer, Err(TokenError::Unavailable(_))) {
            self.cache.insert(key, (Instant::now() + ttl, answer.clone()));
        }
        answer
    }

    /// Answers held in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Twitch's answer, and for a valid token how many seconds it has left.
    async fn ask(&self, token: &str) -> Result<(TokenInfo, Option<u64>), TokenError> {
        let _asking = self.asking.acquire().await.map_err(|e| TokenError::Unavailable(e.to_string()))?;
        let response = self
            .client
            .get(&self.validate_url)
            .header("Authorization", format!("OAuth {token}"))
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 => {}
            401 => return Err(TokenError::Invalid),
            status => return Err(TokenError::Unavailable(format!("Twitch answered {status}"))),
        }
        let v: Validated = response.json().await.map_err(|e| TokenError::Unavailable(e.to_string()))?;
        if v.expires_in.is_some_and(|s| s <= 0) {
            return Err(TokenError::Expired);
        }
        let kind = if v.user_id.as_deref().is_some_and(|u| !u.is_empty()) { TokenKind::User } else { TokenKind::App };
        let info = TokenInfo { kind, client_id: v.client_id, user_id: v.user_id.filter(|u| !u.is_empty()) };
        Ok((info, v.expires_in.and_then(|s| u64::try_from(s).ok())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use axum::{Json, Router};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A fake of Twitch's `GET /oauth2/validate`, counting the questions it gets.
    async fn fake_twitch() -> (String, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let app = Router::new().route(
            "/oauth2/validate",
            get(move |headers: HeaderMap| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
                    match auth {
                        "OAuth app-token" => (
                            StatusCode::OK,
                            Json(serde_json::json!({"client_id": "c1", "scopes": [], "expires_in": 5000})),
                        ),
                        "OAuth user-token" => (
                            StatusCode::OK,
                            Json(
                                serde_json::json!({"client_id": "c1", "login": "x", "user_id": "42", "expires_in": 60}),
                            ),
                        ),
                        "OAuth spent-token" => {
                            (StatusCode::OK, Json(serde_json::json!({"client_id": "c1", "expires_in": 0})))
                        }
                        _ => (
                            StatusCode::UNAUTHORIZED,
                            Json(serde_json::json!({"status": 401, "message": "invalid access token"})),
                        ),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), asked)
    }

    #[tokio::test]
    async fn twitch_says_what_a_token_is_and_answers_are_cached() {
        let (url, asked) = fake_twitch().await;
        let settings =
            E2Settings { verifier: Some(TokenVerifierKind::Twitch), twitch_auth_url: url, ..Default::default() };
        let verifier = TokenVerifier::from_settings(&settings);
        let app = verifier.verify("app-token").await.unwrap();
        assert_eq!(app, TokenInfo { kind: TokenKind::App, client_id: "c1".into(), user_id: None });
        let user = verifier.verify("user-token").await.unwrap();
        assert_eq!((user.kind, user.user_id.as_deref()), (TokenKind::User, Some("42")));
        assert_eq!(verifier.verify("spent-token").await, Err(TokenError::Expired));
        assert_eq!(verifier.verify("made-up").await, Err(TokenError::Invalid));
        let before = asked.load(Ordering::SeqCst);
        verifier.verify("app-token").await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), before, "asked again within the cache time");
    }

    #[tokio::test]
    async fn a_flood_of_made_up_tokens_stays_within_the_cache_size() {
        let (url, _) = fake_twitch().await;
        let settings = E2Settings {
            verifier: Some(TokenVerifierKind::Twitch),
            twitch_auth_url: url,
            token_cache_entries: 50,
            ..Default::default()
        };
        let TokenVerifier::Twitch(twitch) = TokenVerifier::from_settings(&settings) else { panic!("twitch") };
        for i in 0..500 {
            assert_eq!(twitch.verify(&format!("made-up-{i}")).await, Err(TokenError::Invalid));
        }
        assert!(twitch.cached() <= 50, "{} answers cached", twitch.cached());
    }

    #[tokio::test]
    async fn twitch_unreachable_is_not_an_invalid_token() {
        let settings = E2Settings {
            verifier: Some(TokenVerifierKind::Twitch),
            twitch_auth_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        };
        let err = TokenVerifier::from_settings(&settings).verify("app-token").await.unwrap_err();
        assert!(matches!(err, TokenError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn questions_to_twitch_are_bounded_in_flight() {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        let app = Router::new().route(
            "/oauth2/validate",
            get(move || {
                let (n, m) = (n.clone(), m.clone());
                async move {
                    let inside = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(inside, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    StatusCode::UNAUTHORIZED
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let settings =
            E2Settings { verifier: Some(TokenVerifierKind::Twitch), twitch_auth_url: url, ..Default::default() };
        let verifier = Arc::new(TokenVerifier::from_settings(&settings));
        let asks = (0..40).map(|i| {
            let verifier = verifier.clone();
            tokio::spawn(async move { verifier.verify(&format!("flood-{i}")).await })
        });
        for ask in asks {
            assert_eq!(ask.await.unwrap(), Err(TokenError::Invalid));
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=MAX_VALIDATIONS_IN_FLIGHT).contains(&most), "{most} questions in flight at once");
    }
}
