#!/usr/bin/env bash
# The test command: set up .venv (idempotent; seconds when nothing changed), lint, run the whole suite.
# Extra arguments go to pytest, e.g. scripts/run_tests.sh -k transport -x
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup_env.sh"
venv=${ENDOARSS_VENV:-$repo/.venv}
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
cd "$repo"
echo "[test] ruff check"
"$venv/bin/ruff" check .
echo "[test] pytest"
exec "$venv/bin/python" -m pytest test "$@"
