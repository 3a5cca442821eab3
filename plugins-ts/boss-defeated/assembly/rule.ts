// Rewards everyone watching a broadcaster when `boss_defeated` in the
// broadcaster's E2 game state turns true.
//
// Config: `{ reward = "reward-id" }`, optionally `repeat_by = "boss_kills"`
// (each new value of that state key is a new kill, granted again under its
// own grant key) and `authoritative_only = true` (ignore state published by
// game clients with user tokens, which players could forge).

import { Campaign, Config, GameState, Grants, Json, Kind, Rule, Viewers, register } from "drops-plugin-sdk";
export * from "drops-plugin-sdk/assembly/exports";

/** The state key that marks the event. */
const DEFEATED = "boss_defeated";

function defeated(state: Json): bool {
  const value = state.get(DEFEATED);
  return value.kind == Kind.Bool && value.bool_;
}

class BossDefeated extends Rule {
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["reward", "repeat_by", "authoritative_only"]);
    const reward = config.get("reward").string();
    if (!campaign.hasReward(reward)) {
      return "config.reward: reward `" + reward + "` is not one of the campaign's rewards";
    }
    const repeatBy = config.get("repeat_by");
    if (repeatBy.present && repeatBy.string().trim().length == 0) return "config.repeat_by: must name a state key";
    return null;
  }

  onGameState(config: Config, campaign: Campaign, change: GameState, viewers: Viewers, grants: Grants): void {
    const onlyAuthoritative = config.get("authoritative_only").present && config.get("authoritative_only").bool();
    if (!change.changed(DEFEATED) || (onlyAuthoritative && !change.authoritative)) return;
    const after = change.current();
    if (defeated(change.previous()) || !defeated(after)) return;
    const reward = campaign.rewardIndex(config.get("reward").string());
    const repeatBy = config.get("repeat_by");
    if (!repeatBy.present) {
      for (let v = 0; v < viewers.length; v++) grants.once(v, reward);
      return;
    }
    // Each kill its own grant: named by the broadcaster and the kill's value.
    const key = repeatBy.string();
    const value = after.get(key);
    let grantKey: string;
    if (value.kind == Kind.String) grantKey = change.broadcaster + ":" + key + "=" + value.string_;
    else if (value.exists) grantKey = change.broadcaster + ":" + key + "=" + value.toJson();
    else grantKey = change.broadcaster + ":" + key + "@" + change.minute.toString();
    for (let v = 0; v < viewers.length; v++) grants.keyed(v, reward, grantKey);
  }
}

register(new BossDefeated());
