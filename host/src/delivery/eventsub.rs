//! The EventSub subscription that brings today's Drops to `POST /eventsub`:
//! `drop.entitlement.grant`, version 1, webhook transport, batched, under
//! the app's access token (Helix `/eventsub/subscriptions`).

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::twitch::{classify, TwitchClient, UploadError};

/// The subscription type and version served.
pub const SUBSCRIPTION_TYPE: &str = "drop.entitlement.grant";

/// Pages of subscriptions read at most when listing (100 each).
const MAX_PAGES: usize = 100;

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct DropsSubscription {
    /// The public https URL of this host's `/eventsub`.
    pub callback: String,
    /// The subscription's secret (`eventsub.secret`).
    pub secret: String,
    pub organization_id: String,
    pub category_id: Option<String>,
    pub campaign_id: Option<String>,
}

/// A subscription as Twitch lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    pub id: String,
    pub status: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub condition: serde_json::Value,
    #[serde(default)]
    pub created_at: String,
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Subscription>,
    #[serde(default)]
    pagination: Pagination,
}

#[derive(Deserialize, Default)]
struct Pagination {
    cursor: Option<String>,
}

impl TwitchClient {
    /// Creates the subscription; Twitch then sends the challenge to the callback.
    pub async fn subscribe_drops(&self, request: &DropsSubscription) -> Result<Subscription, UploadError> {
        let callback = reqwest::Url::parse(&request.callback)
            .map_err(|e| UploadError::Permanent(format!("--callback is not a URL: {e}")))?;
        if callback.scheme() != "https" && !(self.plain_http_allowed() && callback.scheme() == "http") {
            return Err(UploadError::Permanent("--callback must be an https URL (Twitch requires it)".into()));
        }
        let mut condition = serde_json::json!({"organization_id": request.organization_id});
        if let Some(category) = &request.category_id {
            condition["category_id"] = category.clone().into();
        }
        if let Some(campaign) = &request.campaign_id {
            condition["campaign_id"] = campaign.clone().into();
        }
        let body = serde_json::json!({
            "type": SUBSCRIPTION_TYPE,
            "version": "1",
            "condition": condition,
            "transport": {"method": "webhook", "callback": request.callback, "secret": request.secret},
            "is_batching_enabled": true,
        });
        let what = "creating the EventSub subscription";
        let (status, headers, answer) =
            self.helix(Method::POST, "/helix/eventsub/subscriptions", &[], Some(&body), what).await?;
        if status == StatusCode::CONFLICT {
            return Err(UploadError::Permanent(format!(
                "{what}: a subscription with this type and condition exists already (`eventsub list`)"
            )));
        }
        if !status.is_success() {
            return Err(classify(what, status, &headers, &answer, "Twitch refused the subscription"));
        }
        let page: Page = serde_json::from_slice(&answer)
            .map_err(|e| UploadError::transient(format!("{what}: unreadable answer: {e}")))?;
        page.data.into_iter().next().ok_or_else(|| UploadError::transient(format!("{what}: the answer holds none")))
    }

    /// This application's `drop.entitlement.grant` subscriptions.
    pub async fn drops_subscriptions(&self) -> Result<Vec<Subscription>, UploadError> {
        let what = "listing EventSub subscriptions";
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("type", SUBSCRIPTION_TYPE)];
            if let Some(cursor) = after.as_deref() {
                query.push(("after", cursor));
            }
            let (status, headers, answer) =
                self.helix(Method::GET, "/helix/eventsub/subscriptions", &query, None, what).await?;
            if !status.is_success() {
                return Err(classify(what, status, &headers, &answer, "Twitch refused the listing"));
            }
            let page: Page = serde_json::from_slice(&answer)
                .map_err(|e| UploadError::transient(format!("{what}: unreadable answer: {e}")))?;
            all.extend(page.data);
            match page.pagination.cursor.filter(|c| !c.is_empty()) {
                Some(cursor) => after = Some(cursor),
                None => return Ok(all),
            }
        }
        Err(UploadError::transient(format!("{what}: more than {MAX_PAGES} pages")))
    }

    /// Deletes a subscription by id.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), UploadError> {
        let what = "deleting the EventSub subscription";
        let (status, headers, answer) =
            self.helix(Method::DELETE, "/helix/eventsub/subscriptions", &[("id", id)], None, what).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(UploadError::Permanent(format!("{what}: no subscription `{id}`")));
        }
        if !status.is_success() {
            return Err(classify(what, status, &headers, &answer, "Twitch refused the deletion"));
        }
        Ok(())
    }
}
