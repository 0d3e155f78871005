#!/usr/bin/env bash
# The GPU checks of BENCHMARKS.md in one go, for a machine with a CUDA GPU and torch installed:
# build _C with the CUDA kernels (unless it already has them), the CUDA tests, the kernel, model
# and MWG-memory benchmarks on the GPU, and a short training run of the synthetic config through
# torchrun (NCCL). Uses the python3 on PATH (your environment), not .venv.
#
#   bash tools/benchmarks/gpu_checks.sh [RESULTS_DIR]      # default output/gpu_checks
#
# Writes RESULTS_DIR/log.txt (everything, with elapsed seconds), kernels.md, model.md, mwg.md and
# train.log. Each step has a time limit, so a slow or hung step cannot eat the whole session.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
results="${1:-output/gpu_checks}"
mkdir -p "$results"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
step() { echo "== [$(( $(date +%s) - start )) s] $*"; }
{
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_checks.sh: torch sees no CUDA GPU")' || exit 1
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__, torch.cuda.get_device_name())'
if ! python3 -c 'import torch, sys; from maskrcnn_benchmark import _C; sys.exit(0 if _C.compiled_with_cuda else 1)' 2>/dev/null; then
  step "building _C with CUDA kernels (log: $results/build.log)"
  rm -rf build maskrcnn_benchmark/_C*.so
  FORCE_CUDA=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" python3 setup.py build_ext --inplace > "$results/build.log" 2>&1 \
    || { tail -n 30 "$results/build.log"; exit 1; }
fi
step "CUDA tests"
timeout 600 python3 -m pytest -q -p no:cacheprovider -rs tests/test_cuda_kernels.py tests/test_kernel_errors.py
timeout 600 python3 -m pytest -q -p no:cacheprovider -rs -k "cuda or gpu" tests/test_bounding_box.py \
  tests/test_detectors.py tests/test_engine.py tests/lst/test_lst_distillation.py tests/test_poolers.py tests/test_rpn.py
step "kernel benchmark"
timeout 300 python3 tools/benchmarks/bench_kernels.py --device cuda --repeats 20 > "$results/kernels.md" 2>&1
step "model benchmark"
timeout 600 python3 tools/benchmarks/bench_model.py --device cuda --repeats 10 --warmup 3 > "$results/model.md" 2>&1
if [ ! -f datasets/synthetic_lt/train.json ]; then
  step "synthetic data set"
  python3 tools/make_synthetic_lvis.py --output datasets/synthetic_lt --force
fi
step "training the synthetic config, 400 iterations, then its test"
timeout 900 torchrun --standalone --nproc_per_node 1 tools/train_net.py \
  --config-file configs/synthetic/e2e_mask_rcnn_R_18_FPN_cpu.yaml MODEL.DEVICE cuda SOLVER.MAX_ITER 400 \
  SOLVER.CHECKPOINT_PERIOD 400 OUTPUT_DIR "$results/train_synthetic" > "$results/train.log" 2>&1
grep -h "Total training time\|segm AP per" "$results/train.log"
step "MWG memory benchmark"
timeout 600 python3 tools/benchmarks/bench_mwg_memory.py --device cuda --phase-sizes 160 960 > "$results/mwg.md" 2>&1
tail -n 2 "$results/mwg.md"
step done
} 2>&1 | tee "$results/log.txt"
