#!/usr/bin/env bash
# The main job: set up the environment, make the embedded benchmark if it is missing, then run the
# LST phase chain on it.
#   bash lst_scripts/run_phases.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source lst_scripts/setup_env.sh
if [ ! -f datasets/synthetic_lt/train.json ] || [ ! -f datasets/synthetic_lt/val.json ]; then
  python tools/make_synthetic_lvis.py --output datasets/synthetic_lt --force
fi
echo "Environment and embedded benchmark ready (.venv, maskrcnn_benchmark._C, datasets/synthetic_lt)." >&2
echo "The LST phase chain is not available yet: the phase division, balanced replay, distillation and" >&2
echo "the phase runner are still to be built. A plain Mask R-CNN baseline on the benchmark trains with:" >&2
echo "  python tools/train_net.py --config-file configs/synthetic/e2e_mask_rcnn_R_18_FPN_cpu.yaml OUTPUT_DIR output/synthetic/mask_rcnn" >&2
exit 2
