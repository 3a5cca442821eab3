// The SDK's entry: `import { Rule, register, ... } from "drops-plugin-sdk"`.
export * from "./assembly/index";
