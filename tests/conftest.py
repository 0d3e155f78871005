"""Fixtures shared by several test modules. The data-set writers and tool runners they use are
plain modules beside this file (fixtures_data.py, fixtures_training.py), importable because
pytest puts this folder on sys.path."""
import shutil

import pytest

from fixtures_data import write_coco_fixture
from fixtures_training import tool_env, write_fixture_catalog, write_seed_env_module


@pytest.fixture(scope="module")
def coco_fixture(tmp_path_factory):
    """The COCO-format fixture data set (DatasetFixture)."""
    return write_coco_fixture(str(tmp_path_factory.mktemp("coco")))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """For the command-line tests: the LVIS fixture, its PATHS_CATALOG ("fixture_train",
    "fixture_test") and an environment whose tools start from seeded generators. The module's
    runs (checkpoints of whole experiments) are removed when the module ends."""
    directory = tmp_path_factory.mktemp("tools")
    catalog, fixture = write_fixture_catalog(directory)
    env = tool_env(write_seed_env_module(directory))
    yield {"dir": directory, "catalog": str(catalog), "fixture": fixture, "env": env}
    shutil.rmtree(directory, ignore_errors=True)
