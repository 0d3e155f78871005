"""The custom-environment hook that every CLI runs first (upstream's TORCH_DETECTRON_ENV_MODULE)."""
import os

from maskrcnn_benchmark.utils.imports import import_file


def setup_environment():
    """Run ``setup_environment()`` of the module named by $TORCH_DETECTRON_ENV_MODULE, if set."""
    custom_module_path = os.environ.get("TORCH_DETECTRON_ENV_MODULE")
    if custom_module_path:
        setup_custom_environment(custom_module_path)


def setup_custom_environment(custom_module_path):
    if not os.path.isfile(custom_module_path):
        raise FileNotFoundError(
            f"TORCH_DETECTRON_ENV_MODULE points at '{custom_module_path}', which does not exist; "
            "unset it or point it at a Python file defining setup_environment()"
        )
    module = import_file("maskrcnn_benchmark.utils.env.custom_module", custom_module_path)
    if not callable(getattr(module, "setup_environment", None)):
        raise ImportError(f"'{custom_module_path}' must define a function setup_environment()")
    module.setup_environment()


setup_environment()
