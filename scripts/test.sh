#!/usr/bin/env bash
# Runs every test: builds the example plugins (the end-to-end tests load them),
# then the workspace's unit and end-to-end tests against SQLite and PostgreSQL.
# PostgreSQL: DROPS_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test;
# outside CI those tests are skipped (and say so) when no server answers.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-plugins.sh >/dev/null
cargo test --workspace "$@"
