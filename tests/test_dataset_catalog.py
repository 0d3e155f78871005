"""Datasets of one's own: DATASETS.CATALOG_FILE (a YAML file merged into the catalog, paths relative
to it) and register_dataset; a dataset named through them trains and evaluates with the tools, and
the LST chain finds its annotations; mistakes in the file fail with one clear line."""
import json
import os

import pytest

from fixtures_data import write_lvis_fixture
from fixtures_training import TINY_CONFIG, check_ran, run_tool, tiny_cfg, tool_env, write_seed_env_module
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.data import catalog as dataset_catalog
from maskrcnn_benchmark.data.build import build_dataset
from maskrcnn_benchmark.data.catalog import load_dataset_catalog, register_dataset
from maskrcnn_benchmark.lst.phase_config import train_annotation_file


def write_catalog_file(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
    """The LVIS fixture under <tmp>/my_data/ and a catalog file beside it naming it twice (train and
    val), with paths relative to the file; written in the README's format."""
    directory = tmp_path_factory.mktemp("own_data")
    fixture = write_lvis_fixture(str(directory / "my_data"))
    img_dir = os.path.relpath(fixture.root, directory)
    ann_file = os.path.relpath(fixture.ann_file, directory)
    catalog_file = write_catalog_file(directory / "my_catalog.yaml", (
        "my_lt_train: {{img_dir: {0}, ann_file: {1}, format: lvis}}\n"
        "my_lt_val:   {{img_dir: {0}, ann_file: {1}, format: lvis}}\n").format(img_dir, ann_file))
    return {"dir": directory, "fixture": fixture, "catalog_file": str(catalog_file)}


def own_cfg(own_data, output_dir, *opts):
    return tiny_cfg(default_cfg.PATHS_CATALOG, output_dir, "DATASETS.CATALOG_FILE", own_data["catalog_file"],
                    "DATASETS.TRAIN", ("my_lt_train",), "DATASETS.TEST", ("my_lt_val",), *opts)


def test_catalog_file_entries_resolve_relative_to_the_file(own_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory does not matter
    catalog = load_dataset_catalog(own_cfg(own_data, tmp_path))
    entry = catalog.get("my_lt_train")
    assert entry["factory"] == "LVISDataset"
    assert entry["args"] == {"root": own_data["fixture"].root, "ann_file": own_data["fixture"].ann_file}
    assert catalog.get("lvis_v0.5_train")["args"]["ann_file"] == "datasets/lvis/lvis_v0.5_train.json"  # still there
    dataset = build_dataset(["my_lt_train"], None, catalog, is_train=False)[0]
    assert len(dataset) == len(own_data["fixture"].data["images"])


def test_catalog_file_names_the_lst_training_annotations(own_data, tmp_path):
    config = own_cfg(own_data, tmp_path)
    assert train_annotation_file(config) == own_data["fixture"].ann_file


def test_lst_phase_config_describes_a_catalog_file_dataset(own_data):
    # what lst_scripts/run_phases.sh asks before tools/lst_prepare.py
    args = ["--config-dir", os.path.join(os.path.dirname(TINY_CONFIG), "lst"), "--describe",
            "DATASETS.CATALOG_FILE", own_data["catalog_file"],
            "DATASETS.TRAIN", '("my_lt_train",)', "DATASETS.TEST", '("my_lt_val",)']
    result = run_tool("lst_phase_config.py", args, tool_env())
    check_ran(result)
    assert result.stdout.split()[-1] == own_data["fixture"].ann_file


def test_register_dataset(own_data, tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_catalog, "_registered", {})
    monkeypatch.chdir(own_data["dir"])
    fixture = own_data["fixture"]
    register_dataset("registered_train", os.path.relpath(fixture.root), os.path.relpath(fixture.ann_file), "lvis")
    config = own_cfg(own_data, tmp_path, "DATASETS.CATALOG_FILE", "", "DATASETS.TRAIN", ("registered_train",))
    entry = load_dataset_catalog(config).get("registered_train")
    assert entry == {"factory": "LVISDataset", "args": {"root": fixture.root, "ann_file": fixture.ann_file}}
    with pytest.raises(ValueError, match=r"register_dataset\('x'\): format is 'voc'; pass format: lvis or coco"):
        register_dataset("x", fixture.root, fixture.ann_file, "voc")


def test_missing_catalog_file(own_data, tmp_path):
    missing = str(tmp_path / "nowhere.yaml")
    config = own_cfg(own_data, tmp_path, "DATASETS.CATALOG_FILE", missing)
    with pytest.raises(FileNotFoundError, match="DATASETS.CATALOG_FILE '{}' does not exist".format(missing)):
        load_dataset_catalog(config)


def test_unknown_name(own_data, tmp_path):
    config = own_cfg(own_data, tmp_path, "DATASETS.TRAIN", ("my_lt_trian",))
    expected = ("DATASETS.TRAIN names 'my_lt_trian', which is neither an entry of DATASETS.CATALOG_FILE {} "
                "(entries: my_lt_train, my_lt_val)").format(own_data["catalog_file"])
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_dataset_catalog(config)


@pytest.mark.parametrize(
    "entry, error, message",
    [
        ("{img_dir: ../my_data/lvis_v1_images, ann_file: ../my_data/missing.json, format: lvis}", FileNotFoundError,
         "entry 'broken': ann_file .*missing.json does not exist; fix the path or create it"),
        ("{img_dir: ../my_data/no_images, ann_file: ../my_data/lvis_v1_train.json, format: lvis}", FileNotFoundError,
         "entry 'broken': img_dir .*no_images does not exist"),
        ("{img_dir: a, ann_file: b.json, format: voc}", ValueError,
         "entry 'broken': format is 'voc'; write broken: .*format: lvis or coco"),
        ("{img_dir: a, annotations: b.json, format: lvis}", ValueError,
         r"entry 'broken' has \['annotations', 'format', 'img_dir'\], not the keys img_dir, ann_file, format"),
    ],
)
def test_bad_entry_names_the_file_and_the_entry(own_data, tmp_path, entry, error, message):
    catalog_file = write_catalog_file(own_data["dir"] / "bad" / "catalog.yaml", "broken: {}\n".format(entry))
    config = own_cfg(own_data, tmp_path, "DATASETS.CATALOG_FILE", str(catalog_file), "DATASETS.TRAIN", ("broken",))
    with pytest.raises(error, match=str(catalog_file) + ": " + message):
        load_dataset_catalog(config)


def test_train_net_rejects_an_unknown_name_in_one_line(own_data, tmp_path):
    result = run_tool("train_net.py", ["--config-file", TINY_CONFIG, "DATASETS.CATALOG_FILE", own_data["catalog_file"],
                                       "DATASETS.TRAIN", '("nope",)', "OUTPUT_DIR", tmp_path], tool_env())
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith("error: DATASETS.TRAIN names 'nope'")


@pytest.mark.slow
def test_a_catalog_file_dataset_trains_and_evaluates(own_data, tmp_path):
    env = tool_env(write_seed_env_module(tmp_path), threads=1)
    names = ["DATASETS.CATALOG_FILE", own_data["catalog_file"],
             "DATASETS.TRAIN", '("my_lt_train",)', "DATASETS.TEST", '("my_lt_val",)']
    output_dir = tmp_path / "train"
    check_ran(run_tool("train_net.py", ["--config-file", TINY_CONFIG, *names, "SOLVER.MAX_ITER", 2,
                                        "SOLVER.STEPS", "(1,)", "OUTPUT_DIR", output_dir], env))
    assert (output_dir / "model_final.pth").is_file()
    metrics = json.loads((output_dir / "inference" / "my_lt_val" / "metrics.json").read_text())
    assert {"bbox", "segm"} <= set(metrics)
    # the training annotations, found through the catalog file, give the paper's instance-count bins
    assert list(metrics["segm"]["bins"])[0] == "(0,1]"

    test_dir = tmp_path / "test"
    check_ran(run_tool("test_net.py", ["--config-file", TINY_CONFIG, "--ckpt", output_dir / "model_final.pth",
                                       *names, "OUTPUT_DIR", test_dir], env))
    tested = json.loads((test_dir / "inference" / "my_lt_val" / "metrics.json").read_text())
    assert tested == metrics
