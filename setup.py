"""Build and install maskrcnn_benchmark and its ``_C`` extension.

CPU-only by default. CUDA kernels are compiled when a GPU is visible (and a CUDA toolkit is
found) or when ``FORCE_CUDA=1``, never when ``FORCE_CUDA=0``; ``TORCH_CUDA_ARCH_LIST`` then defaults to "8.0;9.0" when no GPU
can be asked for its architecture. ``CUDA_HOME`` defaults to ``/usr/local/cuda``.

    pip install -e . --no-build-isolation        # or: python setup.py build develop
"""
import glob
import os
import site
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")

if "CUDA_HOME" not in os.environ and os.path.isdir("/usr/local/cuda"):
    # torch otherwise guesses the parent of the nvcc on PATH, which may lack lib64/libcudart.
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402  (CUDA_HOME must be set before cpp_extension reads it)
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def _wheel_cuda_include_dirs():
    """CUDA headers shipped inside the torch wheel (``nvidia/cu*/include``).

    ATen's CUDA headers include libraries (cusparse, ...) that a bare system toolkit may lack.
    """
    roots = site.getsitepackages() + [site.getusersitepackages()]
    roots.append(os.path.dirname(os.path.dirname(torch.__file__)))
    found = []
    for root in roots:
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "include"))):
            if inc not in found:
                found.append(inc)
    return found


def _want_cuda():
    """FORCE_CUDA=1: always; FORCE_CUDA=0: never; unset: where a GPU is visible and a toolkit found."""
    force = os.environ.get("FORCE_CUDA", "")
    if force in ("0", "1"):
        return force == "1"
    return torch.cuda.is_available() and CUDA_HOME is not None


def get_extensions():
    sources = [os.path.join(CSRC, "vision.cpp")] + sorted(glob.glob(os.path.join(CSRC, "cpu", "*.cpp")))
    extra_compile_args = {"cxx": ["-O3"]}
    define_macros = []
    include_dirs = [CSRC]
    extension = CppExtension

    if _want_cuda():
        if CUDA_HOME is None:
            sys.exit("FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the folder holding bin/nvcc.")
        if not torch.cuda.is_available():
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        extension = CUDAExtension
        sources += sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu")))
        define_macros += [("WITH_CUDA", None)]
        include_dirs += _wheel_cuda_include_dirs()
        extra_compile_args["nvcc"] = [
            "-O3",
            "-DCUDA_HAS_FP16=1",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ]

    return [
        extension(
            "maskrcnn_benchmark._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
        )
    ]


setup(
    name="maskrcnn_benchmark",
    version="0.2.0",
    description="maskrcnn-benchmark on modern PyTorch, with Learning to Segment the Tail (LST)",
    packages=find_packages(exclude=("configs", "tests", "tests.*", "tools", "tools.*")),
    python_requires=">=3.10",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
