// Generated from plugin-sdk/wit/rules.wit (drops:rules@0.4.0) by drops-host's test
// `typescript_glue_matches_the_wit`: `DROPS_BLESS=1 cargo test -p drops-host typescript_glue`
// rewrites it. Do not edit: offsets are wit-parser's canonical-ABI layout for wasm32.

/** The interface version this glue speaks. */
export const INTERFACE_VERSION = "0.4.0";

// ---- `drops:rules/host@0.4.0` (imported from the host) ----

/** `enum level` */
export namespace Level {
  export const DEBUG: i32 = 0;
  export const INFO: i32 = 1;
  export const WARN: i32 = 2;
  export const ERROR: i32 = 3;
}

/** `log` of `drops:rules/host@0.4.0`. */
// @ts-ignore: decorator
@external("drops:rules/host@0.4.0", "log")
export declare function host_log(p0: i32, p1: usize, p2: usize): void;

/** `log`: parameters and results as they cross. */
export namespace HostLog {
  export const PARAMS_INDIRECT: bool = false;
  export const FLAT_PARAMS: i32 = 3;
}

/** `viewer-id` of `drops:rules/host@0.4.0`. */
// @ts-ignore: decorator
@external("drops:rules/host@0.4.0", "viewer-id")
export declare function host_viewer_id(p0: i32, p1: usize): void;

/** `viewer-id`: parameters and results as they cross. */
export namespace HostViewerId {
  export const PARAMS_INDIRECT: bool = false;
  export const FLAT_PARAMS: i32 = 2;
  export const RESULT_SIZE: usize = 12;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}

/** `state-get` of `drops:rules/host@0.4.0`. */
// @ts-ignore: decorator
@external("drops:rules/host@0.4.0", "state-get")
export declare function host_state_get(p0: usize, p1: usize, p2: usize): void;

/** `state-get`: parameters and results as they cross. */
export namespace HostStateGet {
  export const PARAMS_INDIRECT: bool = false;
  export const FLAT_PARAMS: i32 = 3;
  export const RESULT_SIZE: usize = 12;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}

/** `state-set` of `drops:rules/host@0.4.0`. */
// @ts-ignore: decorator
@external("drops:rules/host@0.4.0", "state-set")
export declare function host_state_set(p0: usize, p1: usize, p2: usize, p3: usize, p4: usize): void;

/** `state-set`: parameters and results as they cross. */
export namespace HostStateSet {
  export const PARAMS_INDIRECT: bool = false;
  export const FLAT_PARAMS: i32 = 5;
  export const RESULT_SIZE: usize = 12;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}

/** `state-delete` of `drops:rules/host@0.4.0`. */
// @ts-ignore: decorator
@external("drops:rules/host@0.4.0", "state-delete")
export declare function host_state_delete(p0: usize, p1: usize): void;

/** `state-delete`: parameters and results as they cross. */
export namespace HostStateDelete {
  export const PARAMS_INDIRECT: bool = false;
  export const FLAT_PARAMS: i32 = 2;
}

// ---- `drops:rules/rule@0.4.0` (exported by the rule) ----

/** `record campaign` */
export namespace Campaign {
  export const SIZE: usize = 24;
  export const ALIGN: usize = 4;
  export const ID: usize = 0;
  export const REWARDS: usize = 8;
  export const CONFIG: usize = 16;
}

/** `record heartbeat` */
export namespace Heartbeat {
  export const SIZE: usize = 32;
  export const ALIGN: usize = 4;
  export const BROADCASTER: usize = 0;
  export const GAME: usize = 8;
  export const MINUTE: usize = 16;
  export const VIEWERS_REPORTED: usize = 20;
  export const STATE_CHANGED: usize = 24;
  export const STATE_CHANGED_PAYLOAD: usize = 28;
}

/** `record game-state` */
export namespace GameState {
  export const SIZE: usize = 56;
  export const ALIGN: usize = 4;
  export const BROADCASTER: usize = 0;
  export const TWITCH_USER_ID: usize = 8;
  export const GAME_ID: usize = 16;
  export const MINUTE: usize = 24;
  export const PREVIOUS: usize = 28;
  export const CURRENT: usize = 36;
  export const CHANGED: usize = 44;
  export const AUTHORITATIVE: usize = 52;
}

/** `record viewers` */
export namespace Viewers {
  export const SIZE: usize = 16;
  export const ALIGN: usize = 4;
  export const MINUTES: usize = 0;
  export const COUNTED: usize = 8;
}

/** `record grant` */
export namespace Grant {
  export const SIZE: usize = 20;
  export const ALIGN: usize = 4;
  export const VIEWER: usize = 0;
  export const REWARD: usize = 4;
  export const KEY: usize = 8;
  export const KEY_PAYLOAD: usize = 12;
}

/** `record heartbeat-verdict` */
export namespace HeartbeatVerdict {
  export const SIZE: usize = 12;
  export const ALIGN: usize = 4;
  export const COUNT_MINUTES: usize = 0;
  export const GRANTS: usize = 4;
}

/** `record entitlement` */
export namespace Entitlement {
  export const SIZE: usize = 64;
  export const ALIGN: usize = 8;
  export const ID: usize = 0;
  export const BENEFIT_ID: usize = 8;
  export const CAMPAIGN_ID: usize = 16;
  export const CATEGORY_ID: usize = 24;
  export const USER_ID: usize = 32;
  export const USER_LOGIN: usize = 40;
  export const CREATED_AT: usize = 48;
  export const ACCOUNT: usize = 56;
}

/** `record item` */
export namespace Item {
  export const SIZE: usize = 12;
  export const ALIGN: usize = 4;
  export const ID: usize = 0;
  export const QUANTITY: usize = 8;
}

/** `variant entitlement-verdict` */
export namespace EntitlementVerdict {
  export const SIZE: usize = 12;
  export const ALIGN: usize = 4;
  export const PAYLOAD: usize = 4;
  export const DELIVER: u8 = 0;
  export const REFUSE: u8 = 1;
}

/** `validate-config`: parameters and results as they cross. */
export namespace RuleValidateConfig {
  export const PARAMS_INDIRECT: bool = false;
  export const FLAT_PARAMS: i32 = 6;
  export const RESULT_SIZE: usize = 12;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}

/** `on-heartbeat`: parameters and results as they cross. */
export namespace RuleOnHeartbeat {
  export const PARAMS_INDIRECT: bool = true;
  export const FLAT_PARAMS: i32 = 1;
  export const SIZE: usize = 72;
  export const ALIGN: usize = 4;
  export const CAMPAIGN: usize = 0;
  export const HEARTBEAT: usize = 24;
  export const VIEWERS: usize = 56;
  export const RESULT_SIZE: usize = 16;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}

/** `on-game-state`: parameters and results as they cross. */
export namespace RuleOnGameState {
  export const PARAMS_INDIRECT: bool = true;
  export const FLAT_PARAMS: i32 = 1;
  export const SIZE: usize = 96;
  export const ALIGN: usize = 4;
  export const CAMPAIGN: usize = 0;
  export const CHANGE: usize = 24;
  export const VIEWERS: usize = 80;
  export const RESULT_SIZE: usize = 12;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}

/** `on-entitlement`: parameters and results as they cross. */
export namespace RuleOnEntitlement {
  export const PARAMS_INDIRECT: bool = true;
  export const FLAT_PARAMS: i32 = 1;
  export const SIZE: usize = 88;
  export const ALIGN: usize = 8;
  export const CAMPAIGN: usize = 0;
  export const ENTITLEMENT: usize = 24;
  export const RESULT_SIZE: usize = 16;
  export const RESULT_ALIGN: usize = 4;
  export const RESULT_PAYLOAD: usize = 4;
}
