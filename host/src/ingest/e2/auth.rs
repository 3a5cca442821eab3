//! Who a `connect` may publish for, as the E2 guide says: the token alone
//! (no `Bearer`/`OAuth` prefix), an app token naming its broadcasters, a user
//! token publishing for its own user, an allowlisted (client, game) pair, and
//! every broadcaster linked to a game account.

use super::protocol::{close, ClientMessage, Violation};
use super::tokens::TokenError;
use super::E2Hub;
use crate::config::TokenKind;
use crate::domain::Publisher;

/// Who an authenticated connection publishes for.
pub struct Session {
    pub publishers: Vec<Publisher>,
    pub client_id: String,
    pub game_id: String,
    /// Published with an app token (a game server) rather than a user token.
    pub authoritative: bool,
}

/// Checks a `connect` message and resolves the broadcasters it publishes for.
pub async fn authenticate(hub: &E2Hub, msg: &ClientMessage) -> Result<Session, Violation> {
    let unauthorized = |code, message: String| Violation::close(code, message, close::UNAUTHORIZED);
    let forbidden = |code, message: String| Violation::close(code, message, close::FORBIDDEN);
    let token = msg.token.as_deref().unwrap_or_default();
    if token.is_empty() {
        return Err(unauthorized("invalid_token", "field `token`: missing".into()));
    }
    if let Some(prefix) = auth_scheme_prefix(token) {
        return Err(unauthorized(
            "token_prefix",
            format!("field `token`: send the token alone, without the `{prefix}` prefix"),
        ));
    }
    let client_id = required(&msg.client_id, "client_id")?;
    let game_id = required(&msg.game_id, "game_id")?;
    // The cheap checks first: an anonymous connect for a game that is not
    // allowlisted, or naming too many broadcasters, costs no call to Twitch.
    let allowed = hub.settings.allowlist.iter().any(|p| p.client_id == client_id && p.game_id == game_id);
    if !allowed {
        return Err(forbidden(
            "not_allowlisted",
            format!("client `{client_id}` is not allowlisted to publish for game `{game_id}`"),
        ));
    }
    let cap = hub.settings.max_broadcaster_ids;
    if msg.broadcaster_ids.as_ref().is_some_and(|ids| ids.len() > cap) {
        return Err(forbidden(
            "too_many_broadcasters",
            format!("field `broadcaster_ids`: at most {cap} broadcasters per connection (e2.max_broadcaster_ids)"),
        ));
    }
    let info = match hub.verifier.verify(token).await {
        Ok(info) => info,
        Err(TokenError::Unavailable(e)) => {
            tracing::warn!("e2 token check failed: {e}");
            return Err(Violation::close(
                "unavailable",
                "cannot check tokens right now; reconnect later",
                close::TRY_AGAIN_LATER,
            ));
        }
        Err(e) => return Err(unauthorized("invalid_token", format!("field `token`: {e}"))),
    };
    if info.client_id != client_id {
        return Err(unauthorized(
            "invalid_token",
            format!("field `token`: issued to client `{}`, not `{client_id}`", info.client_id),
        ));
    }
    let ids = msg.broadcaster_ids.as_deref();
    let broadcasters: Vec<String> = match (info.kind, ids) {
        (TokenKind::App, Some(ids)) if !ids.is_empty() => ids.to_vec(),
        (TokenKind::App, _) => {
            return Err(forbidden(
                "broadcaster_ids_required",
                "field `broadcaster_ids`: an app token must name the broadcasters it publishes for".into(),
            ))
        }
        (TokenKind::User, Some(_)) => {
            return Err(forbidden(
                "broadcaster_ids_forbidden",
                "field `broadcaster_ids`: a user token publishes only for its own user; leave it out".into(),
            ))
        }
        (TokenKind::User, None) => match info.user_id {
            Some(user) => vec![user],
            None => return Err(unauthorized("invalid_token", "field `token`: user token without a user".into())),
        },
    };
    let links = match hub.store.links_of(&broadcasters).await {
        Ok(links) => links,
        Err(e) => {
            tracing::warn!("e2 link lookup failed: {e}");
            return Err(Violation::close(
                "unavailable",
                "storage unavailable; reconnect later",
                close::TRY_AGAIN_LATER,
            ));
        }
    };
    let mut publishers = Vec::with_capacity(broadcasters.len());
    let mut unlinked = Vec::new();
    for id in broadcasters {
        match links.get(&id) {
            Some(account_id) => publishers.push(Publisher { twitch_user_id: id, account_id: account_id.clone() }),
            None => unlinked.push(id),
        }
    }
    if !unlinked.is_empty() {
        return Err(forbidden(
            "broadcaster_not_linked",
            format!("broadcasters not linked to this game: {}", unlinked.join(", ")),
        ));
    }
    publishers.sort_by(|a, b| a.twitch_user_id.cmp(&b.twitch_user_id));
    publishers.dedup();
    Ok(Session { publishers, client_id, game_id, authoritative: info.kind == TokenKind::App })
}

/// The `Bearer`/`OAuth` scheme a token was sent with, as sent (E2 wants the token alone).
fn auth_scheme_prefix(token: &str) -> Option<&str> {
    ["bearer ", "oauth "].into_iter().find_map(|prefix| {
        // `get` rather than slicing: a non-ASCII token must not split a character.
        let sent = token.get(..prefix.len())?;
        sent.eq_ignore_ascii_case(prefix).then(|| &sent[..prefix.len() - 1])
    })
}

fn required(value: &Option<String>, field: &str) -> Result<String, Violation> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v.to_string()),
        _ => Err(Violation::drop("malformed", format!("field `{field}`: missing"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn schemes_are_found_in_any_case() {
        assert_eq!(auth_scheme_prefix("Bearer abc"), Some("Bearer"));
        assert_eq!(auth_scheme_prefix("oAuTh abc"), Some("oAuTh"));
        assert_eq!(auth_scheme_prefix("bearerabc"), None);
        assert_eq!(auth_scheme_prefix("éééé"), None);
    }

    proptest! {
        #[test]
        fn any_token_is_answered_without_a_panic(token in "\\PC{0,12}") {
            let _ = auth_scheme_prefix(&token);
            let _ = auth_scheme_prefix(&format!("Bear{token}"));
        }
    }
}
