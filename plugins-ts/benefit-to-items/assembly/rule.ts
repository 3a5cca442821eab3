// Turns a Twitch Drops entitlement into in-game items.
//
// Config:
//
//   [rule.config]
//   daily_cap = 2                      # optional: most entitlements delivered per account per UTC day
//   [rule.config.benefits.b-sword]
//   items = [{ id = "iron-sword", quantity = 1 }]
//   [rule.config.benefits.b-shield]
//   items = [{ id = "gold-shield", quantity = 1 }]
//   requires = ["iron-sword"]          # optional: only to accounts that already received these items
//
// What an account has received is the campaign's state (`got/<account>/<item>`),
// so a conditional drop ("B only after A") follows from the same events on
// every replay.

import { Campaign, Config, Entitlement, EntitlementVerdict, Item, Rule, register, state } from "drops-plugin-sdk";
import { parseJson, takeError } from "drops-plugin-sdk/assembly/json";
export * from "drops-plugin-sdk/assembly/exports";

/** Longest item id accepted in the config (the host's limit on item ids). */
const MAX_ITEM_ID_BYTES = 256;

function gotKey(account: string, item: string): string {
  return "got/" + account + "/" + item;
}

class BenefitToItems extends Rule {
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["benefits", "daily_cap"]);
    const benefits = config.get("benefits");
    if (benefits.length == 0) return "config.benefits: map at least one benefit id to items";
    const cap = config.get("daily_cap");
    if (cap.present && cap.u32() == 0) return "config.daily_cap: must be at least 1 (leave it out for no cap)";
    // In key order, as the Rust rule's BTreeMap reports the first bad one.
    const names = benefits.keys.slice();
    names.sort((a: string, b: string): i32 => (a < b ? -1 : a > b ? 1 : 0));
    for (let b = 0; b < names.length; b++) {
      const benefit = benefits.get(names[b]);
      benefit.onlyKeys(["items", "requires"]);
      const items = benefit.get("items").array();
      if (items.length == 0) return "config.benefits." + names[b] + ".items: at least one item is needed";
      for (let i = 0; i < items.length; i++) {
        items[i].onlyKeys(["id", "quantity"]);
        const at = "config.benefits." + names[b] + ".items[" + i.toString() + "]";
        const bytes = String.UTF8.byteLength(items[i].get("id").string());
        if (bytes == 0 || bytes > MAX_ITEM_ID_BYTES) return at + ".id: 1 to " + MAX_ITEM_ID_BYTES.toString() + " bytes";
        const quantity = items[i].get("quantity");
        if (quantity.exists && quantity.u32() == 0) return at + ".quantity: must be at least 1";
      }
      const requires = benefit.get("requires");
      if (requires.exists) {
        const list = requires.array();
        for (let r = 0; r < list.length; r++) list[r].string();
      }
    }
    return null;
  }

  onEntitlement(config: Config, campaign: Campaign, entitlement: Entitlement): EntitlementVerdict {
    const benefits = config.get("benefits");
    if (!benefits.has(entitlement.benefitId)) {
      return EntitlementVerdict.refuse("benefit `" + entitlement.benefitId + "` is not in the campaign's config");
    }
    const benefit = benefits.get(entitlement.benefitId);
    const account = entitlement.account;
    if (benefit.has("requires")) {
      const requires = benefit.get("requires").array();
      for (let r = 0; r < requires.length; r++) {
        const item = requires[r].string();
        if (state.get(gotKey(account, item)) === null) {
          return EntitlementVerdict.refuse("account has not received `" + item + "` yet");
        }
      }
    }
    const dayKey = "day/" + account;
    // An entitlement of an earlier day than the last one counted (Twitch
    // delivers late, reconciliation later still) counts against the later
    // day: the count never starts again for a day already past.
    const day = <i64>Math.floor(<f64>entitlement.createdAt / 86400.0);
    let countedDay: i64 = 0;
    let delivered: u32 = 0;
    const stored = state.getString(dayKey);
    if (stored !== null) {
      const json = parseJson(stored, dayKey);
      countedDay = json.get("day").i64();
      delivered = json.get("delivered").u32();
      // Unreadable state starts over, as the Rust rule's `unwrap_or_default` does.
      if (takeError() !== null) {
        countedDay = 0;
        delivered = 0;
      }
    }
    if (day > countedDay) {
      countedDay = day;
      delivered = 0;
    }
    const cap = config.get("daily_cap");
    if (cap.present && delivered >= cap.u32()) {
      return EntitlementVerdict.refuse("daily cap of " + cap.u32().toString() + " reached");
    }
    delivered += 1;
    // A refused write (the campaign's state is full) fails the call: its
    // writes are dropped and the host decides the entitlement again later,
    // rather than deliver without the record.
    const refused = state.setString(dayKey, '{"day":' + countedDay.toString() + ',"delivered":' + delivered.toString() + "}");
    if (refused !== null) return EntitlementVerdict.fail(refused);
    const items = benefit.get("items").array();
    const out = new Array<Item>();
    for (let i = 0; i < items.length; i++) {
      const id = items[i].get("id").string();
      const quantity = items[i].get("quantity");
      const error = state.setString(gotKey(account, id), "1");
      if (error !== null) return EntitlementVerdict.fail(error);
      out.push(new Item(id, quantity.exists ? quantity.u32() : 1));
    }
    return EntitlementVerdict.deliver(out);
  }
}

register(new BenefitToItems());
