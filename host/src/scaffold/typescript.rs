//! `drops-host plugin new NAME --lang ts`: a TypeScript (AssemblyScript)
//! package that builds with `npm install && npm run build` and tests with
//! `npm test` (`drops-host plugin test .`), with the SDK written beside it
//! from this binary (so the rule speaks the interface this host does).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The TypeScript SDK's files, as this binary was built with them.
pub(super) const SDK_FILES: [(&str, &str); 11] = [
    ("package.json", include_str!("../../../plugin-sdk-ts/package.json")),
    ("index.ts", include_str!("../../../plugin-sdk-ts/index.ts")),
    ("asconfig.json", include_str!("../../../plugin-sdk-ts/asconfig.json")),
    ("transform.mjs", include_str!("../../../plugin-sdk-ts/transform.mjs")),
    ("abi.json", include_str!("../../../plugin-sdk-ts/abi.json")),
    ("README.md", include_str!("../../../plugin-sdk-ts/README.md")),
    ("assembly/abi.ts", include_str!("../../../plugin-sdk-ts/assembly/abi.ts")),
    ("assembly/exports.ts", include_str!("../../../plugin-sdk-ts/assembly/exports.ts")),
    ("assembly/index.ts", include_str!("../../../plugin-sdk-ts/assembly/index.ts")),
    ("assembly/json.ts", include_str!("../../../plugin-sdk-ts/assembly/json.ts")),
    ("assembly/tiers.ts", include_str!("../../../plugin-sdk-ts/assembly/tiers.ts")),
];

/// The AssemblyScript compiler the SDK is built and tested with.
const ASSEMBLYSCRIPT: &str = "0.28.20";

/// Checks that `--sdk` points at the TypeScript SDK.
fn check_sdk(sdk: &Path) -> anyhow::Result<()> {
    let manifest = sdk.join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("--sdk {}: no package.json there ({})", sdk.display(), manifest.display()))?;
    let package: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--sdk {}: its package.json is not JSON", sdk.display()))?;
    anyhow::ensure!(
        package["name"] == "drops-plugin-sdk" && sdk.join("assembly/abi.ts").exists(),
        "--sdk {}: not the TypeScript SDK (plugin-sdk-ts)",
        sdk.display()
    );
    Ok(())
}

/// Creates the package `name` in `dir/name`: with `sdk`, depending on that
/// SDK; without, on the SDK written into `dir/name/sdk` from this binary.
pub fn new_plugin(dir: &Path, name: &str, sdk: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    super::check_name(name)?;
    if let Some(sdk) = &sdk {
        check_sdk(sdk)?;
    }
    let (root, given) = super::create_package(dir, name, "assembly", &SDK_FILES, sdk)?;
    let sdk = given.unwrap_or_else(|| PathBuf::from("sdk"));
    let package = serde_json::json!({
        "name": name,
        "version": "0.1.0",
        "description": format!("{name}: a drops-host reward rule in TypeScript (AssemblyScript)"),
        "private": true,
        "type": "module",
        "scripts": {
            "build": "asc assembly/rule.ts --config asconfig.json",
            "test": "drops-host plugin test .",
        },
        "dependencies": { "drops-plugin-sdk": format!("file:{}", sdk.display()) },
        "devDependencies": { "assemblyscript": ASSEMBLYSCRIPT },
    });
    std::fs::write(root.join("package.json"), serde_json::to_string_pretty(&package)? + "\n")?;
    // asc resolves a bare `extends` as a package name: a relative one starts with `./`.
    let base =
        if sdk.is_absolute() { sdk.join("asconfig.json") } else { Path::new(".").join(&sdk).join("asconfig.json") };
    let asconfig = serde_json::json!({
        "extends": base.display().to_string(),
        "options": { "outFile": format!("build/{name}.wasm") },
    });
    std::fs::write(root.join("asconfig.json"), serde_json::to_string_pretty(&asconfig)? + "\n")?;
    std::fs::write(root.join(".gitignore"), "/node_modules\n/build\n")?;
    std::fs::write(root.join("README.md"), README.replace("NAME", name))?;
    std::fs::write(root.join("assembly/rule.ts"), RULE_TS.replace("NAME", name))?;
    std::fs::write(root.join("campaign.toml"), super::TEST_CAMPAIGN.replace("NAME", name))?;
    std::fs::create_dir_all(root.join("tests/cases"))?;
    std::fs::write(root.join("tests/cases/reaches-the-goal.json"), super::TEST_CASE)?;
    Ok(root)
}

const README: &str = r#"# NAME

A drops-host reward rule in TypeScript (AssemblyScript: TypeScript's syntax,
compiled ahead of time to a small WebAssembly module). See the host's
docs/plugin-guide.md.

1. `npm install`: the AssemblyScript compiler (Node.js 20 or newer).
2. `npm run build`: builds `build/NAME.wasm` from `assembly/rule.ts`.
3. `npm test`: runs every case in `tests/cases/` through the build in the
   host's sandbox (`drops-host plugin test .`; drops-host on your PATH). A
   case is an event, the viewers' minutes before it, and what the rule must
   grant; `campaign.toml` is the campaign the cases run against.
4. Check it against the campaign file that will use it:
   `drops-host plugin check build/NAME.wasm --campaign my-campaign.toml`
5. Try it on one event: `drops-host plugin run build/NAME.wasm --campaign campaign.toml --event heartbeat.json`
6. Install it as `rules/plugins/NAME.wasm`, or let `drops-host plugin watch . --rules RULES`
   (or `--host URL`) rebuild and install it on every save.

`sdk/` is the TypeScript SDK written by `drops-host plugin new --lang ts` from
the host binary: the interface version that host speaks. Regenerate the
package with a newer host to move to a newer one.
"#;

const RULE_TS: &str = r#"// NAME: a drops-host reward rule.
//
// Config (the campaign's `[rule] config`): `{ minutes = 30, reward = "reward-id" }`.
// Build: `npm run build`; test: `npm test` (see README.md).

import { Campaign, Config, Grants, Heartbeat, Rule, Viewers, register } from "drops-plugin-sdk";
// The entry points the host calls: every rule file re-exports them.
export * from "drops-plugin-sdk/assembly/exports";

class MyRule extends Rule {
  /** Runs when the campaign loads: say which field is wrong (null: fine). */
  validate(config: Config, campaign: Campaign): string | null {
    config.onlyKeys(["minutes", "reward"]);
    if (config.get("minutes").u32() == 0) return "config.minutes: must be at least 1";
    if (!campaign.hasReward(config.get("reward").string())) {
      return "config.reward: reward `" + config.get("reward").string() + "` is not one of the campaign's rewards";
    }
    return null;
  }

  /**
   * Runs for every heartbeat of the campaign: add the grants to make.
   * `>=` with a grant made once: a viewer who passed the goal while the rule
   * ignored them still gets it, and the host keeps one grant per viewer
   * however often it is made.
   */
  onHeartbeat(config: Config, campaign: Campaign, heartbeat: Heartbeat, viewers: Viewers, grants: Grants): void {
    const minutes = config.get("minutes").u32();
    const reward = campaign.rewardIndex(config.get("reward").string());
    for (let v = 0; v < viewers.length; v++) {
      if (viewers.minutes(v) >= minutes) grants.once(v, reward);
    }
  }
}

register(new MyRule());
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sdk_file_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk-ts");
        let mut on_disk: Vec<String> = std::fs::read_dir(root.join("assembly"))
            .unwrap()
            .map(|e| format!("assembly/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.extend(
            std::fs::read_dir(&root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|f| f != "assembly" && f != "node_modules"),
        );
        on_disk.sort();
        let mut embedded: Vec<&str> = SDK_FILES.iter().map(|(f, _)| *f).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add the SDK's new file to SDK_FILES");
    }

    #[test]
    fn refuses_bad_names_existing_folders_and_another_sdk() {
        let dir = tempfile::tempdir().unwrap();
        assert!(new_plugin(dir.path(), "Bad Name", None).is_err());
        let err = new_plugin(dir.path(), "my-rule", Some(PathBuf::from("/nonexistent"))).unwrap_err();
        assert!(err.to_string().contains("--sdk /nonexistent"), "{err}");
        let root = new_plugin(dir.path(), "my-rule", None).unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("asconfig.json")).unwrap()).unwrap();
        assert_eq!(config["extends"], "./sdk/asconfig.json", "asc reads a bare path as a package name");
        assert!(root.join("sdk/assembly/abi.ts").exists() && root.join("tests/cases/reaches-the-goal.json").exists());
        assert!(new_plugin(dir.path(), "my-rule", None).is_err());
    }
}
