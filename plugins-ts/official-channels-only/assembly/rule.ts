// Grants a reward for watching the studio's official channels only, at most
// `daily_cap` grants per UTC day (Twitch's advice against farming: reward on
// your own channel, and control the campaign's pace day by day).
//
// Config: `{ channels = ["broadcaster-id"], minutes = 15, reward = "reward-id", daily_cap = 1000 }`.

import { Campaign, Config, Grants, Heartbeat, Rule, Viewers, register, state, viewerId } from "drops-plugin-sdk";
import { parseJson, takeError } from "drops-plugin-sdk/assembly/json";
export * from "drops-plugin-sdk/assembly/exports";

/** What the rule remembers per viewer, stored as the Rust rule stores it (JSON). */
class Progress {
  minutes: u32 = 0;
  lastMinute: u32 = 0;
  granted: bool = false;

  static load(key: string): Progress {
    const progress = new Progress();
    const text = state.getString(key);
    if (text === null) return progress;
    const json = parseJson(text, key);
    progress.minutes = json.get("minutes").u32();
    progress.lastMinute = json.get("last_minute").u32();
    progress.granted = json.get("granted").bool();
    // Unreadable state starts over, as the Rust rule's `unwrap_or_default` does.
    if (takeError() !== null) return new Progress();
    return progress;
  }

  save(key: string): void {
    state.setString(key, '{"minutes":' + this.minutes.toString() + ',"last_minute":' + this.lastMinute.toString() +
      ',"granted":' + (this.granted ? "true" : "false") + "}");
  }
}

function channels(config: Config): string[] {
  const out = new Array<string>();
  const list = config.get("channels").array();
  for (let i = 0; i < list.length; i++) out.push(list[i].string());
  return out;
}

class OfficialChannelsOnly extends Rule {
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["channels", "minutes", "reward", "daily_cap"]);
    if (channels(config).length == 0) return "config.channels: name at least one broadcaster id";
    if (config.get("minutes").u32() == 0) return "config.minutes: must be at least 1";
    config.get("daily_cap").u32();
    const reward = config.get("reward").string();
    if (!campaign.hasReward(reward)) return "config.reward: reward `" + reward + "` is not one of the campaign's rewards";
    return null;
  }

  onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {
    if (!channels(config).includes(heartbeat.broadcaster)) return;
    const reward = campaign.rewardIndex(config.get("reward").string());
    const minutes = config.get("minutes").u32();
    const cap = config.get("daily_cap").u32();
    const dayKey = "granted-on-day:" + (heartbeat.minute / 1440).toString();
    let grantedToday = <u32>state.getU64(dayKey, 0);
    for (let v = 0; v < viewers.length; v++) {
      const id = viewerId(v);
      if (id === null) continue;
      const key = "viewer:" + id;
      const progress = Progress.load(key);
      // Count each minute once, however many official channels report it.
      if (progress.minutes > 0 && heartbeat.minute <= progress.lastMinute) continue;
      progress.minutes += 1;
      progress.lastMinute = heartbeat.minute;
      if (!progress.granted && progress.minutes >= minutes && grantedToday < cap) {
        progress.granted = true;
        grantedToday += 1;
        grants.once(v, reward);
      }
      progress.save(key);
    }
    state.setU64(dayKey, grantedToday);
  }
}

register(new OfficialChannelsOnly());
