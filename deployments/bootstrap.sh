#!/usr/bin/env bash
# Bootstrap Saras on the Prefect server in PREFECT_API_URL: the `saras` process work pool,
# every deployment of prefect.yaml (schedules and triggers), and the alert automations of
# deployments/automations/ (notification block: SARAS_ALERT_WEBHOOK_URL or SARAS_ALERT_BLOCK).
# Run from anywhere; re-running updates everything in place. See deployments/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PREFECT_API_URL:-}" ]; then
  echo "PREFECT_API_URL is not set: point it at your Prefect server, e.g." >&2
  echo "  export PREFECT_API_URL=http://127.0.0.1:4200/api" >&2
  exit 2
fi
export SARAS_REPO_DIR="$PWD"
PYTHON="${PYTHON:-python}"
"$PYTHON" -m prefect work-pool create saras --type process \
  --base-job-template deployments/work-pool.json --overwrite
"$PYTHON" -m prefect --no-prompt deploy --all
"$PYTHON" deployments/automations.py
echo "now start a worker (SARAS_DATABASE_URL, SARAS_SECRET_KEYS and PREFECT_API_URL set):"
echo "  SARAS_REPO_DIR=$PWD prefect worker start --pool saras"
