#!/usr/bin/env bash
# Set up the project's environment (.venv, pinned requirements, the _C extension), then run the tests.
#   bash tests/run.sh [pytest args...]
# Environment: LST_CPU_ONLY=1 builds _C without CUDA even where nvcc exists.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source lst_scripts/setup_env.sh
python -m pytest tests "$@"
