//! `POST /eventsub`: Twitch's EventSub webhook, subscription type
//! `drop.entitlement.grant` (version 1, batched). Every message is checked
//! before it is read: the signature (`sha256=` + HMAC-SHA256 of message id,
//! timestamp and raw body, compared in constant time) and the timestamp
//! (at most 10 minutes old, as Twitch asks; nor 10 minutes ahead). Then:
//! a `webhook_callback_verification` is answered with its challenge, a
//! `revocation` is logged and counted, and a `notification`'s entitlements
//! are stored in the inbox in one transaction, deduplicated by entitlement
//! id (delivery is at least once; a redelivered message stores nothing new),
//! and acknowledged only after the commit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use crate::config::EventSubSettings;
use crate::domain::{Entitlement, MAX_ENTITLEMENT_FIELD_BYTES};
use crate::health::Liveness;
use crate::http::ApiError;
use crate::store::Store;
use crate::telemetry::live::{self, Source};

/// Oldest (and furthest ahead) message timestamp accepted: Twitch's 10 minutes.
const MAX_SKEW: time::Duration = time::Duration::minutes(10);

/// Longest header value read.
const MAX_HEADER_BYTES: usize = 256;

/// Longest challenge echoed back.
const MAX_CHALLENGE_BYTES: usize = 1024;

/// The only subscription this endpoint serves.
const SUBSCRIPTION_TYPE: &str = "drop.entitlement.grant";

/// What the EventSub endpoint needs.
pub struct EventSubIngest {
    pub settings: EventSubSettings,
    pub store: Arc<Store>,
    pub liveness: Arc<Liveness>,
}

/// `POST /eventsub`.
pub async fn post(State(ingest): State<Arc<EventSubIngest>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = std::time::Instant::now();
    match handle(&ingest, &headers, &body, started).await {
        Ok(response) => response,
        Err(e) => {
            live::refused(Source::EventSub, e.outcome());
            e.into_response()
        }
    }
}

async fn handle(
    ingest: &EventSubIngest,
    headers: &HeaderMap,
    body: &[u8],
    started: std::time::Instant,
) -> Result<Response, ApiError> {
    let Some(secret) = ingest.settings.secret.as_deref() else {
        return Err(ApiError::not_found("EventSub is not configured here (eventsub.secret)"));
    };
    let id = header(headers, "Twitch-Eventsub-Message-Id")?;
    let timestamp = header(headers, "Twitch-Eventsub-Message-Timestamp")?;
    let signature = header(headers, "Twitch-Eventsub-Message-Signature")?;
    let kind = header(headers, "Twitch-Eventsub-Message-Type")?;
    verify_signature(secret, id, timestamp, body, signature)?;
    check_timestamp(timestamp)?;
    match kind {
        "webhook_callback_verification" => {
            let message: Verification = parse(body)?;
            if message.challenge.len() > MAX_CHALLENGE_BYTES {
                return Err(ApiError::bad_request("challenge", "longer than 1 KiB"));
            }
            tracing::info!(subscription = %message.subscription.id, "eventsub subscription verified");
            Ok((StatusCode::OK, [("content-type", "text/plain")], message.challenge).into_response())
        }
        "revocation" => {
            let message: Revocation = parse(body)?;
            metrics::counter!("drops_eventsub_revocations_total").increment(1);
            tracing::error!(subscription = %message.subscription.id, status = %message.subscription.status,
                "Twitch revoked the EventSub subscription: entitlements stop arriving until it is created again");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "notification" => {
            let message: Notification = parse(body)?;
            let entitlements = entitlements(&message, ingest.settings.max_events)?;
            if let Some(reason) = ingest.liveness.stopped() {
                return Err(ApiError::unavailable(reason));
            }
            let outcome = ingest.store.insert_entitlements(&entitlements).await?;
            live::acknowledged(Source::EventSub, outcome.accepted, outcome.duplicates, started.elapsed());
            metrics::counter!("drops_eventsub_entitlements_total", "outcome" => "accepted").increment(outcome.accepted);
            metrics::counter!("drops_eventsub_entitlements_total", "outcome" => "duplicate")
                .increment(outcome.duplicates);
            tracing::debug!(message = %id, accepted = outcome.accepted, duplicates = outcome.duplicates, "eventsub stored");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        other => Err(ApiError::bad_request(
            "Twitch-Eventsub-Message-Type",
            format!("`{}` is not notification, webhook_callback_verification or revocation", other.escape_debug()),
        )),
    }
}

/// A required header's value: visible ASCII, bounded.
fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, ApiError> {
    let value = headers.get(name).ok_or_else(|| ApiError::bad_request(name, "missing"))?;
    let text = value.to_str().map_err(|_| ApiError::bad_request(name, "not visible ASCII"))?;
    if text.is_empty() || text.len() > MAX_HEADER_BYTES {
        return Err(ApiError::bad_request(name, "must be 1 to 256 characters"));
    }
    Ok(text)
}

/// `sha256=` + hex HMAC-SHA256(secret, id + timestamp + body), in constant time.
fn verify_signature(secret: &str, id: &str, timestamp: &str, body: &[u8], signature: &str) -> Result<(), ApiError> {
    let refused = || ApiError::forbidden("Twitch-Eventsub-Message-Signature", "does not match the message");
    let hex = signature.strip_prefix("sha256=").ok_or_else(refused)?;
    let given = hex::decode(hex).map_err(|_| refused())?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| refused())?;
    mac.update(id.as_bytes());
    mac.update(timestamp.as_bytes());
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| refused())
}

/// Refuses replays: a message older than 10 minutes (or that far ahead).
fn check_timestamp(timestamp: &str) -> Result<(), ApiError> {
    let field = "Twitch-Eventsub-Message-Timestamp";
    let at = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::bad_request(field, "not an RFC 3339 time"))?;
    let skew = time::OffsetDateTime::now_utc() - at;
    if skew.abs() > MAX_SKEW {
        return Err(ApiError::forbidden(field, "more than 10 minutes from now: refused as a replay"));
    }
    Ok(())
}

/// A JSON body, the error naming the field.
fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(ApiError::bad_json)
}

/// A notification's entitlements, each field checked.
fn entitlements(message: &Notification, max_events: usize) -> Result<Vec<Entitlement>, ApiError> {
    let subscription = &message.subscription;
    if subscription.kind != SUBSCRIPTION_TYPE || subscription.version != "1" {
        return Err(ApiError::bad_request(
            "subscription.type",
            format!(
                "this endpoint serves {SUBSCRIPTION_TYPE} version 1, not {} version {}",
                subscription.kind.escape_debug(),
                subscription.version.escape_debug()
            ),
        ));
    }
    if message.events.is_empty() || message.events.len() > max_events {
        return Err(ApiError::bad_request("events", format!("must hold 1 to {max_events} events")));
    }
    message
        .events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let d = &event.data;
            let fields = [
                ("id", &event.id),
                ("data.entitlement_id", &d.entitlement_id),
                ("data.organization_id", &d.organization_id),
                ("data.category_id", &d.category_id),
                ("data.category_name", &d.category_name),
                ("data.campaign_id", &d.campaign_id),
                ("data.user_id", &d.user_id),
                ("data.user_login", &d.user_login),
                ("data.user_name", &d.user_name),
                ("data.benefit_id", &d.benefit_id),
                ("data.created_at", &d.created_at),
            ];
            for (name, value) in fields {
                let required = !matches!(name, "data.category_name" | "data.user_name");
                if value.len() > MAX_ENTITLEMENT_FIELD_BYTES
                    || (required && value.trim().is_empty())
                    || value.chars().any(char::is_control)
                {
                    return Err(ApiError::bad_request(
                        format!("events[{i}].{name}"),
                        "must be 1 to 256 bytes without control characters",
                    ));
                }
            }
            if time::OffsetDateTime::parse(&d.created_at, &time::format_description::well_known::Rfc3339).is_err() {
                return Err(ApiError::bad_request(format!("events[{i}].data.created_at"), "not an RFC 3339 time"));
            }
            Ok(Entitlement {
                entitlement_id: d.entitlement_id.clone(),
                event_id: event.id.clone(),
                organization_id: d.organization_id.clone(),
                category_id: d.category_id.clone(),
                category_name: d.category_name.clone(),
                campaign_id: d.campaign_id.clone(),
                user_id: d.user_id.clone(),
                user_login: d.user_login.clone(),
                user_name: d.user_name.clone(),
                benefit_id: d.benefit_id.clone(),
                created_at: d.created_at.clone(),
            })
        })
        .collect()
}

#[derive(Deserialize)]
struct Subscription {
    #[serde(default)]
    id: String,
    #[serde(default)]
    status: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
struct Verification {
    challenge: String,
    subscription: Subscription,
}

#[derive(Deserialize)]
struct Revocation {
    subscription: Subscription,
}

#[derive(Deserialize)]
struct Notification {
    subscription: Subscription,
    events: Vec<NotificationEvent>,
}

#[derive(Deserialize)]
struct NotificationEvent {
    id: String,
    data: EntitlementData,
}

#[derive(Deserialize)]
struct EntitlementData {
    organization_id: String,
    #[serde(default)]
    category_id: String,
    #[serde(default)]
    category_name: String,
    #[serde(default)]
    campaign_id: String,
    user_id: String,
    #[serde(default)]
    user_login: String,
    #[serde(default)]
    user_name: String,
    entitlement_id: String,
    benefit_id: String,
    created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(id.as_bytes());
        mac.update(timestamp.as_bytes());
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_are_checked_over_id_timestamp_and_body() {
        let good = sign("s3cretvalue", "m-1", "2026-11-24T10:00:00Z", b"{}");
        assert!(verify_signature("s3cretvalue", "m-1", "2026-11-24T10:00:00Z", b"{}", &good).is_ok());
        for (id, ts, body, sig) in [
            ("m-2", "2026-11-24T10:00:00Z", &b"{}"[..], good.as_str()),
            ("m-1", "2026-11-24T10:00:01Z", &b"{}"[..], good.as_str()),
            ("m-1", "2026-11-24T10:00:00Z", &b"{ }"[..], good.as_str()),
            ("m-1", "2026-11-24T10:00:00Z", &b"{}"[..], good.trim_start_matches("sha256=")),
            ("m-1", "2026-11-24T10:00:00Z", &b"{}"[..], "sha256=zz"),
        ] {
            assert!(verify_signature("s3cretvalue", id, ts, body, sig).is_err(), "{id} {ts} {sig}");
        }
    }
}
