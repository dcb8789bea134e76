#!/usr/bin/env bash
# Runs every test of MEDICODAX: unit, integration, interop with third-party peers
# (Node and Python), PostgreSQL, and the headless-browser dashboard test. Installs and
# starts what they need first (scripts/test-deps.sh). Also checks that benchmarks build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
export MEDICODAX_TEST_PG_URL=${MEDICODAX_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
export MEDICODAX_INTEROP_DIR=$(pwd)/tests/interop
if command -v cargo-nextest >/dev/null; then
  cargo nextest run --workspace --no-fail-fast
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast
fi
# The benchmarks must build; they are built with the test build's dependencies (a release
# build of everything would add ten minutes to CI). Run them with `cargo bench`.
cargo build --workspace --benches
