"""Download a weights URL once into a local cache; rank 0 downloads while the other ranks wait."""
import logging
import os
import re
from urllib.parse import urlparse

import torch.hub

from maskrcnn_benchmark.utils.comm import is_main_process, synchronize

logger = logging.getLogger(__name__)

# "resnet18-5c106cde.pth" -> "5c106cde": the leading hex digits of the file's SHA-256 (torch.hub's rule).
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


def default_model_dir():
    """$TORCH_MODEL_ZOO, else $TORCH_HOME/models, else ~/.torch/models (upstream's order)."""
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", "~/.torch"))
    return os.path.expanduser(os.getenv("TORCH_MODEL_ZOO", os.path.join(torch_home, "models")))


def _cached_filename(url):
    """File name in the cache: the URL's base name, or its whole path for Detectron's "model_final.pkl"."""
    path = urlparse(url).path
    filename = os.path.basename(path)
    if filename == "model_final.pkl":
        # every Detectron baseline has this name; the path (with "/" -> "_") tells them apart
        filename = path.replace("/", "_")
    return filename


def _hash_prefix(filename):
    """The SHA-256 prefix to verify, or None. Caffe2 names such as "R-50.pkl" look hashed ("-50.")
    but are not, so prefixes shorter than 6 digits are ignored, as upstream does."""
    match = HASH_REGEX.search(filename)
    if match is None or len(match.group(1)) < 6:
        return None
    return match.group(1)


def cache_url(url, model_dir=None, progress=True):
    """Path of a local copy of ``url``, downloading it first if the cache lacks it.

    Args:
        url (str): http(s) (or file://) URL of a weights file.
        model_dir (str, optional): cache folder; default :func:`default_model_dir`.
        progress (bool): show a progress bar while downloading.

    Only the main process downloads; all processes meet at a barrier afterwards. If the file is
    still missing then (no network, HTTP error, hash mismatch), every process raises a
    RuntimeError naming the URL and how to provide the file by hand.

    Example:
        >>> cache_url("https://download.pytorch.org/models/resnet18-5c106cde.pth")
    """
    model_dir = model_dir or default_model_dir()
    os.makedirs(model_dir, exist_ok=True)
    filename = _cached_filename(url)
    cached_file = os.path.join(model_dir, filename)
    failure = None
    if not os.path.exists(cached_file) and is_main_process():
        logger.info('Downloading "%s" to %s', url, cached_file)
        try:
            torch.hub.download_url_to_file(url, cached_file, _hash_prefix(filename), progress=progress)
        except Exception as error:  # re-raised below, after the barrier, on every rank
            failure = error
    synchronize()
    if not os.path.exists(cached_file):
        reason = f": {failure}" if failure is not None else " (the main process could not download it)"
        raise RuntimeError(
            f"Could not download {url} to {cached_file}{reason}. If this machine has no network "
            f"access, download the file elsewhere, copy it here and set MODEL.WEIGHT to its local "
            f"path (or place it at {cached_file}, where it will be found)."
        ) from failure
    return cached_file
