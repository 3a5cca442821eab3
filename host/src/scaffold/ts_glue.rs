//! Generates the TypeScript SDK's canonical-ABI glue (`plugin-sdk-ts/assembly/abi.ts`
//! and `plugin-sdk-ts/abi.json`) from `rules.wit`, with `wit-parser`'s own
//! layout and flattening rules: where each field of each record sits, which
//! hooks take their parameters through one pointer, the return areas, the
//! host's imports and the core names of the exports. The SDK is written
//! against these names, so an interface change that moves a field changes
//! this file, and the test below fails until the committed glue is
//! regenerated (`DROPS_BLESS=1 cargo test -p drops-host typescript_glue`).

use std::fmt::Write;

use wit_parser::abi::{AbiVariant, WasmType};
use wit_parser::{Resolve, SizeAlign, Type, TypeDefKind, TypeId, WorldItem};

/// The rules world, parsed.
fn rules_world() -> (Resolve, wit_parser::WorldId) {
    let mut resolve = Resolve::default();
    let package =
        resolve.push_str("rules.wit", include_str!("../../../plugin-sdk/wit/rules.wit")).expect("rules.wit parses");
    let world = resolve.select_world(&[package], Some("rules")).expect("the rules world");
    (resolve, world)
}

/// `heartbeat-verdict` → `HeartbeatVerdict`.
fn pascal(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// `state-changed` → `STATE_CHANGED`.
fn constant(name: &str) -> String {
    name.replace('-', "_").to_ascii_uppercase()
}

/// `viewer-id` → `viewer_id`.
fn snake(name: &str) -> String {
    name.replace('-', "_")
}

fn ts_type(ty: WasmType) -> &'static str {
    match ty {
        WasmType::I32 => "i32",
        WasmType::Pointer | WasmType::Length => "usize",
        WasmType::I64 | WasmType::PointerOrI64 => "i64",
        WasmType::F32 => "f32",
        WasmType::F64 => "f64",
    }
}

fn json_type(ty: WasmType) -> &'static str {
    match ty {
        WasmType::I32 | WasmType::Pointer | WasmType::Length => "i32",
        WasmType::I64 | WasmType::PointerOrI64 => "i64",
        WasmType::F32 => "f32",
        WasmType::F64 => "f64",
    }
}

struct Glue<'a> {
    resolve: &'a Resolve,
    sizes: SizeAlign,
    ts: String,
}

impl Glue<'_> {
    /// Offsets of a field of option/result/variant type: its tag and its payload.
    fn payload_offset(&self, ty: &Type) -> Option<usize> {
        let Type::Id(id) = ty else { return None };
        let kind = &self.resolve.types[*id].kind;
        let offset = match kind {
            TypeDefKind::Option(inner) => {
                self.sizes.payload_offset(wit_parser::Int::U8, [None, Some(inner)]).size_wasm32()
            }
            TypeDefKind::Result(r) => {
                self.sizes.payload_offset(wit_parser::Int::U8, [r.ok.as_ref(), r.err.as_ref()]).size_wasm32()
            }
            TypeDefKind::Variant(v) => {
                self.sizes.payload_offset(v.tag(), v.cases.iter().map(|c| c.ty.as_ref())).size_wasm32()
            }
            TypeDefKind::Type(inner) => return self.payload_offset(inner),
            _ => return None,
        };
        Some(offset)
    }

    /// `SIZE`, `ALIGN` and each field's offset of a list of named types laid out as a record.
    fn fields<'b>(&mut self, fields: impl IntoIterator<Item = (&'b str, &'b Type)> + Clone) {
        let info = self.sizes.record(fields.clone().into_iter().map(|(_, ty)| ty));
        let _ = writeln!(self.ts, "  export const SIZE: usize = {};", info.size.size_wasm32());
        let _ = writeln!(self.ts, "  export const ALIGN: usize = {};", info.align.align_wasm32());
        let names: Vec<(&str, &Type)> = fields.into_iter().collect();
        let offsets = self.sizes.field_offsets(names.iter().map(|(_, ty)| *ty));
        for ((name, _), (offset, ty)) in names.iter().zip(offsets) {
            let offset = offset.size_wasm32();
            let _ = writeln!(self.ts, "  export const {}: usize = {offset};", constant(name));
            if let Some(payload) = self.payload_offset(ty) {
                let _ = writeln!(self.ts, "  export const {}_PAYLOAD: usize = {};", constant(name), offset + payload);
            }
        }
    }

    /// A record, variant or enum of an interface.
    fn type_def(&mut self, id: TypeId) {
        let def = &self.resolve.types[id];
        let Some(name) = def.name.clone() else { return };
        match &def.kind {
            TypeDefKind::Record(record) => {
                let _ = writeln!(self.ts, "\n/** `record {name}` */\nexport namespace {} {{", pascal(&name));
                let fields: Vec<(&str, &Type)> = record.fields.iter().map(|f| (f.name.as_str(), &f.ty)).collect();
                self.fields(fields);
                self.ts.push_str("}\n");
            }
            TypeDefKind::Variant(variant) => {
                let _ = writeln!(self.ts, "\n/** `variant {name}` */\nexport namespace {} {{", pascal(&name));
                let ty = Type::Id(id);
                let _ = writeln!(self.ts, "  export const SIZE: usize = {};", self.sizes.size(&ty).size_wasm32());
                let _ = writeln!(self.ts, "  export const ALIGN: usize = {};", self.sizes.align(&ty).align_wasm32());
                let payload = self.payload_offset(&ty).unwrap_or(0);
                let _ = writeln!(self.ts, "  export const PAYLOAD: usize = {payload};");
                for (tag, case) in variant.cases.iter().enumerate() {
                    let _ = writeln!(self.ts, "  export const {}: u8 = {tag};", constant(&case.name));
                }
                self.ts.push_str("}\n");
            }
            TypeDefKind::Enum(e) => {
                let _ = writeln!(self.ts, "\n/** `enum {name}` */\nexport namespace {} {{", pascal(&name));
                for (tag, case) in e.cases.iter().enumerate() {
                    let _ = writeln!(self.ts, "  export const {}: i32 = {tag};", constant(&case.name));
                }
                self.ts.push_str("}\n");
            }
            _ => {}
        }
    }

    /// The return area of a function whose result does not fit in one value.
    fn result_area(&mut self, result: &Option<Type>) {
        let Some(ty) = result else { return };
        let _ = writeln!(self.ts, "  export const RESULT_SIZE: usize = {};", self.sizes.size(ty).size_wasm32());
        let _ = writeln!(self.ts, "  export const RESULT_ALIGN: usize = {};", self.sizes.align(ty).align_wasm32());
        if let Some(payload) = self.payload_offset(ty) {
            let _ = writeln!(self.ts, "  export const RESULT_PAYLOAD: usize = {payload};");
        }
    }
}

/// The generated files: (`assembly/abi.ts`, `abi.json`).
pub fn generate() -> (String, String) {
    let (resolve, world) = rules_world();
    let mut sizes = SizeAlign::default();
    sizes.fill(&resolve).expect("sizes of rules.wit");
    let package = &resolve.packages[resolve.worlds[world].package.expect("a package")];
    let version = package.name.version.as_ref().map(|v| v.to_string()).unwrap_or_default();
    let mut glue = Glue { resolve: &resolve, sizes, ts: String::new() };
    let _ = write!(
        glue.ts,
        "// Generated from plugin-sdk/wit/rules.wit (drops:rules@{version}) by drops-host's test\n\
         // `typescript_glue_matches_the_wit`: `DROPS_BLESS=1 cargo test -p drops-host typescript_glue`\n\
         // rewrites it. Do not edit: offsets are wit-parser's canonical-ABI layout for wasm32.\n\n\
         /** The interface version this glue speaks. */\n\
         export const INTERFACE_VERSION = \"{version}\";\n"
    );
    let mut exports = Vec::new();
    let world_def = &resolve.worlds[world];
    let items = world_def
        .imports
        .iter()
        .map(|i| (i, AbiVariant::GuestImport))
        .chain(world_def.exports.iter().map(|i| (i, AbiVariant::GuestExport)));
    for ((key, item), abi) in items {
        let WorldItem::Interface { id, .. } = item else { continue };
        let interface_name = resolve.name_world_key(key);
        let interface = &resolve.interfaces[*id];
        let short = interface.name.clone().unwrap_or_default();
        let _ = writeln!(
            glue.ts,
            "\n// ---- `{interface_name}` ({}) ----",
            match abi {
                AbiVariant::GuestImport => "imported from the host",
                _ => "exported by the rule",
            }
        );
        for (_, &type_id) in &interface.types {
            glue.type_def(type_id);
        }
        for (name, func) in &interface.functions {
            let sig = resolve.wasm_signature(abi, func);
            let namespace = pascal(&format!("{short}-{name}"));
            match abi {
                AbiVariant::GuestImport => {
                    let params: Vec<String> =
                        sig.params.iter().enumerate().map(|(i, ty)| format!("p{i}: {}", ts_type(*ty))).collect();
                    let result = sig.results.first().map_or("void", |ty| ts_type(*ty));
                    let _ = write!(
                        glue.ts,
                        "\n/** `{name}` of `{interface_name}`. */\n// @ts-ignore: decorator\n\
                         @external(\"{interface_name}\", \"{name}\")\n\
                         export declare function {}_{}({}): {result};\n",
                        snake(&short),
                        snake(name),
                        params.join(", ")
                    );
                }
                _ => {
                    let core_name = func.legacy_core_export_name(Some(&interface_name)).into_owned();
                    let function = format!("__drops_{}", snake(name));
                    let params: Vec<&str> = sig.params.iter().map(|ty| json_type(*ty)).collect();
                    let results: Vec<&str> = sig.results.iter().map(|ty| json_type(*ty)).collect();
                    exports.push(serde_json::json!({
                        "export": core_name, "function": function, "params": params, "results": results,
                    }));
                }
            }
            let _ = writeln!(
                glue.ts,
                "\n/** `{name}`: parameters and results as they cross. */\nexport namespace {namespace} {{"
            );
            let flat = sig.params.len();
            let _ = writeln!(glue.ts, "  export const PARAMS_INDIRECT: bool = {};", sig.indirect_params);
            let _ = writeln!(glue.ts, "  export const FLAT_PARAMS: i32 = {flat};");
            if sig.indirect_params {
                let fields: Vec<(&str, &Type)> = func.params.iter().map(|p| (p.name.as_str(), &p.ty)).collect();
                glue.fields(fields);
            }
            if sig.retptr {
                glue.result_area(&func.result);
            }
            glue.ts.push_str("}\n");
        }
    }
    let json = serde_json::json!({
        "interface": format!("drops:rules@{version}"),
        "generated_from": "plugin-sdk/wit/rules.wit",
        "exports": exports,
    });
    let json = serde_json::to_string_pretty(&json).expect("json") + "\n";
    (glue.ts, json)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn typescript_glue_matches_the_wit() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk-ts");
        let (ts, json) = generate();
        let files = [(root.join("assembly/abi.ts"), ts), (root.join("abi.json"), json)];
        if std::env::var_os("DROPS_BLESS").is_some() {
            for (path, text) in &files {
                std::fs::write(path, text).unwrap();
            }
        }
        for (path, text) in files {
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == text,
                "{} disagrees with rules.wit: regenerate it with `DROPS_BLESS=1 cargo test -p drops-host typescript_glue` \
                 and update the SDK where the names it uses changed",
                path.display()
            );
        }
    }

    #[test]
    fn the_glue_lays_out_what_the_sdk_reads() {
        let (ts, json) = generate();
        // Spot checks against layouts worked out by hand from the canonical ABI.
        assert!(ts.contains("export namespace Grant {\n  export const SIZE: usize = 20;"), "{ts}");
        assert!(ts.contains("  export const KEY_PAYLOAD: usize = 12;"), "{ts}");
        assert!(ts.contains("  export const STATE_CHANGED_PAYLOAD: usize = 28;"), "{ts}");
        assert!(ts.contains("@external(\"drops:rules/host@0.4.0\", \"viewer-id\")"), "{ts}");
        assert!(json.contains("\"drops:rules/rule@0.4.0#on-heartbeat\""), "{json}");
    }
}
