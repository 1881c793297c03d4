#!/usr/bin/env bash
# Mutation testing of koan's core with cargo-mutants (27.1): run by hand, not in CI.
#
# Each core file is mutated in turn, and only the test files that exercise it are
# built and run, so one file fits in minutes on a 2-core machine. Mutants are tested
# in place (one shared, incremental target directory); the mutated files are restored
# on exit, and the script refuses to start while they have uncommitted changes.
#
#   scripts/mutants.sh                  # all six files
#   scripts/mutants.sh driver report    # some of them (keys below)
#   MUTANTS_TIMEOUT=120 scripts/mutants.sh supervisor
#   MUTANTS_SHARD=0/3 scripts/mutants.sh event   # a third of a large key (0/3, 1/3, 2/3)
#   MUTANTS_ITERATE=1 scripts/mutants.sh mailbox  # only what the last run did not catch
#   MUTANTS_ALL_SUITES=1 scripts/mutants.sh event # no fail-fast: logs name every catching test
#
# Keys: the six core files (schedule driver mailbox slots supervisor report, the
# default), and beyond them request execute enqueue route (action/), event
# (all of event/), and queue outcomes (koan-nats's job code; needs nats-server).
#
# Results go to target/mutants/<key>[-shard-k-of-n]/mutants.out/ (caught.txt, missed.txt,
# timeout.txt, unviable.txt, outcomes.json). The latest score and the mutants judged
# equivalent are in RELIABILITY.md ("Mutation testing").
set -euo pipefail
cd "$(dirname "$0")/.."

# A test that hangs is cut after this many seconds and counted as `timeout`: with
# every wait bounded (`koan::testing::WAIT_LIMIT`), none should.
timeout="${MUTANTS_TIMEOUT:-90}"
out="${MUTANTS_OUT:-$PWD/target/mutants}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

declare -A file=(
  [schedule]=crates/koan/src/schedule/mod.rs
  [driver]=crates/koan/src/schedule/driver.rs
  [mailbox]=crates/koan/src/action/mailbox.rs
  [slots]=crates/koan/src/action/slots.rs
  [supervisor]=crates/koan/src/host/supervisor.rs
  [report]=crates/koan/src/health/report.rs
  # Beyond the core six (issue 22's second round): the action request, split in
  # four, and the event bus.
  [request]=crates/koan/src/action/request.rs
  [execute]=crates/koan/src/action/execute.rs
  [enqueue]=crates/koan/src/action/enqueue.rs
  [route]=crates/koan/src/action/route.rs
  [event]='crates/koan/src/event/*.rs'
  # koan-nats's job code: the durable queue and the outcomes callers wait for.
  # Its tests start a real nats-server (scripts/ensure-tools.sh nats-server).
  [queue]=crates/koan-nats/src/queue.rs
  [outcomes]=crates/koan-nats/src/outcomes.rs
)
# The crate of each file: koan unless named here.
declare -A package=(
  [queue]=koan-nats
  [outcomes]=koan-nats
)
# The integration tests (crates/<package>/tests/<name>.rs) that exercise each file;
# `lib`: the package's unit tests.
declare -A tests=(
  [schedule]="periodic_schedule periodic_edges schedule_parse config_layers"
  [driver]="periodic_schedule periodic_edges periodic_poke_timeout lifecycle_shutdown"
  [mailbox]="actions_mailbox actions_inline actions_timeout actions_grace mailbox_property lifecycle_shutdown"
  [slots]="actions_mailbox actions_inline actions_timeout actions_grace lifecycle_shutdown"
  [supervisor]="supervision supervision_edges health_status lifecycle_startup lifecycle_shutdown"
  [report]="health_report health_status edge_cases"
  [request]="actions_invoke actions_typed actions_cancel actions_timeout actions_inline jobs_lifecycle actions_request_edges"
  [execute]="actions_invoke actions_typed actions_cancel actions_timeout actions_inline actions_mailbox actions_request_edges"
  [enqueue]="actions_invoke actions_typed jobs_lifecycle jobs_memory_store edge_cases actions_request_edges"
  [route]="actions_invoke actions_typed actions_timeout periodic_schedule periodic_edges actions_request_edges"
  [event]="events_delivery events_mixed_chain events_noise events_plumbing events_recent events_translation events_typed"
  [queue]="lib durable_work durable_keyed durable_partition durable_shutdown durable_cancel wire_foreign durable_queue_edges durable_retry durable_chain durable_queue_more"
  [outcomes]="durable_work durable_keyed durable_partition durable_shutdown durable_queue_edges"
)

keys=("$@")
if [ ${#keys[@]} -eq 0 ]; then
  keys=(schedule driver mailbox slots supervisor report)
fi
# MUTANTS_SHARD=k/n tests only the k-th of n parts of each file's mutants (a large
# file over several sittings; cargo-mutants counts k from 0, so 0/n to (n-1)/n); its
# results go to target/mutants/<key>-shard-k-of-n/.
shard="${MUTANTS_SHARD:-}"
suffix=""
if [ -n "$shard" ]; then
  suffix="-shard-${shard/\//-of-}"
fi
for key in "${keys[@]}"; do
  if [ -z "${file[$key]:-}" ]; then
    echo "unknown file key \`$key\`; use: ${!file[*]}" >&2
    exit 2
  fi
done

if ! git diff --quiet -- "${file[@]}"; then
  echo "commit or stash your changes to the core files first: mutants are tested in place" >&2
  exit 2
fi
# While a mutant is in place, `git commit -a` would commit it: a pre-commit hook
# refuses commits in this worktree until the run ends (other worktrees are not
# concerned). An existing pre-commit hook is left alone, with a warning.
hook="$(git rev-parse --git-path hooks/pre-commit)"
top="$(git rev-parse --show-toplevel)"
guard=""
if [ -e "$hook" ]; then
  echo "warning: $hook exists; not guarding commits during the run — commit nothing until it ends" >&2
else
  mkdir -p "$(dirname "$hook")"
  cat > "$hook" <<HOOK
#!/bin/sh
# Written by scripts/mutants.sh for the length of a run; removed when it ends.
if [ "\$(git rev-parse --show-toplevel)" = "$top" ]; then
  echo "scripts/mutants.sh is running here with a mutant in place: commit after it ends" >&2
  exit 1
fi
HOOK
  chmod +x "$hook"
  guard="$hook"
fi
trap 'git checkout -- "${file[@]}"; if [ -n "$guard" ]; then rm -f "$guard"; fi' EXIT

for key in "${keys[@]}"; do
  # Passed to every cargo call (the build as well as the test run), so each mutant
  # builds only the suites it runs, not every test target of the package.
  args=()
  for t in ${tests[$key]}; do
    if [ "$t" = lib ]; then
      args+=(--cargo-arg=--lib)
    else
      args+=(--cargo-arg=--test="$t")
    fi
  done
  echo "== ${file[$key]} (tests: ${tests[$key]})"
  mkdir -p "$out/$key$suffix"
  shard_args=()
  if [ -n "$shard" ]; then
    shard_args=(--shard "$shard")
  fi
  if [ -n "${MUTANTS_ITERATE:-}" ]; then
    shard_args+=(--iterate)
  fi
  # MUTANTS_ALL_SUITES=1: every suite runs even after one fails, so each mutant's log
  # shows every test that catches it (slower).
  if [ -n "${MUTANTS_ALL_SUITES:-}" ]; then
    shard_args+=(--cargo-test-arg=--no-fail-fast)
  fi
  # Exit code 2 (some mutants missed) or 3 (timeouts) is a result, not a failure.
  # The loom models (`#[cfg(all(test, koan_loom))]`) are not built here: their
  # helpers' mutants would all be "missed".
  cargo mutants --in-place --package "${package[$key]:-koan}" --all-features --no-shuffle \
    --timeout "$timeout" --build-timeout 900 --exclude-re 'loom_model::' \
    "${shard_args[@]}" "${args[@]}" --file "${file[$key]}" --output "$out/$key$suffix" || true
done

echo
for key in "${keys[@]}"; do
  dir="$out/$key$suffix/mutants.out"
  count() { if [ -f "$dir/$1.txt" ]; then grep -c . "$dir/$1.txt" || true; else echo 0; fi; }
  echo "$key: caught $(count caught), missed $(count missed), timeout $(count timeout), unviable $(count unviable)"
done
