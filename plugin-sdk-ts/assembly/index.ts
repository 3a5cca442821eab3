// Write drops-host reward rules in TypeScript (AssemblyScript).
//
// A rule is a class extending `Rule` that overrides the hooks it uses, and
// `register(new MyRule())` at the top of its file; `export * from
// "drops-plugin-sdk/assembly/exports"` makes it a plugin the host loads:
//
//   import { Rule, Campaign, Config, Heartbeat, Viewers, Grants, register } from "drops-plugin-sdk";
//   export * from "drops-plugin-sdk/assembly/exports";
//
//   class After extends Rule {
//     onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {
//       const reward = campaign.rewardIndex(config.get("reward").string());
//       const minutes = config.get("minutes").u32();
//       for (let v = 0; v < viewers.length; v++) {
//         if (viewers.minutes(v) >= minutes) grants.once(v, reward);
//       }
//     }
//   }
//   register(new After());
//
// Build with `npm run build` (asc with the SDK's transform, see
// package.json); the `.wasm` goes into the host's `rules/plugins/`.

import * as abi from "./abi";
import { Json, parseJson, reportError } from "./json";

export { Json, Kind } from "./json";
export { INTERFACE_VERSION } from "./abi";

/** A string the host passed: UTF-8 bytes at `ptr`. */
export function readString(ptr: usize, len: usize): string {
  return String.UTF8.decodeUnsafe(ptr, len, false);
}

function readStringAt(field: usize): string {
  return readString(load<usize>(field), load<usize>(field, 4));
}

/** A campaign's rule config: its `[rule] config` table, as JSON read by path (`config.tiers[0].minutes`). */
export type Config = Json;

/** The campaign a call is about. */
export class Campaign {
  /** Twitch campaign id. */
  id: string;
  /** Reward ids in the order of the campaign file; a grant names one by index. */
  rewards: string[];
  /** The campaign's `[rule] config` table, as JSON text. */
  configText: string;

  constructor(id: string, rewards: string[], configText: string) {
    this.id = id;
    this.rewards = rewards;
    this.configText = configText;
  }

  /** Reads a campaign record at `ptr`. */
  static read(ptr: usize): Campaign {
    const rewards = new Array<string>();
    const list = load<usize>(ptr + abi.Campaign.REWARDS);
    const count = load<usize>(ptr + abi.Campaign.REWARDS, 4);
    for (let i: usize = 0; i < count; i++) rewards.push(readStringAt(list + i * 8));
    return new Campaign(readStringAt(ptr + abi.Campaign.ID), rewards, readStringAt(ptr + abi.Campaign.CONFIG));
  }

  /** The config, parsed: read fields with `get`, `at`, `u32()`, `string()`; a wrong one fails the call naming it. */
  config(): Config {
    return parseJson(this.configText, "config");
  }

  /**
   * The index of reward `id`, for a grant. An id that is not the campaign's
   * is reported (the call fails naming it) and gives -1.
   */
  rewardIndex(id: string): i32 {
    const index = this.rewards.indexOf(id);
    if (index < 0) reportError("reward `" + id + "` is not one of the campaign's rewards");
    return index;
  }

  /** Whether `id` is one of the campaign's rewards (nothing is reported). */
  hasReward(id: string): bool {
    return this.rewards.includes(id);
  }
}

/** One VHS heartbeat: a broadcaster's channel during one minute. */
export class Heartbeat {
  broadcaster: string;
  game: string;
  /** The minute watched, in minutes since the Unix epoch (event time). */
  minute: u32;
  /** Viewers Twitch counted in the channel, linked or not. */
  viewersReported: u32;
  /** The minute the broadcaster's E2 game state last changed; -1 when the host has none. */
  stateChanged: i64;

  constructor(broadcaster: string, game: string, minute: u32, viewersReported: u32, stateChanged: i64 = -1) {
    this.broadcaster = broadcaster;
    this.game = game;
    this.minute = minute;
    this.viewersReported = viewersReported;
    this.stateChanged = stateChanged;
  }

  /** Reads a heartbeat record at `ptr`. */
  static read(ptr: usize): Heartbeat {
    const changed: i64 = load<u8>(ptr + abi.Heartbeat.STATE_CHANGED) != 0
      ? <i64>load<u32>(ptr + abi.Heartbeat.STATE_CHANGED_PAYLOAD)
      : -1;
    return new Heartbeat(
      readStringAt(ptr + abi.Heartbeat.BROADCASTER),
      readStringAt(ptr + abi.Heartbeat.GAME),
      load<u32>(ptr + abi.Heartbeat.MINUTE),
      load<u32>(ptr + abi.Heartbeat.VIEWERS_REPORTED),
      changed,
    );
  }
}

/** A change of a broadcaster's E2 game state. */
export class GameState {
  /** The broadcaster's game account id (as heartbeats and manifests name them). */
  broadcaster: string = "";
  /** The broadcaster's Twitch user id (as E2 names them). */
  twitchUserId: string = "";
  /** Twitch game (category) id the state was published for. */
  gameId: string = "";
  /** When the host received the change, in minutes since the Unix epoch. */
  minute: u32 = 0;
  /** The state before the change, as JSON text (`{}` when there was none). */
  previousText: string = "{}";
  /** The state after the change, as JSON text. */
  currentText: string = "{}";
  /** Top-level keys whose values differ between the two. */
  changedKeys: string[] = [];
  /** True when an app token (a game server) published it; false for a user token, which a player could forge. */
  authoritative: bool = false;

  /** Reads a game-state record at `ptr`. */
  static read(ptr: usize): GameState {
    const s = new GameState();
    s.broadcaster = readStringAt(ptr + abi.GameState.BROADCASTER);
    s.twitchUserId = readStringAt(ptr + abi.GameState.TWITCH_USER_ID);
    s.gameId = readStringAt(ptr + abi.GameState.GAME_ID);
    s.minute = load<u32>(ptr + abi.GameState.MINUTE);
    s.previousText = readStringAt(ptr + abi.GameState.PREVIOUS);
    s.currentText = readStringAt(ptr + abi.GameState.CURRENT);
    const list = load<usize>(ptr + abi.GameState.CHANGED);
    const count = load<usize>(ptr + abi.GameState.CHANGED, 4);
    for (let i: usize = 0; i < count; i++) s.changedKeys.push(readStringAt(list + i * 8));
    s.authoritative = load<u8>(ptr + abi.GameState.AUTHORITATIVE) != 0;
    return s;
  }

  /** The state before the change. */
  previous(): Json {
    return parseJson(this.previousText, "previous");
  }

  /** The state after the change. */
  current(): Json {
    return parseJson(this.currentText, "current");
  }

  /** Whether top-level `key` changed. */
  changed(key: string): bool {
    return this.changedKeys.includes(key);
  }
}

/** A Twitch Drops entitlement (EventSub `drop.entitlement.grant`). */
export class Entitlement {
  /** Twitch's entitlement id (what is marked FULFILLED). */
  id: string = "";
  /** The drop's benefit id: what the viewer earned. */
  benefitId: string = "";
  /** The Twitch Drops campaign id. */
  campaignId: string = "";
  /** The Twitch category (game) id. */
  categoryId: string = "";
  /** The viewer's Twitch user id. */
  userId: string = "";
  /** The viewer's Twitch login. */
  userLogin: string = "";
  /** When Twitch created the entitlement, in seconds since the Unix epoch. */
  createdAt: i64 = 0;
  /** The game account the viewer linked. */
  account: string = "";

  /** Reads an entitlement record at `ptr`. */
  static read(ptr: usize): Entitlement {
    const e = new Entitlement();
    e.id = readStringAt(ptr + abi.Entitlement.ID);
    e.benefitId = readStringAt(ptr + abi.Entitlement.BENEFIT_ID);
    e.campaignId = readStringAt(ptr + abi.Entitlement.CAMPAIGN_ID);
    e.categoryId = readStringAt(ptr + abi.Entitlement.CATEGORY_ID);
    e.userId = readStringAt(ptr + abi.Entitlement.USER_ID);
    e.userLogin = readStringAt(ptr + abi.Entitlement.USER_LOGIN);
    e.createdAt = load<i64>(ptr + abi.Entitlement.CREATED_AT);
    e.account = readStringAt(ptr + abi.Entitlement.ACCOUNT);
    return e;
  }
}

/**
 * The linked viewers of a call and their progress in the campaign, read in
 * place from the lists the host passed. Viewer `v` (0 to `length - 1`) is
 * the handle a grant names.
 */
export class Viewers {
  private minutesPtr: usize;
  private countedPtr: usize;
  private countedWords: i32;
  /** How many viewers the call has. */
  readonly length: i32;

  constructor(minutesPtr: usize, length: i32, countedPtr: usize, countedWords: i32) {
    this.minutesPtr = minutesPtr;
    this.length = length;
    this.countedPtr = countedPtr;
    this.countedWords = countedWords;
  }

  /** Reads a viewers record at `ptr`. */
  static read(ptr: usize): Viewers {
    return new Viewers(
      load<usize>(ptr + abi.Viewers.MINUTES),
      load<i32>(ptr + abi.Viewers.MINUTES, 4),
      load<usize>(ptr + abi.Viewers.COUNTED),
      load<i32>(ptr + abi.Viewers.COUNTED, 4),
    );
  }

  /** Viewers for tests: each one's minutes and whether this minute counted for them. */
  static of(minutes: u32[], counted: bool[]): Viewers {
    const words = (minutes.length + 31) >> 5;
    const minutesPtr = heap.alloc(<usize>minutes.length * 4);
    const countedPtr = heap.alloc(<usize>words * 4);
    memory.fill(countedPtr, 0, <usize>words * 4);
    for (let i = 0; i < minutes.length; i++) {
      store<u32>(minutesPtr + <usize>i * 4, minutes[i]);
      if (i < counted.length && counted[i]) {
        const word = countedPtr + (<usize>(i >> 5) << 2);
        store<u32>(word, load<u32>(word) | (1 << (i & 31)));
      }
    }
    return new Viewers(minutesPtr, minutes.length, countedPtr, words);
  }

  /** Shows every viewer's progress as it was before this heartbeat (when its minutes do not count). */
  uncount(): void {
    for (let v = 0; v < this.length; v++) {
      if (this.counted(v)) store<u32>(this.minutesPtr + (<usize>v << 2), this.minutes(v) - 1);
    }
    memory.fill(this.countedPtr, 0, <usize>this.countedWords << 2);
  }

  /**
   * Campaign watch-time of viewer `v` in minutes. In `onHeartbeat` it
   * includes this heartbeat's minute when that minute is new for the viewer.
   */
  @inline minutes(v: i32): u32 {
    return <u32>v < <u32>this.length ? load<u32>(this.minutesPtr + (<usize>v << 2)) : 0;
  }

  /**
   * Whether this heartbeat's minute is new for viewer `v` (not already
   * counted from another channel or a retry); always false in `onGameState`.
   */
  @inline counted(v: i32): bool {
    const word = v >> 5;
    if (<u32>v >= <u32>this.length || word >= this.countedWords) return false;
    return (load<u32>(this.countedPtr + (<usize>word << 2)) & (1 << (v & 31))) != 0;
  }
}

/** The grants a call makes, written straight into the layout the host reads. */
export class Grants {
  ptr: usize = 0;
  count: i32 = 0;
  private capacity: i32 = 0;

  private push(viewer: i32, reward: i32): usize {
    if (this.count == this.capacity) {
      this.capacity = this.capacity == 0 ? 64 : this.capacity * 2;
      this.ptr = this.ptr == 0
        ? heap.alloc(<usize>this.capacity * abi.Grant.SIZE)
        : heap.realloc(this.ptr, <usize>this.capacity * abi.Grant.SIZE);
    }
    const at = this.ptr + <usize>this.count * abi.Grant.SIZE;
    store<u32>(at + abi.Grant.VIEWER, viewer);
    store<u32>(at + abi.Grant.REWARD, reward);
    store<u8>(at + abi.Grant.KEY, 0);
    this.count++;
    return at;
  }

  /** Grants reward `reward` (an index from `campaign.rewardIndex`) to viewer `viewer`, at most once ever. */
  once(viewer: i32, reward: i32): void {
    if (reward < 0) return;
    this.push(viewer, reward);
  }

  /** A repeatable grant: made once per distinct `key` (a day, a match, a boss kill). */
  keyed(viewer: i32, reward: i32, key: string): void {
    if (reward < 0) return;
    const at = this.push(viewer, reward);
    const bytes = String.UTF8.encode(key, false);
    store<u8>(at + abi.Grant.KEY, 1);
    store<usize>(at + abi.Grant.KEY_PAYLOAD, changetype<usize>(bytes));
    store<usize>(at + abi.Grant.KEY_PAYLOAD, <usize>bytes.byteLength, 4);
  }

  /** The viewer of grant `i` (for tests). */
  viewer(i: i32): i32 {
    return load<i32>(this.ptr + <usize>i * abi.Grant.SIZE + abi.Grant.VIEWER);
  }

  /** The reward index of grant `i` (for tests). */
  reward(i: i32): i32 {
    return load<i32>(this.ptr + <usize>i * abi.Grant.SIZE + abi.Grant.REWARD);
  }

  /** The key of grant `i`, or null for a once-only grant (for tests). */
  key(i: i32): string | null {
    const at = this.ptr + <usize>i * abi.Grant.SIZE;
    if (load<u8>(at + abi.Grant.KEY) == 0) return null;
    return readStringAt(at + abi.Grant.KEY_PAYLOAD);
  }
}

/** An in-game item to deliver. */
export class Item {
  /** The game's item id. */
  id: string;
  /** How many (at least 1). */
  quantity: u32;

  constructor(id: string, quantity: u32) {
    this.id = id;
    this.quantity = quantity;
  }
}

/** What a rule decides for an entitlement: deliver items, refuse, or fail the call (decided again later). */
export class EntitlementVerdict {
  /** Items to deliver; the host marks the entitlement FULFILLED once the studio's sink confirms them. */
  items: Item[] = [];
  /** Set for a refusal: the reason (final; the entitlement stays CLAIMED). */
  refusal: string | null = null;
  /** Set for a failed call: its state writes are dropped and it is decided again later. */
  error: string | null = null;

  /** Deliver `items`. */
  static deliver(items: Item[]): EntitlementVerdict {
    const v = new EntitlementVerdict();
    v.items = items;
    return v;
  }

  /** Deliver nothing, for `reason`. */
  static refuse(reason: string): EntitlementVerdict {
    const v = new EntitlementVerdict();
    v.refusal = reason;
    return v;
  }

  /** Not a decision: the call fails with `message` and is tried again later. */
  static fail(message: string): EntitlementVerdict {
    const v = new EntitlementVerdict();
    v.error = message;
    return v;
  }
}

/**
 * A reward rule. Override the hooks the rule uses; each has a default.
 * Reading a config field of the wrong type fails the call naming the field,
 * so `validate` needs to check only what types cannot say.
 */
export class Rule {
  /** Runs when a campaign loads: checks the config beyond its shape; return an error naming the field, or null. */
  validate(config: Config, campaign: Campaign): string | null {
    return null;
  }

  /**
   * Whether a heartbeat's new minutes count toward the campaign's watch-time.
   * When it says no, `onHeartbeat` sees every viewer's progress as it was
   * before the heartbeat, and the host stores that.
   */
  minutesCount(config: Config, campaign: Campaign, heartbeat: Heartbeat): bool {
    return true;
  }

  /** Decides the grants for one heartbeat of a campaign. */
  onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {}

  /** Decides the grants for a change of a broadcaster's game state; `viewers` are the ones watching now. */
  onGameState(config: Config, campaign: Campaign, change: GameState, viewers: Viewers, grants: Grants): void {}

  /** Decides the in-game items for a Twitch Drops entitlement, once its viewer has a linked game account. */
  onEntitlement(config: Config, campaign: Campaign, entitlement: Entitlement): EntitlementVerdict {
    return EntitlementVerdict.refuse("this rule decides no entitlements");
  }
}

let registered: Rule = new Rule();

/** Makes `rule` the plugin's rule: call once, at the top level of the rule's file. */
export function register(rule: Rule): void {
  registered = rule;
}

/** The registered rule (for the SDK's exports). */
export function theRule(): Rule {
  return registered;
}

/** The host's log, tagged with the plugin and campaign. */
export namespace log {
  function write(level: i32, message: string): void {
    const bytes = String.UTF8.encode(message, false);
    abi.host_log(level, changetype<usize>(bytes), <usize>bytes.byteLength);
  }

  /** A debug line. */
  export function debug(message: string): void {
    write(abi.Level.DEBUG, message);
  }

  /** An info line. */
  export function info(message: string): void {
    write(abi.Level.INFO, message);
  }

  /** A warning. */
  export function warn(message: string): void {
    write(abi.Level.WARN, message);
  }

  /** An error. */
  export function error(message: string): void {
    write(abi.Level.ERROR, message);
  }
}

/** A return area for an import's result, aligned as the glue says. */
function returnArea(size: usize): usize {
  return heap.alloc(size);
}

/** The Twitch user id of the viewer at `handle` in the current call, or null. */
export function viewerId(handle: i32): string | null {
  const area = returnArea(abi.HostViewerId.RESULT_SIZE);
  abi.host_viewer_id(handle, area);
  if (load<u8>(area) == 0) return null;
  return readStringAt(area + abi.HostViewerId.RESULT_PAYLOAD);
}

/**
 * The campaign's state, kept by the host with the events it follows from
 * (so a replay rebuilds it). Keys up to 256 bytes, values up to 64 KiB;
 * writes of a call that fails are discarded.
 */
export namespace state {
  /** The bytes stored under `key`, or null. */
  export function get(key: string): Uint8Array | null {
    const k = String.UTF8.encode(key, false);
    const area = returnArea(abi.HostStateGet.RESULT_SIZE);
    abi.host_state_get(changetype<usize>(k), <usize>k.byteLength, area);
    if (load<u8>(area) == 0) return null;
    const ptr = load<usize>(area + abi.HostStateGet.RESULT_PAYLOAD);
    const len = load<i32>(area + abi.HostStateGet.RESULT_PAYLOAD, 4);
    const out = new Uint8Array(len);
    memory.copy(out.dataStart, ptr, <usize>len);
    return out;
  }

  /** Stores `value` under `key`; an error (a value too big, too many keys) is returned as text. */
  export function set(key: string, value: Uint8Array): string | null {
    const k = String.UTF8.encode(key, false);
    const area = returnArea(abi.HostStateSet.RESULT_SIZE);
    abi.host_state_set(changetype<usize>(k), <usize>k.byteLength, value.dataStart, <usize>value.length, area);
    if (load<u8>(area) == 0) return null;
    return readStringAt(area + abi.HostStateSet.RESULT_PAYLOAD);
  }

  /** Removes `key`. */
  export function remove(key: string): void {
    const k = String.UTF8.encode(key, false);
    abi.host_state_delete(changetype<usize>(k), <usize>k.byteLength);
  }

  /** The text stored under `key`, or null. */
  export function getString(key: string): string | null {
    const bytes = get(key);
    return bytes === null ? null : String.UTF8.decode(bytes.buffer, false);
  }

  /** Stores `value` as UTF-8 text under `key`. */
  export function setString(key: string, value: string): string | null {
    return set(key, Uint8Array.wrap(String.UTF8.encode(value, false)));
  }

  /** The whole number stored under `key` (as text, the Rust SDK's JSON), or `fallback`. */
  export function getU64(key: string, fallback: u64 = 0): u64 {
    const text = getString(key);
    if (text === null || text.length == 0) return fallback;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return fallback;
    }
    return U64.parseInt(text, 10);
  }

  /** Stores a whole number under `key`, as text (JSON, as the Rust SDK writes it). */
  export function setU64(key: string, value: u64): string | null {
    return setString(key, value.toString());
  }
}
