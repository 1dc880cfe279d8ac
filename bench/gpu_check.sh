#!/usr/bin/env bash
# The prepared GPU check (see bench/gpu_check.py): bench/gpu_check.sh OUT [--smoke] [--data-dir DIR]
# Runs with whatever python3 holds torch (on the GPU machine there is no .venv) and cnnlab's
# sources on the path; the whole check stays inside 8 minutes on one H100/H200.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
[ -x "$root/.venv/bin/python" ] && [ -z "${PYTHON:-}" ] && py="$root/.venv/bin/python"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$py" "$root/bench/gpu_check.py" "$@"
