"""Environment report for logs: PyTorch's summary plus the versions this project depends on."""
import importlib.metadata

from torch.utils.collect_env import get_pretty_env_info


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def collect_env_info():
    lines = [get_pretty_env_info(), ""]
    for package in ("torchvision", "pillow", "pycocotools", "lvis", "opencv-python-headless", "yacs"):
        lines.append(f"{package}: {_version(package)}")
    try:
        from maskrcnn_benchmark import _C

        lines.append(f"maskrcnn_benchmark._C: built, CUDA kernels {'on' if _C.compiled_with_cuda else 'off'}")
    except ImportError as error:
        lines.append(f"maskrcnn_benchmark._C: not importable ({error})")
    return "\n".join(lines)
