#!/usr/bin/env bash
# Set everything up, start bulletd on the children shipped in child_models/ (signatures checked
# against child_models/release.pub.pem, the home agent on examples/home.yaml), and show four first
# requests through the mother. The daemon then keeps serving in the foreground until Ctrl-C (or
# exits with --once).
#
#   scripts/quickstart.sh [--once]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
exec scripts/demo.sh "$@"
