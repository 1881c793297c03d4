#!/usr/bin/env bash
# Every check and every test of the workspace: formatting, lints, docs, unit and
# integration tests, the NATS wire protocol from Python, the examples, and the
# dashboard in a real headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

# CI builds once from a clean clone: incremental caches only cost disk there (a
# warm developer tree grew 25 GB of them, and a CI run once failed on a full disk).
if [[ "${CI:-}" == "true" ]]; then
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
  df -h . | tail -1
fi

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc --workspace --no-deps (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

bash scripts/ensure-tools.sh nats-server
# Includes the property tests (proptest, a bounded number of cases each):
# crates/koan/tests/mailbox_property.rs and crates/koan/tests/schedule_property.rs.
step "cargo test --workspace (with the proptest properties)"
cargo test --workspace

step "loom models of the action slots, the mailbox and inline hand-offs, the event ring and a periodic poke run by its caller (--cfg koan_loom; bounded)"
# Their own target directory: the cfg would rebuild everything in the main one.
CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 RUSTFLAGS="--cfg koan_loom" \
  cargo test -p koan --lib loom

step "the NATS wire protocol from Python (docs/wire.md; nats-py against koan-demo --nats)"
bash scripts/test-wire-python.sh

step "examples run to completion"
for ex in system_health_monitor data_cleanup_service database_migration_service translation_service my_first_service my_fluent_service; do
  echo "-- example $ex"
  timeout 120 cargo run -q -p koan --example "$ex" >/dev/null
done
echo "-- example getting_started --once"
timeout 120 cargo run -q -p koan --example getting_started -- --once >/dev/null
echo "examples: 7 passed, 0 failed"

step "dashboard in headless Chromium"
bash scripts/ensure-tools.sh chromium node
cargo build -q -p koan-demo
# Screenshots land in target/screenshots; KOAN_REFRESH_SCREENSHOTS=1 rewrites docs/*.png.
# One test file at a time: each starts its own demo host and browser pages.
(cd crates/koan-http/tests/browser && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1)

step "benchmark smoke run"
cargo run -q -p koan-bench -- --quick all > /dev/null
