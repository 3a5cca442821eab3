//! Account links: which game account a Twitch user is. E2 names broadcasters
//! by Twitch user id; heartbeats and manifests by game account id.

use serde::{Deserialize, Serialize};

use super::ids::Id;

/// One link; both ids follow the rule every id follows ([`super::check_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountLink {
    #[schema(value_type = String)]
    pub twitch_user_id: Id,
    #[schema(value_type = String)]
    pub game_account_id: Id,
}
