// The plugin's canonical-ABI entry points: what the host calls. A rule's
// file re-exports them (`export * from "drops-plugin-sdk/assembly/exports"`);
// the SDK's compiler transform (transform.mjs) gives each its interface name
// (`drops:rules/rule@0.4.0#on-heartbeat`, from abi.json) and checks its
// signature against the one generated from rules.wit.
//
// Each call runs in a fresh instance, so memory is never freed: the stub
// runtime's bump allocator is all a call needs.

import * as abi from "./abi";
import { Campaign, Entitlement, EntitlementVerdict, GameState, Grants, Heartbeat, Viewers, log, theRule } from "./index";
import { takeError } from "./json";

/** The canonical ABI's allocator: the host asks it for room for arguments. */
export function cabi_realloc(old: usize, oldSize: usize, align: usize, newSize: usize): usize {
  // The stub allocator aligns every block to 16 bytes, more than any type here needs.
  return old == 0 ? heap.alloc(newSize) : heap.realloc(old, newSize);
}

function area(size: usize): usize {
  const at = heap.alloc(size);
  memory.fill(at, 0, size);
  return at;
}

/** Writes a string into a (pointer, length) pair at `at`. */
function storeString(at: usize, text: string): void {
  const bytes = String.UTF8.encode(text, false);
  store<usize>(at, changetype<usize>(bytes));
  store<usize>(at, <usize>bytes.byteLength, 4);
}

/** A result area holding `err(message)`. */
function failed(size: usize, payload: usize, message: string): usize {
  const at = area(size);
  store<u8>(at, 1);
  storeString(at + payload, message);
  return at;
}

/** Called by AssemblyScript's runtime on `assert` and failed checks: logged, then a trap. */
export function abort(message: string | null, file: string | null, line: u32, column: u32): void {
  const where = (file === null ? "?" : file) + ":" + line.toString() + ":" + column.toString();
  log.error("abort: " + (message === null ? "" : message) + " at " + where);
  unreachable();
}

export function __drops_validate_config(p0: usize, p1: usize, p2: usize, p3: usize, p4: usize, p5: usize): usize {
  // The campaign arrives flat; its fields are (pointer, length) pairs in record order.
  const record = area(abi.Campaign.SIZE);
  store<usize>(record + abi.Campaign.ID, p0);
  store<usize>(record + abi.Campaign.ID, p1, 4);
  store<usize>(record + abi.Campaign.REWARDS, p2);
  store<usize>(record + abi.Campaign.REWARDS, p3, 4);
  store<usize>(record + abi.Campaign.CONFIG, p4);
  store<usize>(record + abi.Campaign.CONFIG, p5, 4);
  const campaign = Campaign.read(record);
  takeError();
  const config = campaign.config();
  let error = takeError();
  if (error === null) {
    error = theRule().validate(config, campaign);
    // A field of the wrong type, read first, explains what validate then said.
    const read = takeError();
    if (read !== null) error = read;
  }
  if (error !== null) return failed(abi.RuleValidateConfig.RESULT_SIZE, abi.RuleValidateConfig.RESULT_PAYLOAD, error);
  return area(abi.RuleValidateConfig.RESULT_SIZE);
}

export function __drops_on_heartbeat(args: usize): usize {
  takeError();
  const campaign = Campaign.read(args + abi.RuleOnHeartbeat.CAMPAIGN);
  const heartbeat = Heartbeat.read(args + abi.RuleOnHeartbeat.HEARTBEAT);
  const viewers = Viewers.read(args + abi.RuleOnHeartbeat.VIEWERS);
  const config = campaign.config();
  const grants = new Grants();
  const rule = theRule();
  const count = rule.minutesCount(config, campaign, heartbeat);
  // The host keeps the progress from before the heartbeat then; show the rule the same.
  if (!count) viewers.uncount();
  rule.onHeartbeat(config, campaign, heartbeat, viewers, grants);
  const error = takeError();
  if (error !== null) return failed(abi.RuleOnHeartbeat.RESULT_SIZE, abi.RuleOnHeartbeat.RESULT_PAYLOAD, error);
  const result = area(abi.RuleOnHeartbeat.RESULT_SIZE);
  const verdict = result + abi.RuleOnHeartbeat.RESULT_PAYLOAD;
  store<u8>(verdict + abi.HeartbeatVerdict.COUNT_MINUTES, count ? 1 : 0);
  store<usize>(verdict + abi.HeartbeatVerdict.GRANTS, grants.ptr);
  store<usize>(verdict + abi.HeartbeatVerdict.GRANTS, <usize>grants.count, 4);
  return result;
}

export function __drops_on_game_state(args: usize): usize {
  takeError();
  const campaign = Campaign.read(args + abi.RuleOnGameState.CAMPAIGN);
  const change = GameState.read(args + abi.RuleOnGameState.CHANGE);
  const viewers = Viewers.read(args + abi.RuleOnGameState.VIEWERS);
  const config = campaign.config();
  const grants = new Grants();
  theRule().onGameState(config, campaign, change, viewers, grants);
  const error = takeError();
  if (error !== null) return failed(abi.RuleOnGameState.RESULT_SIZE, abi.RuleOnGameState.RESULT_PAYLOAD, error);
  const result = area(abi.RuleOnGameState.RESULT_SIZE);
  store<usize>(result + abi.RuleOnGameState.RESULT_PAYLOAD, grants.ptr);
  store<usize>(result + abi.RuleOnGameState.RESULT_PAYLOAD, <usize>grants.count, 4);
  return result;
}

export function __drops_on_entitlement(args: usize): usize {
  takeError();
  const campaign = Campaign.read(args + abi.RuleOnEntitlement.CAMPAIGN);
  const entitlement = Entitlement.read(args + abi.RuleOnEntitlement.ENTITLEMENT);
  const config = campaign.config();
  const verdict = theRule().onEntitlement(config, campaign, entitlement);
  let error = takeError();
  if (error === null) error = verdict.error;
  if (error !== null) return failed(abi.RuleOnEntitlement.RESULT_SIZE, abi.RuleOnEntitlement.RESULT_PAYLOAD, error);
  const result = area(abi.RuleOnEntitlement.RESULT_SIZE);
  const variant = result + abi.RuleOnEntitlement.RESULT_PAYLOAD;
  const refusal = verdict.refusal;
  if (refusal !== null) {
    store<u8>(variant, abi.EntitlementVerdict.REFUSE);
    storeString(variant + abi.EntitlementVerdict.PAYLOAD, refusal);
    return result;
  }
  const items = verdict.items;
  const list = area(<usize>items.length * abi.Item.SIZE);
  for (let i = 0; i < items.length; i++) {
    const at = list + <usize>i * abi.Item.SIZE;
    storeString(at + abi.Item.ID, items[i].id);
    store<u32>(at + abi.Item.QUANTITY, items[i].quantity);
  }
  store<u8>(variant, abi.EntitlementVerdict.DELIVER);
  store<usize>(variant + abi.EntitlementVerdict.PAYLOAD, list);
  store<usize>(variant + abi.EntitlementVerdict.PAYLOAD, <usize>items.length, 4);
  return result;
}
