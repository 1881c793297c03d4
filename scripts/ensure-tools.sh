#!/usr/bin/env bash
# Installs what the tests need when it is missing: Debian's chromium, Node.js,
# nats-server, and Python 3 with its venv module.
# Usage: scripts/ensure-tools.sh chromium node nats-server python3
set -euo pipefail

venv_works() {
  command -v python3 >/dev/null 2>&1 || return 1
  local d; d=$(mktemp -d)
  python3 -m venv "$d/v" >/dev/null 2>&1; local ok=$?
  rm -rf "$d"
  return $ok
}

need=()
for tool in "$@"; do
  case "$tool" in
    chromium) command -v chromium >/dev/null 2>&1 || need+=(chromium) ;;
    node) command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || need+=(nodejs npm) ;;
    nats-server) command -v nats-server >/dev/null 2>&1 || need+=(nats-server) ;;
    # Debian ships the working `venv` (its `ensurepip`) apart from python3: try one.
    python3) venv_works || need+=(python3 python3-venv) ;;
    *) echo "ensure-tools: unknown tool $tool" >&2; exit 2 ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ensure-tools: need to install ${need[*]} but am not root and have no sudo" >&2; exit 1
  fi
fi
echo "ensure-tools: installing ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
