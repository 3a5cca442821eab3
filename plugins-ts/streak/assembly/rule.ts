// Grants a reward for watching at least `minutes_per_day` minutes on each of
// `days` different UTC days.
//
// Config: `{ minutes_per_day = 30, days = 3, reward = "reward-id" }`.

import { Campaign, Config, Grants, Heartbeat, Rule, Viewers, register, state, viewerId } from "drops-plugin-sdk";
import { parseJson, takeError } from "drops-plugin-sdk/assembly/json";
export * from "drops-plugin-sdk/assembly/exports";

/** What the rule remembers per viewer, stored as the Rust rule stores it (JSON). */
class Streak {
  day: u32 = 0;
  minutesToday: u32 = 0;
  daysDone: u32 = 0;

  static load(key: string): Streak {
    const streak = new Streak();
    const text = state.getString(key);
    if (text === null) return streak;
    const json = parseJson(text, key);
    streak.day = json.get("day").u32();
    streak.minutesToday = json.get("minutes_today").u32();
    streak.daysDone = json.get("days_done").u32();
    // Unreadable state starts over, as the Rust rule's `unwrap_or_default` does.
    if (takeError() !== null) return new Streak();
    return streak;
  }

  save(key: string): void {
    const json = '{"day":' + this.day.toString() + ',"minutes_today":' + this.minutesToday.toString() +
      ',"days_done":' + this.daysDone.toString() + "}";
    state.setString(key, json);
  }
}

class DailyStreak extends Rule {
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["minutes_per_day", "days", "reward"]);
    const perDay = config.get("minutes_per_day").u32();
    if (perDay == 0 || perDay > 1440) return "config.minutes_per_day: must be 1 to 1440";
    if (config.get("days").u32() == 0) return "config.days: must be at least 1";
    const reward = config.get("reward").string();
    if (!campaign.hasReward(reward)) return "config.reward: reward `" + reward + "` is not one of the campaign's rewards";
    return null;
  }

  onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {
    const reward = campaign.rewardIndex(config.get("reward").string());
    const perDay = config.get("minutes_per_day").u32();
    const days = config.get("days").u32();
    const day = heartbeat.minute / 1440;
    // The host counts each viewer-minute once per campaign: `counted` is false
    // for a minute already seen through another channel.
    for (let v = 0; v < viewers.length; v++) {
      if (!viewers.counted(v)) continue;
      const id = viewerId(v);
      if (id === null) continue;
      const key = "viewer:" + id;
      const streak = Streak.load(key);
      if (streak.daysDone >= days || day < streak.day) continue;
      if (day != streak.day) {
        streak.day = day;
        streak.minutesToday = 0;
      }
      streak.minutesToday += 1;
      if (streak.minutesToday == perDay) {
        streak.daysDone += 1;
        if (streak.daysDone == days) grants.once(v, reward);
      }
      streak.save(key);
    }
  }
}

register(new DailyStreak());
