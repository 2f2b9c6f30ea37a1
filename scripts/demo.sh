#!/usr/bin/env bash
# The main job: set up .venv (idempotent), then run the end-to-end demo (endoarss demo). Extra arguments go to it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/scripts/setup_env.sh"
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE
cd "$repo"
exec "${ENDOARSS_VENV:-$repo/.venv}/bin/endoarss" demo "$@"
