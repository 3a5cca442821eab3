// Watch-time tiers that count a minute only while the broadcaster is really
// playing: their E2 game state changed within the last `active_within_minutes`.
// Against farming with streams left on a menu, a static image or a replay.
//
// Config: `{ active_within_minutes = 5, tiers = [ { minutes = 30, reward = "reward-id" }, ... ] }`.

import { Campaign, Config, Grants, Heartbeat, Rule, Viewers, register } from "drops-plugin-sdk";
import { Tier, tierGrants, validateTiers } from "drops-plugin-sdk/assembly/tiers";
export * from "drops-plugin-sdk/assembly/exports";

class ActivePlayOnly extends Rule {
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["active_within_minutes", "tiers"]);
    if (config.get("active_within_minutes").u32() == 0) return "config.active_within_minutes: must be at least 1";
    return validateTiers(Tier.list(config.get("tiers")), campaign);
  }

  minutesCount(config: Config, campaign: Campaign, heartbeat: Heartbeat): bool {
    // No game state at all: nothing shows the broadcaster is playing. A
    // change far from the heartbeat's minute, before or after, says nothing
    // about that minute either.
    if (heartbeat.stateChanged < 0) return false;
    const distance = abs<i64>(<i64>heartbeat.minute - heartbeat.stateChanged);
    return distance < <i64>config.get("active_within_minutes").u32();
  }

  onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {
    tierGrants(Tier.list(config.get("tiers")), campaign, viewers, grants);
  }
}

register(new ActivePlayOnly());
