#!/usr/bin/env bash
# Sourced by tests/run.sh and lst_scripts/run_phases.sh: create or reuse .venv, install the pinned
# requirements, build maskrcnn_benchmark._C (with its CUDA kernels where a GPU is visible and nvcc
# exists, or when FORCE_CUDA=1; CPU only when LST_CPU_ONLY=1), and activate the environment. Each
# step is skipped when its inputs have not changed; pip's and the compiler's output go to logs
# under .venv/.lst-stamps/, whose tails are printed on failure.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv with $python_bin"
  "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"

stamp_dir="$venv/.lst-stamps"
mkdir -p "$stamp_dir"

req_hash=$(sha256sum "$repo_root/requirements.txt" | cut -d' ' -f1)
if [ "$(cat "$stamp_dir/requirements" 2>/dev/null)" != "$req_hash" ]; then
  pip_log="$stamp_dir/pip.log"
  echo "[setup] installing requirements.txt (log: $pip_log)"
  if ! { python -m pip install --upgrade pip && python -m pip install -r "$repo_root/requirements.txt"; } > "$pip_log" 2>&1; then
    tail -n 40 "$pip_log" >&2
    echo "[setup] error: installing requirements.txt failed; the whole log is $pip_log (see INSTALL.md)" >&2
    return 1
  fi
  echo "$req_hash" > "$stamp_dir/requirements"
fi

# A GPU is visible when nvidia-smi lists one and torch can use it.
gpu_visible() {
  nvidia-smi -L 2>/dev/null | grep -q '^GPU' && python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null
}
if [ -n "${LST_CPU_ONLY:-}" ]; then
  export FORCE_CUDA=0
elif [ -z "${FORCE_CUDA:-}" ]; then
  if { command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; } && gpu_visible; then
    export FORCE_CUDA=1
  else
    export FORCE_CUDA=0
  fi
fi
build_mode="cpu"
[ "$FORCE_CUDA" = "1" ] && build_mode="cuda:${TORCH_CUDA_ARCH_LIST:-default}"
src_hash=$( (cd "$repo_root" && cat setup.py $(find csrc -type f | sort) | sha256sum | cut -d' ' -f1; echo "$build_mode"; python -c 'import torch; print(torch.__version__)') | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_dir/extension" 2>/dev/null)" != "$src_hash" ] || ! ls "$repo_root"/maskrcnn_benchmark/_C*.so >/dev/null 2>&1; then
  build_log="$stamp_dir/build.log"
  echo "[setup] building maskrcnn_benchmark._C ($build_mode); the first build takes several minutes (log: $build_log)"
  if ! (cd "$repo_root" && MAX_JOBS="${MAX_JOBS:-$(nproc)}" python setup.py build_ext --inplace) > "$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    echo "[setup] error: building maskrcnn_benchmark._C failed; the whole log is $build_log (see INSTALL.md)" >&2
    return 1
  fi
  # A kernel's input check throws a C++ exception through torch's libc10; with a compiler whose C++
  # runtime is not torch's (seen: a gcc that links no shared libstdc++), that crashes Python.
  if ! (cd "$repo_root" && python -c '
import torch
from maskrcnn_benchmark import _C
try:
    _C.nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
except RuntimeError:
    pass
') >/dev/null 2>&1; then
    echo "[setup] error: the freshly built maskrcnn_benchmark._C crashes (instead of raising RuntimeError) when a" \
      "kernel rejects its input: it was compiled with ${CXX:-the default c++}, whose C++ runtime is not torch's." \
      "Rebuild with the system compiler, e.g. CC=/usr/bin/gcc CXX=/usr/bin/g++ bash tests/run.sh" \
      "(torch names its compiler in: python -c 'import torch; print(torch.__config__.show())')." >&2
    return 1
  fi
  echo "$src_hash" > "$stamp_dir/extension"
fi

site_packages=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ "$(cat "$site_packages/maskrcnn_benchmark-dev.pth" 2>/dev/null)" != "$repo_root" ]; then
  # An editable install without a second build: the repo root on sys.path.
  echo "$repo_root" > "$site_packages/maskrcnn_benchmark-dev.pth"
fi
