//! Turns a Twitch Drops entitlement into in-game items.
//!
//! Config:
//!
//! ```toml
//! [rule.config]
//! daily_cap = 2                      # optional: most entitlements delivered per account per UTC day
//! [rule.config.benefits.b-sword]
//! items = [{ id = "iron-sword", quantity = 1 }]
//! [rule.config.benefits.b-shield]
//! items = [{ id = "gold-shield", quantity = 1 }]
//! requires = ["iron-sword"]          # optional: only to accounts that already received these items
//! ```
//!
//! What an account has received is the campaign's state (`got/<account>/<item>`),
//! so a conditional drop ("B only after A") follows from the same events on
//! every replay.

use std::collections::BTreeMap;

use drops_plugin_sdk::{state, Campaign, Entitlement, EntitlementVerdict, Item, Rule};
use serde::Deserialize;

/// Longest item id accepted in the config (the host's limit on item ids).
const MAX_ITEM_ID_BYTES: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Twitch benefit id → what it is worth in the game.
    pub benefits: BTreeMap<String, Benefit>,
    #[serde(default)]
    pub daily_cap: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benefit {
    pub items: Vec<ItemConfig>,
    /// Items the account must already have received from this campaign.
    #[serde(default)]
    pub requires: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemConfig {
    pub id: String,
    #[serde(default = "one")]
    pub quantity: u32,
}

fn one() -> u32 {
    1
}

/// How many entitlements an account was delivered on one UTC day.
#[derive(Debug, Default, serde::Serialize, Deserialize)]
struct Day {
    day: i64,
    delivered: u32,
}

pub struct BenefitToItems;

impl Rule for BenefitToItems {
    type Config = Config;

    fn validate(config: &Config, _campaign: &Campaign) -> Result<(), String> {
        if config.benefits.is_empty() {
            return Err("config.benefits: map at least one benefit id to items".into());
        }
        if config.daily_cap == Some(0) {
            return Err("config.daily_cap: must be at least 1 (leave it out for no cap)".into());
        }
        for (benefit, def) in &config.benefits {
            if def.items.is_empty() {
                return Err(format!("config.benefits.{benefit}.items: at least one item is needed"));
            }
            for (i, item) in def.items.iter().enumerate() {
                if item.id.is_empty() || item.id.len() > MAX_ITEM_ID_BYTES {
                    return Err(format!("config.benefits.{benefit}.items[{i}].id: 1 to {MAX_ITEM_ID_BYTES} bytes"));
                }
                if item.quantity == 0 {
                    return Err(format!("config.benefits.{benefit}.items[{i}].quantity: must be at least 1"));
                }
            }
        }
        Ok(())
    }

    fn on_entitlement(
        config: &Config,
        _campaign: &Campaign,
        entitlement: &Entitlement,
    ) -> Result<EntitlementVerdict, String> {
        let Some(benefit) = config.benefits.get(&entitlement.benefit_id) else {
            return Ok(EntitlementVerdict::Refuse(format!(
                "benefit `{}` is not in the campaign's config",
                entitlement.benefit_id
            )));
        };
        let account = &entitlement.account;
        if let Some(missing) = benefit.requires.iter().find(|item| state::get(&got_key(account, item)).is_none()) {
            return Ok(EntitlementVerdict::Refuse(format!("account has not received `{missing}` yet")));
        }
        let day_key = format!("day/{account}");
        // An entitlement of an earlier day than the last one counted (Twitch
        // delivers late, reconciliation later still) counts against the later
        // day: the count never starts again for a day already past.
        let day = entitlement.created_at.div_euclid(86_400);
        let mut counted: Day = state::get_json(&day_key).unwrap_or_default();
        if day > counted.day {
            counted = Day { day, delivered: 0 };
        }
        if let Some(cap) = config.daily_cap {
            if counted.delivered >= cap {
                return Ok(EntitlementVerdict::Refuse(format!("daily cap of {cap} reached")));
            }
        }
        counted.delivered += 1;
        // A refused write (the campaign's state is full) fails the call: its
        // writes are dropped and the host decides the entitlement again later,
        // rather than deliver without the record.
        state::set_json(&day_key, &counted)?;
        for item in &benefit.items {
            state::set(&got_key(account, &item.id), b"1")?;
        }
        Ok(EntitlementVerdict::Deliver(benefit.items.iter().map(|i| Item::new(i.id.clone(), i.quantity)).collect()))
    }
}

fn got_key(account: &str, item: &str) -> String {
    format!("got/{account}/{item}")
}

drops_plugin_sdk::export_rule!(BenefitToItems);

#[cfg(test)]
mod tests {
    use super::*;
    use drops_plugin_sdk::testing::{clear_state, entitlement};

    const DAY: i64 = 86_400;

    fn config(text: &str) -> Config {
        serde_json::from_str(text).unwrap()
    }

    fn campaign() -> Campaign {
        Campaign::new("campaign", &["b-sword", "b-shield"], "{}")
    }

    fn decide(config: &Config, benefit: &str, account: &str, at: i64) -> EntitlementVerdict {
        BenefitToItems::on_entitlement(config, &campaign(), &entitlement("e", benefit, account, at)).unwrap()
    }

    #[test]
    fn a_benefit_becomes_its_items() {
        clear_state();
        let c = config(r#"{"benefits":{"b-sword":{"items":[{"id":"iron-sword"},{"id":"gold","quantity":50}]}}}"#);
        assert_eq!(
            decide(&c, "b-sword", "acc-1", DAY),
            EntitlementVerdict::Deliver(vec![Item::new("iron-sword", 1), Item::new("gold", 50)])
        );
        assert!(matches!(decide(&c, "b-other", "acc-1", DAY), EntitlementVerdict::Refuse(r) if r.contains("b-other")));
    }

    #[test]
    fn b_only_after_a() {
        clear_state();
        let c = config(
            r#"{"benefits":{"b-sword":{"items":[{"id":"iron-sword"}]},
                "b-shield":{"items":[{"id":"gold-shield"}],"requires":["iron-sword"]}}}"#,
        );
        assert!(
            matches!(decide(&c, "b-shield", "acc-1", DAY), EntitlementVerdict::Refuse(r) if r.contains("iron-sword"))
        );
        assert!(matches!(decide(&c, "b-sword", "acc-1", DAY), EntitlementVerdict::Deliver(_)));
        assert!(matches!(decide(&c, "b-shield", "acc-1", DAY), EntitlementVerdict::Deliver(_)));
        assert!(matches!(decide(&c, "b-shield", "acc-2", DAY), EntitlementVerdict::Refuse(_)));
    }

    #[test]
    fn the_daily_cap_counts_per_account_and_utc_day() {
        clear_state();
        let c = config(r#"{"benefits":{"b-sword":{"items":[{"id":"s"}]}},"daily_cap":2}"#);
        assert!(matches!(decide(&c, "b-sword", "acc-1", DAY), EntitlementVerdict::Deliver(_)));
        assert!(matches!(decide(&c, "b-sword", "acc-1", DAY + 10), EntitlementVerdict::Deliver(_)));
        assert!(
            matches!(decide(&c, "b-sword", "acc-1", DAY + 20), EntitlementVerdict::Refuse(r) if r.contains("daily cap"))
        );
        assert!(matches!(decide(&c, "b-sword", "acc-2", DAY + 20), EntitlementVerdict::Deliver(_)));
        assert!(matches!(decide(&c, "b-sword", "acc-1", 2 * DAY), EntitlementVerdict::Deliver(_)));
        // A late one of the day before counts against the later day: no fresh count for a past day.
        assert!(matches!(decide(&c, "b-sword", "acc-1", DAY + 30), EntitlementVerdict::Deliver(_)));
        assert!(matches!(decide(&c, "b-sword", "acc-1", DAY + 40), EntitlementVerdict::Refuse(_)));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |text: &str| BenefitToItems::validate(&config(text), &campaign()).unwrap_err();
        assert!(err(r#"{"benefits":{}}"#).contains("config.benefits"));
        assert!(err(r#"{"benefits":{"b":{"items":[]}}}"#).contains("config.benefits.b.items"));
        assert!(err(r#"{"benefits":{"b":{"items":[{"id":"x","quantity":0}]}}}"#).contains("quantity"));
        assert!(err(r#"{"benefits":{"b":{"items":[{"id":"x"}]}},"daily_cap":0}"#).contains("daily_cap"));
    }
}
