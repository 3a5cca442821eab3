// Grants a reward the first time a viewer's campaign watch-time reaches a tier.
//
// Config: `{ tiers = [ { minutes = 30, reward = "reward-id" }, ... ] }`.

import { Campaign, Config, Grants, Heartbeat, Rule, Viewers, register } from "drops-plugin-sdk";
import { Tier, tierGrants, validateTiers } from "drops-plugin-sdk/assembly/tiers";
export * from "drops-plugin-sdk/assembly/exports";

class WatchTimeTiers extends Rule {
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["tiers"]);
    return validateTiers(Tier.list(config.get("tiers")), campaign);
  }

  onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {
    tierGrants(Tier.list(config.get("tiers")), campaign, viewers, grants);
  }
}

register(new WatchTimeTiers());
