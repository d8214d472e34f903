#!/usr/bin/env bash
# Create Saras' process work pool on the Prefect server in PREFECT_API_URL and register every
# deployment of prefect.yaml. Run from anywhere; the repository is where this script lives.
set -euo pipefail
cd "$(dirname "$0")/.."
export SARAS_REPO_DIR="$PWD"
prefect work-pool create saras --type process --base-job-template deployments/work-pool.json --overwrite
prefect --no-prompt deploy --all
echo "now start a worker: SARAS_REPO_DIR=$PWD prefect worker start --pool saras"
