//! Playing Twitch's EventSub side: `drop.entitlement.grant` notifications,
//! batched and signed as Twitch signs them, with its redeliveries (the same
//! message again) and duplicates (the same entitlement in a later message),
//! for viewers some of whom link their game account only afterwards.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::delivery::webhook::signature;

/// Options of the EventSub part of `drops-host simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventSubArgs {
    /// EventSub secret: when set, entitlements are sent to <target>/eventsub too.
    #[arg(long, env = "DROPS_HOST_EVENTSUB__SECRET")]
    pub eventsub_secret: Option<String>,
    /// Viewers who earn drops (each earns the first benefit; every second
    /// one the second benefit after it; every fifth the second benefit alone).
    #[arg(long, default_value_t = 20)]
    pub entitled_viewers: u32,
    /// The Twitch Drops campaign the entitlements belong to.
    #[arg(long, default_value = "d1e2f3a4-launch-drops")]
    pub drops_campaign: String,
    /// The campaign's benefit ids, comma-separated (first, second).
    #[arg(long, default_value = "benefit-sword,benefit-shield")]
    pub benefits: String,
    /// Entitlements per notification (Twitch batches them).
    #[arg(long, default_value_t = 5)]
    pub entitlements_per_message: usize,
}

/// What the EventSub part sent.
#[derive(Debug, Default, Clone, Serialize)]
pub struct EventSubReport {
    pub notifications: u64,
    pub entitlements: u64,
    /// Messages sent again under the same id, and entitlements sent again in a later message.
    pub redeliveries: u64,
    pub duplicate_entitlements: u64,
    pub failed: u64,
    /// Viewers linked before their entitlements were sent, and after.
    pub linked_first: u64,
    pub linked_late: u64,
}

/// The Twitch user id and game account of entitled viewer `i`.
pub fn entitled_viewer(i: u32) -> (String, String) {
    (format!("twitch-fan-{i}"), format!("fan-{i}"))
}

/// Viewers who link their account only after their entitlements arrived: every third.
fn links_late(i: u32) -> bool {
    i % 3 == 2
}

/// Sends the entitlements; viewers who link early are linked first through the admin API.
pub async fn play(
    http: &reqwest::Client,
    target: &str,
    admin_token: Option<&str>,
    args: &EventSubArgs,
) -> anyhow::Result<EventSubReport> {
    let Some(secret) = args.eventsub_secret.as_deref() else { return Ok(EventSubReport::default()) };
    let mut report = EventSubReport::default();
    if let Some(token) = admin_token {
        let early: Vec<u32> = (0..args.entitled_viewers).filter(|i| !links_late(*i)).collect();
        report.linked_first = link(http, target, token, &early).await?;
    }
    let mut benefits = args.benefits.split(',').map(str::trim);
    let first = benefits.next().unwrap_or("benefit-sword");
    let second = benefits.next().unwrap_or(first);
    let mut earned = Vec::new();
    for i in 0..args.entitled_viewers {
        if i % 5 == 4 {
            earned.push((i, second));
            continue;
        }
        earned.push((i, first));
        if i % 2 == 1 {
            earned.push((i, second));
        }
    }
    let now = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
    let events: Vec<serde_json::Value> = earned
        .iter()
        .enumerate()
        .map(|(n, (i, benefit))| {
            let (user_id, _) = entitled_viewer(*i);
            json!({"id": format!("event-{n}-{}", uuid::Uuid::new_v4()), "data": {
                "organization_id": "demo-organization", "category_id": "demo-game-id", "category_name": "GameName",
                "campaign_id": args.drops_campaign, "user_id": user_id, "user_login": format!("fan{i}"),
                "user_name": format!("Fan{i}"), "entitlement_id": format!("ent-{}-{n}", args.drops_campaign),
                "benefit_id": benefit, "created_at": now}})
        })
        .collect();
    let per_message = args.entitlements_per_message.max(1);
    for (m, chunk) in events.chunks(per_message).enumerate() {
        let mut chunk = chunk.to_vec();
        // Every third message repeats the first entitlement of the one before (Twitch's at-least-once).
        if m % 3 == 2 {
            if let Some(again) = events.get((m - 1) * per_message) {
                chunk.push(again.clone());
                report.duplicate_entitlements += 1;
            }
        }
        let message_id = uuid::Uuid::new_v4().to_string();
        let sends = if m % 4 == 1 { 2 } else { 1 };
        for retry in 0..sends {
            report.redeliveries += u64::from(retry > 0);
            match notify(http, target, secret, &message_id, retry, &chunk).await {
                Ok(()) => report.notifications += 1,
                Err(e) => {
                    report.failed += 1;
                    eprintln!("eventsub notification {message_id}: {e}");
                }
            }
        }
        report.entitlements += chunk.len() as u64;
    }
    Ok(report)
}

/// Links the viewers who link late; their waiting entitlements are decided then.
pub async fn link_late(
    http: &reqwest::Client,
    target: &str,
    admin_token: &str,
    args: &EventSubArgs,
) -> anyhow::Result<u64> {
    let late: Vec<u32> = (0..args.entitled_viewers).filter(|i| links_late(*i)).collect();
    link(http, target, admin_token, &late).await
}

async fn link(http: &reqwest::Client, target: &str, token: &str, viewers: &[u32]) -> anyhow::Result<u64> {
    if viewers.is_empty() {
        return Ok(0);
    }
    let links: Vec<serde_json::Value> = viewers
        .iter()
        .map(|i| {
            let (twitch_user_id, game_account_id) = entitled_viewer(*i);
            json!({"twitch_user_id": twitch_user_id, "game_account_id": game_account_id})
        })
        .collect();
    let answer =
        http.put(format!("{}/v1/links", target.trim_end_matches('/'))).bearer_auth(token).json(&links).send().await?;
    anyhow::ensure!(answer.status().is_success(), "PUT /v1/links answered {}", answer.status());
    Ok(viewers.len() as u64)
}

/// POSTs one signed notification; Ok on a 2xx.
async fn notify(
    http: &reqwest::Client,
    target: &str,
    secret: &str,
    message_id: &str,
    retry: u32,
    events: &[serde_json::Value],
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&json!({
        "subscription": {"id": "simulated-subscription", "status": "enabled", "type": "drop.entitlement.grant",
            "version": "1", "cost": 0, "condition": {"organization_id": "demo-organization"},
            "transport": {"method": "webhook", "callback": format!("{target}/eventsub")},
            "created_at": "2026-01-01T00:00:00Z"},
        "events": events,
    }))?;
    let timestamp = OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default();
    let answer = http
        .post(format!("{}/eventsub", target.trim_end_matches('/')))
        .header("content-type", "application/json")
        .header("Twitch-Eventsub-Message-Id", message_id)
        .header("Twitch-Eventsub-Message-Retry", retry.to_string())
        .header("Twitch-Eventsub-Message-Type", "notification")
        .header("Twitch-Eventsub-Message-Timestamp", &timestamp)
        .header("Twitch-Eventsub-Message-Signature", signature(secret, message_id, &timestamp, &body))
        .header("Twitch-Eventsub-Subscription-Type", "drop.entitlement.grant")
        .header("Twitch-Eventsub-Subscription-Version", "1")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    anyhow::ensure!(answer.status().is_success(), "answered {}", answer.status());
    Ok(())
}
