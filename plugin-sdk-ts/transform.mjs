// An AssemblyScript compiler transform: gives the SDK's entry points the
// core names the component model expects (`drops:rules/rule@0.4.0#on-heartbeat`),
// after checking each one's signature against the one generated from
// rules.wit (abi.json), and removes every other function export, so the
// module exports exactly the rules world, `memory` and `cabi_realloc`.
// Used as `asc ... --transform drops-plugin-sdk/transform.mjs`.

import { readFileSync } from "node:fs";
import { Transform } from "assemblyscript/transform";

const abi = JSON.parse(readFileSync(new URL("./abi.json", import.meta.url), "utf8"));

/** binaryen's value types as abi.json spells them. */
function typeName(binaryen, type) {
  switch (type) {
    case binaryen.i32: return "i32";
    case binaryen.i64: return "i64";
    case binaryen.f32: return "f32";
    case binaryen.f64: return "f64";
    case binaryen.none: return null;
    default: return `type ${type}`;
  }
}

function names(binaryen, type) {
  return binaryen.expandType(type).map((t) => typeName(binaryen, t)).filter((t) => t !== null);
}

export default class DropsRulesTransform extends Transform {
  afterCompile(module) {
    const binaryen = this.binaryen;
    const exported = new Map();
    for (let i = 0; i < module.getNumExports(); i++) {
      const info = binaryen.getExportInfo(module.getExportByIndex(i));
      if (info.kind === binaryen.ExternalFunction) exported.set(info.name, info.value);
    }
    const keep = new Set(["cabi_realloc"]);
    for (const entry of abi.exports) {
      const internal = exported.get(entry.function);
      if (internal === undefined) {
        throw new Error(
          `drops-plugin-sdk: the rule exports no \`${entry.function}\`; add \`export * from "drops-plugin-sdk/assembly/exports";\` to the rule's file`,
        );
      }
      const fn = binaryen.getFunctionInfo(module.getFunction(internal));
      const params = names(binaryen, fn.params);
      const results = names(binaryen, fn.results);
      if (params.join() !== entry.params.join() || results.join() !== entry.results.join()) {
        throw new Error(
          `drops-plugin-sdk: \`${entry.function}\` is (${params}) -> (${results}), but ${abi.interface} ` +
            `needs (${entry.params}) -> (${entry.results}) for \`${entry.export}\`: the SDK's glue is out of date`,
        );
      }
      module.removeExport(entry.function);
      module.addFunctionExport(internal, entry.export);
      keep.add(entry.export);
    }
    for (const name of exported.keys()) {
      if (!keep.has(name) && !abi.exports.some((e) => e.function === name)) module.removeExport(name);
    }
  }
}
