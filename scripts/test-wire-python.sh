#!/usr/bin/env bash
# The wire protocol (docs/wire.md) spoken from Python: nats-py in a venv under the
# target directory drives a real `koan-demo --nats` on a real `nats-server -js`.
# Usage: bash scripts/test-wire-python.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-tools.sh nats-server python3
target="${CARGO_TARGET_DIR:-target}"
cargo build -q -p koan-demo

venv="$target/wire-py-venv"
req=crates/koan-demo/tests/wire_py/requirements.txt
# A venv made for another requirements list (or left half-made) is made again.
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.txt"
fi

PYTHONDONTWRITEBYTECODE=1 KOAN_DEMO="$target/debug/koan-demo" "$venv/bin/python" crates/koan-demo/tests/wire_py/test_wire.py
