#!/usr/bin/env bash
# Set everything up, start bulletd on the children shipped in child_models/ (signatures checked
# against child_models/release.pub.pem), and answer a first request through the mother.
# The daemon then keeps serving in the foreground until Ctrl-C (or exits with --once).
#
#   scripts/quickstart.sh [--once] ["your prompt"]
set -euo pipefail
cd "$(dirname "$0")/.."
once=0
if [ "${1:-}" = "--once" ]; then once=1; shift; fi
prompt=${1:-"Once upon a time"}

scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/bulletd-quickstart.XXXXXX")
export BULLETD_SOCKET="$run_dir/bulletd.sock"
bulletd --models child_models --trust child_models/release.pub.pem --socket "$BULLETD_SOCKET" \
  2> "$run_dir/bulletd.log" &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$run_dir"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  bulletd-cli ping >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { echo "bulletd exited:"; cat "$run_dir/bulletd.log"; exit 1; }
  sleep 0.1
done
bulletd-cli ping >/dev/null || { echo "bulletd did not come up:"; cat "$run_dir/bulletd.log"; exit 1; }

echo "== children served by bulletd (socket $BULLETD_SOCKET)"
bulletd-cli list
echo
echo "== the mother's decision for: $prompt"
bulletd-cli route "$prompt"
echo
echo "== first request (no child named: the mother routes it)"
bulletd-cli generate "$prompt" --max-tokens 48 --seed 1
echo
if [ $once = 1 ]; then exit 0; fi
echo "bulletd keeps serving on $BULLETD_SOCKET (pid $pid). In another shell:"
echo "  BULLETD_SOCKET=$BULLETD_SOCKET .venv/bin/bulletd-cli generate 'नमस्कार'"
echo "Ctrl-C stops it."
wait "$pid"
