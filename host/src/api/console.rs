//! The console at `/console`: a page and its assets, embedded in the binary
//! (no build step, no CDN), and a login that keeps the admin token's proof
//! in a cookie. Everything the page shows it reads from documented `/v1`
//! routes, with the cookie standing in for the bearer header.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::admin::Admin;
use crate::domain::now_ms;
use crate::secrets::{hmac_sha256_hex, same_secret};

/// The session cookie's name.
const COOKIE_NAME: &str = "drops_console";
/// How long a login lasts.
const SESSION: Duration = Duration::from_secs(12 * 3600);
/// A login request, body included, is answered within this.
pub const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// Largest login form.
pub const MAX_LOGIN_BYTES: usize = 4 << 10;
/// A wrong token is answered this late, so guessing is slow (the token is
/// long enough that it would be hopeless anyway).
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(500);
/// The header the console sends with every change it asks for: a form on
/// another site cannot set it (and `SameSite=Strict` keeps the cookie from
/// such requests too).
pub const CONSOLE_HEADER: &str = "x-drops-console";

/// Only this page's own files run, and it talks only to its own origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The embedded files: name, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("console.js", "text/javascript; charset=utf-8", include_bytes!("../../console/console.js")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../console/console.css")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_bytes!("../../console/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_bytes!("../../console/vendor/uPlot.min.css")),
];
const PAGE: &str = include_str!("../../console/index.html");
const LOGIN: &str = include_str!("../../console/login.html");

/// `GET /console`: the console for a logged-in browser (or a bearer
/// header), else 401 with the login form.
pub(super) async fn page(State(app): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let Some(token) = app.settings.token.as_deref() else {
        return html(StatusCode::UNAUTHORIZED, login_page("The admin API is disabled: set admin.token."));
    };
    if authorized(&headers, token).is_some() {
        html(StatusCode::OK, PAGE.to_string())
    } else {
        html(StatusCode::UNAUTHORIZED, login_page(""))
    }
}

/// `GET /console/assets/{file}`: the page's scripts and styles (public: code, not data).
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => {
            let headers =
                [(CONTENT_TYPE, *content_type), (CACHE_CONTROL, "no-cache"), (X_CONTENT_TYPE_OPTIONS, "nosniff")];
            (headers, Bytes::from_static(bytes)).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such console file").into_response(),
    }
}

/// `POST /console/login` (form `token=...`): sets the session cookie and
/// sends the browser to the console.
pub(super) async fn login(State(app): State<Arc<Admin>>, body: Bytes) -> Response {
    let Some(expected) = app.settings.token.as_deref() else {
        return html(StatusCode::UNAUTHORIZED, login_page("The admin API is disabled: set admin.token."));
    };
    let given = form_urlencoded::parse(&body).find(|(k, _)| k == "token").map(|(_, v)| v.into_owned());
    let Some(given) = given.filter(|g| same_secret(g, expected)) else {
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        note_refused_login();
        return html(StatusCode::UNAUTHORIZED, login_page("That is not the admin token."));
    };
    let expires = now_ms() + SESSION.as_millis() as i64;
    let cookie = format!(
        "{COOKIE_NAME}={expires}.{}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        proof(&given, expires),
        SESSION.as_secs()
    );
    metrics::counter!("drops_console_logins_total", "outcome" => "accepted").increment(1);
    tracing::info!("console login");
    redirect_with_cookie(&cookie)
}

/// Counts a refused login, and logs refusals at most once per 10 s: a
/// guesser without the token cannot flood the log.
fn note_refused_login() {
    static REFUSED: AtomicU64 = AtomicU64::new(0);
    static LOGGED_AT: AtomicI64 = AtomicI64::new(0);
    metrics::counter!("drops_console_logins_total", "outcome" => "refused").increment(1);
    let refused = REFUSED.fetch_add(1, Ordering::Relaxed) + 1;
    let (now, last) = (now_ms(), LOGGED_AT.load(Ordering::Relaxed));
    if now - last >= 10_000 && LOGGED_AT.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        tracing::warn!(refused_since_start = refused, "console login with a wrong admin token");
    }
}

/// `POST /console/logout`: forgets the session cookie.
pub(super) async fn logout() -> Response {
    redirect_with_cookie(&format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"))
}

/// How a request proved it holds the admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The console's session cookie, valid until this time (ms since the epoch).
    Session { expires: i64 },
}

/// How a request carries the admin token, if it does: a bearer header, or
/// (with no `Authorization` header at all) a session cookie made with it
/// that has not expired.
pub fn authorized(headers: &HeaderMap, token: &str) -> Option<Proof> {
    match headers.get(axum::http::header::AUTHORIZATION) {
        Some(value) => {
            let given = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer "))?;
            same_secret(given, token).then_some(Proof::Bearer)
        }
        None => session(headers, token).map(|expires| Proof::Session { expires }),
    }
}

/// The expiry of the request's session cookie, if it was made with `token` and is still valid.
pub fn session(headers: &HeaderMap, token: &str) -> Option<i64> {
    let cookies = headers.get_all(COOKIE).iter().filter_map(|v| v.to_str().ok());
    let value = cookies
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value);
    let (expires, given) = value?.split_once('.')?;
    let expires = expires.parse::<i64>().ok()?;
    (expires > now_ms() && same_secret(given, &proof(token, expires))).then_some(expires)
}

/// The cookie's proof: an HMAC of its expiry under the token, so changing
/// the token ends every session, and the cookie never holds the token.
fn proof(token: &str, expires: i64) -> String {
    hmac_sha256_hex(token, &[format!("drops-console-session\n{expires}").as_bytes()])
}

fn redirect_with_cookie(cookie: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(LOCATION, HeaderValue::from_static("/console"));
    if let Ok(value) = HeaderValue::from_str(cookie) {
        headers.insert(SET_COOKIE, value);
    }
    response
}

fn login_page(message: &str) -> String {
    // The message is one of this module's fixed sentences: nothing of the request is echoed.
    LOGIN.replace("{{message}}", message)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, "text/html; charset=utf-8"),
            (CONTENT_SECURITY_POLICY, POLICY),
            (CACHE_CONTROL, "no-store"),
            (axum::http::header::X_FRAME_OPTIONS, "DENY"),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(&format!("other=1; {COOKIE_NAME}={value}")).unwrap());
        headers
    }

    #[test]
    fn a_session_is_valid_only_for_its_token_until_it_expires() {
        let later = now_ms() + 60_000;
        assert_eq!(session(&with_cookie(&format!("{later}.{}", proof("t0ken", later))), "t0ken"), Some(later));
        assert!(session(&with_cookie(&format!("{later}.{}", proof("t0ken", later))), "other-token").is_none());
        let forged_expiry = later + 1;
        assert!(session(&with_cookie(&format!("{forged_expiry}.{}", proof("t0ken", later))), "t0ken").is_none());
        let past = now_ms() - 1;
        assert!(session(&with_cookie(&format!("{past}.{}", proof("t0ken", past))), "t0ken").is_none());
        for junk in ["", ".", "x.y", "9999999999999999999999.ab", "t0ken"] {
            assert!(session(&with_cookie(junk), "t0ken").is_none(), "{junk}");
        }
    }

    #[test]
    fn a_bearer_header_is_judged_alone() {
        let later = now_ms() + 60_000;
        let mut headers = with_cookie(&format!("{later}.{}", proof("t0ken", later)));
        headers.insert(axum::http::header::AUTHORIZATION, HeaderValue::from_static("Bearer wrong"));
        assert_eq!(authorized(&headers, "t0ken"), None, "a wrong bearer is not rescued by a cookie");
        headers.insert(axum::http::header::AUTHORIZATION, HeaderValue::from_static("Basic dDBrZW4="));
        assert_eq!(authorized(&headers, "t0ken"), None, "nor any other Authorization header");
        headers.remove(axum::http::header::AUTHORIZATION);
        assert_eq!(authorized(&headers, "t0ken"), Some(Proof::Session { expires: later }));
    }
}
