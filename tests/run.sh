#!/usr/bin/env bash
# Set up the project's environment (.venv, pinned requirements, the _C extension), then run the tests
# in parallel on the available cores (pytest-xdist).
#   bash tests/run.sh [pytest args...]       e.g. -m "not slow" for the quick inner loop
# Environment: PYTEST_WORKERS=N runs N worker processes (default: one per core; 0 = in this process);
# a -n/--numprocesses or -p no:xdist among the pytest args wins. FORCE_CUDA=1 builds _C with its CUDA
# kernels on a machine without a GPU (lst_scripts/setup_env.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source lst_scripts/setup_env.sh

workers="${PYTEST_WORKERS:-$(nproc)}"
for arg in "$@"; do
  case "$arg" in
    -n | -n* | --numprocesses | --numprocesses=* | no:xdist) workers="" ;;
  esac
done
parallel=()
if [ -n "$workers" ] && [ "$workers" != 0 ]; then
  # One thread per worker: the workers already fill the cores.
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  # Whole files per worker: a module's expensive fixtures (trained models) are built once.
  parallel=(-n "$workers" --dist loadfile)
fi
python -m pytest tests "${parallel[@]}" "$@"
