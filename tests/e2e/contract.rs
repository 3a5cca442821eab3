//! The admin API as a client no one here wrote reads it: schemathesis
//! generates requests from the host's own `/v1/openapi.json` (examples,
//! coverage and fuzzing; every check but positive-data acceptance, which
//! random bytes cannot pass for a `.wasm` or a recording) and checks every
//! answer against the document: statuses, bodies, headers, the server-sent
//! events' `data` against its `contentSchema`. PUT of a plugin or a
//! campaign file is left out: schemathesis has no serializer for
//! `application/wasm` or `application/toml` bodies.

use std::process::Command;

use crate::helpers::{Backend, HostConfig, TestHost, ADMIN_TOKEN};

#[tokio::test]
async fn schemathesis_finds_the_host_and_its_document_agree() {
    if Command::new("schemathesis").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs schemathesis (.ci/run)");
        eprintln!("schemathesis is not installed (pip install schemathesis): skipped");
        return;
    }
    let Some(host) = TestHost::spawn(Backend::Sqlite, HostConfig::default()).await else { return };
    let document = format!("{}/v1/openapi.json", host.base);
    // Its cache of found crashes goes into the working directory: a scratch one.
    let scratch = tempfile::tempdir().unwrap();
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("schemathesis")
            .current_dir(cwd)
            .args(["run", &document, "-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
            .args(["--phases", "examples,coverage,fuzzing", "--checks", "all"])
            .args(["--exclude-checks", "positive_data_acceptance", "--max-examples", "10", "--seed", "1"])
            .args(["--exclude-path-regex", r"^/v1/(plugins|campaigns)/\{name\}$", "--no-color"])
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found disagreements:\n{printed}");
    assert!(printed.contains("passed") && !printed.contains("failure"), "{printed}");
}
