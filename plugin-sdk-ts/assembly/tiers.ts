// Time-based tiers, shared by rules that grant on watch-time (the Rust SDK's `tiers`).

import { Campaign, Config, Grants, Viewers } from "./index";

/** One tier: `minutes` of campaign watch-time earns `reward`. */
export class Tier {
  minutes: u32;
  reward: string;

  constructor(minutes: u32, reward: string) {
    this.minutes = minutes;
    this.reward = reward;
  }

  /** Reads `[{ minutes, reward }, ...]`; a wrong field fails the call naming it. */
  static list(config: Config): Tier[] {
    const tiers = new Array<Tier>();
    const items = config.array();
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      item.onlyKeys(["minutes", "reward"]);
      tiers.push(new Tier(item.get("minutes").u32(), item.get("reward").string()));
    }
    return tiers;
  }
}

/** Checks tiers: at least one, each at least a minute, each reward the campaign's. */
export function validateTiers(tiers: Tier[], campaign: Campaign): string | null {
  if (tiers.length == 0) return "config.tiers: at least one tier is needed";
  for (let i = 0; i < tiers.length; i++) {
    if (tiers[i].minutes == 0) return "config.tiers[" + i.toString() + "].minutes: must be at least 1";
    if (!campaign.hasReward(tiers[i].reward)) {
      return "config.tiers[" + i.toString() + "].reward: reward `" + tiers[i].reward + "` is not one of the campaign's rewards";
    }
  }
  return null;
}

/**
 * Grants each tier's reward the first time a viewer's watch-time reaches it.
 * A tier is reached by the minute that crosses it; earlier minutes were
 * judged by earlier calls, so each tier is granted once.
 */
export function tierGrants(tiers: Tier[], campaign: Campaign, viewers: Viewers, grants: Grants): void {
  const minutes = new StaticArray<u32>(tiers.length);
  const rewards = new StaticArray<i32>(tiers.length);
  let count = 0;
  for (let i = 0; i < tiers.length; i++) {
    if (!campaign.hasReward(tiers[i].reward)) continue;
    minutes[count] = tiers[i].minutes;
    rewards[count] = campaign.rewards.indexOf(tiers[i].reward);
    count++;
  }
  for (let v = 0; v < viewers.length; v++) {
    if (!viewers.counted(v)) continue;
    const m = viewers.minutes(v);
    for (let t = 0; t < count; t++) {
      if (m == minutes[t]) grants.once(v, rewards[t]);
    }
  }
}
