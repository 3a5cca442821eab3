//! Who may publish game state: E2 tokens checked against a static table
//! (development and tests) or Twitch's validate endpoint (production).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

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

/// Asks Twitch (`GET <base>/oauth2/validate`) and caches the answers for a while.
pub struct TwitchVerifier {
    client: reqwest::Client,
    validate_url: String,
    ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

/// An answer and when it was got.
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
                cache: Mutex::new(HashMap::new()),
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
        if let Some((at, answer)) = self.cache.lock().await.get(token) {
            if at.elapsed() < self.ttl {
                return answer.clone();
            }
        }
        let answer = self.ask(token).await;
        if !matches!(answer, Err(TokenError::Unavailable(_))) {
            let mut cache = self.cache.lock().await;
            // Bounded: a flood of made-up tokens must not grow memory forever.
            if cache.len() > 100_000 {
                cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            cache.insert(token.to_string(), (Instant::now(), answer.clone()));
        }
        answer
    }

    async fn ask(&self, token: &str) -> Result<TokenInfo, TokenError> {
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
        Ok(TokenInfo { kind, client_id: v.client_id, user_id: v.user_id.filter(|u| !u.is_empty()) })
    }
}
