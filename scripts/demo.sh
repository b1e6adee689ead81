#!/usr/bin/env bash
# bulletd on child_models/ with the example home, and four first requests through the mother:
# a Marathi light command (the home agent's dry run), an English sum (the calc agent), a Marathi
# prompt (marathi continues it) and a fortune. Needs an installed project (scripts/setup.sh);
# scripts/quickstart.sh does both.
#
#   scripts/demo.sh [--once]
set -euo pipefail
cd "$(dirname "$0")/.."
once=0
if [ "${1:-}" = "--once" ]; then once=1; shift; fi

run_dir=$(mktemp -d "${TMPDIR:-/tmp}/bulletd-quickstart.XXXXXX")
export BULLETD_SOCKET="$run_dir/bulletd.sock"
bulletd --models child_models --trust child_models/release.pub.pem --home examples/home.yaml \
  --socket "$BULLETD_SOCKET" 2> "$run_dir/bulletd.log" &
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
echo "== 1. a Marathi light command (the home agent, a dry run on examples/home.yaml)"
echo "\$ bulletd-cli ask 'बेडरूममधला दिवा बंद कर'"
bulletd-cli ask 'बेडरूममधला दिवा बंद कर'
echo
echo "== 2. an English arithmetic question (the calc agent: an expression, then exact arithmetic)"
echo "\$ bulletd-cli ask 'what is 17 times 23'"
bulletd-cli ask 'what is 17 times 23'
echo
echo "== 3. a Marathi prompt (marathi continues it)"
echo "\$ bulletd-cli generate 'तुमची फाइल' --max-tokens 40 --temperature 0"
bulletd-cli generate 'तुमची फाइल' --max-tokens 40 --temperature 0
echo
echo "== 4. a fortune"
echo "\$ bulletd-cli generate 'tell me my fortune' --max-tokens 60 --seed 7"
bulletd-cli generate 'tell me my fortune' --max-tokens 60 --seed 7
echo
if [ $once = 1 ]; then exit 0; fi
echo "bulletd keeps serving on $BULLETD_SOCKET (pid $pid). In another shell:"
echo "  BULLETD_SOCKET=$BULLETD_SOCKET .venv/bin/bulletd-cli ask 'turn on the bedroom fan'"
echo "Ctrl-C stops it."
wait "$pid"
