"""Config defaults, the YAML configs and the path catalogs.

Reference values come from upstream maskrcnn-benchmark (its defaults.py, configs/ and
paths_catalog.py at HEAD 57eec25) and from Detectron's published model URLs.
"""
import glob
import os
import re

import pytest

from maskrcnn_benchmark.config import cfg, merge_config_file
from maskrcnn_benchmark.utils.imports import import_file

CONFIG_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
CONFIG_FILES = sorted(glob.glob(os.path.join(CONFIG_ROOT, "**", "*.yaml"), recursive=True))

# Dataset names used by upstream configs whose loaders (Pascal VOC XML, native Cityscapes) this fork
# does not build; their COCO-format ("*_cocostyle") twins are in the catalog.
UNSUPPORTED_UPSTREAM_DATASETS = {
    "voc_2007_train",
    "voc_2007_val",
    "voc_2007_test",
    "cityscapes_mask_instance_train",
    "cityscapes_mask_instance_val",
    "cityscapes_poly_instance_train",
    "cityscapes_poly_instance_val",
}


@pytest.fixture(scope="module")
def catalog():
    """The paths catalog, loaded by path from cfg.PATHS_CATALOG as the data builder does."""
    return import_file("maskrcnn_benchmark.config.paths_catalog_under_test", cfg.PATHS_CATALOG)


def _merged(*yaml_relpaths, opts=()):
    config = cfg.clone()
    for rel in yaml_relpaths:
        merge_config_file(config, os.path.join(CONFIG_ROOT, rel))
    config.merge_from_list(list(opts))
    return config


def _write_yaml(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- YAML configs


def test_upstream_config_set_is_present():
    names = {os.path.relpath(f, CONFIG_ROOT) for f in CONFIG_FILES}
    for expected in (
        "e2e_mask_rcnn_R_50_FPN_1x.yaml",
        "e2e_mask_rcnn_X_101_32x8d_FPN_1x.yaml",
        "caffe2/e2e_mask_rcnn_R_50_FPN_1x_caffe2.yaml",
        "quick_schedules/e2e_mask_rcnn_R_50_FPN_quick.yaml",
        "gn_baselines/e2e_mask_rcnn_R_50_FPN_1x_gn.yaml",
        "retinanet/retinanet_R-50-FPN_1x.yaml",
        "dcn/e2e_mask_rcnn_dconv_R_50_FPN_1x.yaml",
        "pascal_voc/e2e_mask_rcnn_R_50_FPN_1x_cocostyle.yaml",
        "cityscapes/e2e_mask_rcnn_R_50_FPN_1x_poly.yaml",
        "test_time_aug/e2e_mask_rcnn_R_50_FPN_1x.yaml",
    ):
        assert expected in names
    assert len(CONFIG_FILES) >= 66  # upstream ships 66 YAMLs


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: os.path.relpath(p, CONFIG_ROOT))
def test_every_config_merges_into_the_defaults(path):
    config = cfg.clone()
    merge_config_file(config, path)
    config.freeze()
    assert config.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"


def test_merging_a_config_leaves_the_global_defaults_untouched():
    _merged("e2e_mask_rcnn_R_50_FPN_1x.yaml")
    assert cfg.MODEL.MASK_ON is False
    assert cfg.MODEL.BACKBONE.CONV_BODY == "R-50-C4"


def test_mask_rcnn_r50_fpn_values_match_upstream():
    c = _merged("e2e_mask_rcnn_R_50_FPN_1x.yaml")
    assert c.MODEL.WEIGHT == "catalog://ImageNetPretrained/MSRA/R-50"
    assert c.MODEL.BACKBONE.CONV_BODY == "R-50-FPN"
    assert c.MODEL.RESNETS.BACKBONE_OUT_CHANNELS == 256
    assert c.MODEL.RPN.ANCHOR_STRIDE == (4, 8, 16, 32, 64)
    assert (c.MODEL.RPN.PRE_NMS_TOP_N_TRAIN, c.MODEL.RPN.PRE_NMS_TOP_N_TEST) == (2000, 1000)
    assert c.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST == 1000
    assert c.MODEL.ROI_BOX_HEAD.POOLER_SCALES == (0.25, 0.125, 0.0625, 0.03125)
    assert c.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION == 7
    assert c.MODEL.ROI_MASK_HEAD.RESOLUTION == 28
    assert c.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR is False
    assert c.MODEL.MASK_ON is True
    assert c.DATASETS.TRAIN == ("coco_2014_train", "coco_2014_valminusminival")
    assert c.DATASETS.TEST == ("coco_2014_minival",)
    assert c.DATALOADER.SIZE_DIVISIBILITY == 32
    assert (c.SOLVER.BASE_LR, c.SOLVER.WEIGHT_DECAY) == (0.02, 0.0001)
    assert (c.SOLVER.STEPS, c.SOLVER.MAX_ITER) == ((60000, 80000), 90000)


def test_x101_and_gn_and_tta_values_match_upstream():
    x101 = _merged("e2e_mask_rcnn_X_101_32x8d_FPN_1x.yaml")
    assert (x101.MODEL.RESNETS.NUM_GROUPS, x101.MODEL.RESNETS.WIDTH_PER_GROUP) == (32, 8)
    assert x101.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert x101.MODEL.WEIGHT == "catalog://ImageNetPretrained/FAIR/20171220/X-101-32x8d"
    assert x101.SOLVER.IMS_PER_BATCH == 8

    gn = _merged("gn_baselines/scratch_e2e_mask_rcnn_R_50_FPN_3x_gn.yaml")
    assert gn.MODEL.WEIGHT == ""
    assert gn.MODEL.BACKBONE.FREEZE_CONV_BODY_AT == 0
    assert gn.MODEL.RESNETS.TRANS_FUNC == "BottleneckWithGN"
    assert gn.SOLVER.STEPS == (210000, 250000)

    tta = _merged("test_time_aug/e2e_mask_rcnn_R_50_FPN_1x.yaml")
    assert tta.TEST.BBOX_AUG.ENABLED is True
    assert tta.TEST.BBOX_AUG.SCALES == (400, 500, 600, 700, 900, 1000, 1100, 1200)
    assert tta.TEST.BBOX_AUG.MAX_SIZE == 2000


# --------------------------------------------------------------------------- yacs behaviour


def test_unknown_key_in_a_yaml_raises_with_the_key_name(tmp_path):
    path = _write_yaml(tmp_path, "MODEL:\n  ROI_BOX_HEAD:\n    NUM_CLASSSES: 3\n")
    with pytest.raises(KeyError, match=r"MODEL\.ROI_BOX_HEAD\.NUM_CLASSSES"):
        cfg.clone().merge_from_file(path)


def test_unknown_key_in_a_list_raises_with_the_key_name():
    with pytest.raises(AssertionError, match=r"SOLVER\.BASE_LRR"):
        cfg.clone().merge_from_list(["SOLVER.BASE_LRR", "0.1"])


def test_merge_from_list_decodes_values():
    c = cfg.clone()
    c.merge_from_list(
        [
            "SOLVER.BASE_LR", "0.0025",
            "INPUT.MIN_SIZE_TRAIN", "(640, 672, 704)",
            "MODEL.LST.DISTILL.ENABLED", "True",
            "DATASETS.TRAIN", "('lvis_v0.5_train',)",
            "DTYPE", "bfloat16",
        ]
    )
    assert c.SOLVER.BASE_LR == 0.0025
    assert c.INPUT.MIN_SIZE_TRAIN == (640, 672, 704)
    assert c.MODEL.LST.DISTILL.ENABLED is True
    assert c.DATASETS.TRAIN == ("lvis_v0.5_train",)
    assert c.DTYPE == "bfloat16"


def test_a_value_of_the_wrong_type_is_rejected():
    with pytest.raises(ValueError, match=r"SOLVER\.MAX_ITER"):
        cfg.clone().merge_from_list(["SOLVER.MAX_ITER", "'many'"])


def test_a_frozen_config_cannot_be_changed():
    c = cfg.clone()
    c.freeze()
    with pytest.raises(AttributeError):
        c.SOLVER.BASE_LR = 1.0


@pytest.mark.parametrize(
    "authors_key, value, new_key",
    [
        ("MODEL.FEW_SHOT.ScaleCls", "10", "MODEL.ROI_BOX_HEAD.COSINE_SCALE"),
        ("MODEL.USE_DISTILL", "True", "MODEL.LST.DISTILL.ENABLED"),
        ("MODEL.NUM_DISTILL_CLASSES", "270", "MODEL.LST.NUM_OLD_CLASSES"),
        ("MODEL.DISTILL_WEIGHTS_FILE", "x.json", "MODEL.LST.DISTILL.TEACHER_WEIGHT"),
        ("MODEL.QRY_BALANCE", "True", "DATALOADER.SAMPLER"),
        ("MODEL.QRY_INDICE_CLS", "x.json", "MODEL.LST.REPLAY_PLAN_FILE"),
        ("SOLVER.USE_CAS", "True", "DATALOADER.SAMPLER"),
    ],
)
def test_the_authors_lst_keys_point_to_their_new_names(tmp_path, authors_key, value, new_key):
    *parents, leaf = authors_key.split(".")
    text = "".join("  " * depth + f"{name}:\n" for depth, name in enumerate(parents))
    text += "  " * len(parents) + f"{leaf}: {value}\n"
    with pytest.raises(KeyError, match=new_key.replace(".", r"\.")):
        cfg.clone().merge_from_file(_write_yaml(tmp_path, text))


# --------------------------------------------------------------------------- defaults


@pytest.mark.parametrize(
    "key, upstream_value",
    [
        ("MODEL.DEVICE", "cuda"),
        ("MODEL.META_ARCHITECTURE", "GeneralizedRCNN"),
        ("MODEL.BACKBONE.CONV_BODY", "R-50-C4"),
        ("MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 2),
        ("MODEL.RPN.ANCHOR_SIZES", (32, 64, 128, 256, 512)),
        ("MODEL.RPN.ANCHOR_STRIDE", (16,)),
        ("MODEL.RPN.ASPECT_RATIOS", (0.5, 1.0, 2.0)),
        ("MODEL.RPN.PRE_NMS_TOP_N_TRAIN", 12000),
        ("MODEL.RPN.PRE_NMS_TOP_N_TEST", 6000),
        ("MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", 2000),
        ("MODEL.RPN.FPN_POST_NMS_PER_BATCH", True),
        ("MODEL.RPN.RPN_HEAD", "SingleConvRPNHead"),
        ("MODEL.ROI_HEADS.BBOX_REG_WEIGHTS", (10.0, 10.0, 5.0, 5.0)),
        ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 512),
        ("MODEL.ROI_HEADS.POSITIVE_FRACTION", 0.25),
        ("MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 100),
        ("MODEL.ROI_BOX_HEAD.NUM_CLASSES", 81),
        ("MODEL.ROI_BOX_HEAD.POOLER_SCALES", (1.0 / 16,)),
        ("MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS", (512, 512, 512, 512, 512, 512, 512, 512)),
        ("MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 1024),
        ("MODEL.RESNETS.STAGE_WITH_DCN", (False, False, False, False)),
        ("MODEL.RETINANET.ANCHOR_STRIDES", (8, 16, 32, 64, 128)),
        ("MODEL.RETINANET.BBOX_REG_BETA", 0.11),
        ("MODEL.FBNET.DET_HEAD_BLOCKS", []),
        ("INPUT.MIN_SIZE_TRAIN", (800,)),
        ("INPUT.PIXEL_MEAN", [102.9801, 115.9465, 122.7717]),
        ("INPUT.PIXEL_STD", [1.0, 1.0, 1.0]),
        ("DATALOADER.SIZE_DIVISIBILITY", 0),
        ("SOLVER.BASE_LR", 0.001),
        ("SOLVER.WEIGHT_DECAY", 0.0005),
        ("SOLVER.WARMUP_FACTOR", 1.0 / 3),
        ("SOLVER.WARMUP_ITERS", 500),
        ("SOLVER.STEPS", (30000,)),
        ("TEST.IMS_PER_BATCH", 8),
        ("TEST.BBOX_AUG.MAX_SIZE", 4000),
        ("OUTPUT_DIR", "."),
        ("DTYPE", "float32"),
        ("AMP_VERBOSE", False),
    ],
)
def test_upstream_default(key, upstream_value):
    node = cfg
    for part in key.split("."):
        node = node[part]
    assert node == upstream_value
    assert type(node) is type(upstream_value)


def test_lst_features_are_off_by_default():
    """Defaults must reproduce upstream Mask R-CNN: no LST component is switched on."""
    assert cfg.MODEL.ROI_BOX_HEAD.PREDICTOR == "FastRCNNPredictor"
    assert cfg.MODEL.ROI_MASK_HEAD.USE_BBOX2MASK is False
    assert cfg.MODEL.ROI_MASK_HEAD.USE_MLPMASK is False
    assert cfg.MODEL.LST.PHASE == 0
    assert cfg.MODEL.LST.PHASES_FILE == ""
    assert cfg.MODEL.LST.NUM_OLD_CLASSES == 0
    assert cfg.MODEL.LST.DISTILL.ENABLED is False
    assert cfg.MODEL.FEW_SHOT.ENABLED is False
    assert cfg.DATALOADER.SAMPLER == ""
    assert cfg.TENSORBOARD_EXPERIMENT == ""


def test_paths_catalog_key_is_an_absolute_path_to_the_catalog():
    assert os.path.isabs(cfg.PATHS_CATALOG)
    assert os.path.isfile(cfg.PATHS_CATALOG)
    assert os.path.basename(cfg.PATHS_CATALOG) == "paths_catalog.py"


# --------------------------------------------------------------------------- DatasetCatalog


@pytest.mark.parametrize(
    "name, factory, root, ann_file",
    [
        ("coco_2014_train", "COCODataset", "coco/train2014", "coco/annotations/instances_train2014.json"),
        ("coco_2014_minival", "COCODataset", "coco/val2014", "coco/annotations/instances_minival2014.json"),
        ("coco_2017_val", "COCODataset", "coco/val2017", "coco/annotations/instances_val2017.json"),
        (
            "keypoints_coco_2014_train",
            "COCODataset",
            "coco/train2014",
            "coco/annotations/person_keypoints_train2014.json",
        ),
        (
            "voc_2012_train_cocostyle",
            "COCODataset",
            "voc/VOC2012/JPEGImages",
            "voc/VOC2012/Annotations/pascal_train2012.json",
        ),
        ("lvis_v0.5_train", "LVISDataset", "coco/train2017", "lvis/lvis_v0.5_train.json"),
        ("lvis_v0.5_val", "LVISDataset", "coco/val2017", "lvis/lvis_v0.5_val.json"),
        ("lvis_v1_train", "LVISDataset", "coco", "lvis/lvis_v1_train.json"),
        ("lvis_v1_val", "LVISDataset", "coco", "lvis/lvis_v1_val.json"),
        ("synthetic_lt_train", "LVISDataset", "synthetic_lt/images/train", "synthetic_lt/train.json"),
        ("synthetic_lt_val", "LVISDataset", "synthetic_lt/images/val", "synthetic_lt/val.json"),
    ],
)
def test_dataset_catalog_get(catalog, name, factory, root, ann_file):
    entry = catalog.DatasetCatalog.get(name)
    assert entry["factory"] == factory
    assert entry["args"] == {
        "root": os.path.join("datasets", root),
        "ann_file": os.path.join("datasets", ann_file),
    }


def test_dataset_catalog_follows_data_dir(catalog, monkeypatch):
    monkeypatch.setattr(catalog.DatasetCatalog, "DATA_DIR", "/data")
    args = catalog.DatasetCatalog.get("lvis_v0.5_val")["args"]
    assert args == {"root": "/data/coco/val2017", "ann_file": "/data/lvis/lvis_v0.5_val.json"}


def test_unknown_dataset_error_lists_known_names_and_how_to_add_one(catalog):
    with pytest.raises(RuntimeError) as excinfo:
        catalog.DatasetCatalog.get("lvis_v2_train")
    message = str(excinfo.value)
    assert "lvis_v2_train" in message
    assert "lvis_v0.5_train" in message and "coco_2014_train" in message
    assert "DatasetCatalog.DATASETS" in message and "img_dir" in message and "ann_file" in message


def test_added_entry_with_explicit_factory(catalog, monkeypatch):
    datasets = dict(catalog.DatasetCatalog.DATASETS)
    datasets["my_tail_set"] = {"img_dir": "mine/img", "ann_file": "mine/ann.json", "factory": "LVISDataset"}
    datasets["my_other_set"] = {"img_dir": "x", "ann_file": "x.json"}
    monkeypatch.setattr(catalog.DatasetCatalog, "DATASETS", datasets)
    assert catalog.DatasetCatalog.get("my_tail_set")["factory"] == "LVISDataset"
    with pytest.raises(RuntimeError, match="factory"):
        catalog.DatasetCatalog.get("my_other_set")


def test_every_dataset_named_by_a_config_is_in_the_catalog(catalog):
    for path in CONFIG_FILES:
        if os.sep + "tests" + os.sep in path:
            continue  # configs/tests/ name the fixture datasets of the tests' own PATHS_CATALOG
        config = cfg.clone()
        merge_config_file(config, path)
        for name in config.DATASETS.TRAIN + config.DATASETS.TEST:
            if name in UNSUPPORTED_UPSTREAM_DATASETS:
                continue
            assert catalog.DatasetCatalog.get(name)["factory"] in ("COCODataset", "LVISDataset"), path


# --------------------------------------------------------------------------- ModelCatalog


def test_model_catalog_imagenet_url(catalog):
    url = catalog.ModelCatalog.get("ImageNetPretrained/MSRA/R-50")
    assert url == "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
    url = catalog.ModelCatalog.get("ImageNetPretrained/FAIR/20171220/X-101-32x8d")
    assert url == "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/20171220/X-101-32x8d.pkl"


def test_model_catalog_detectron_urls(catalog):
    # Detectron MODEL_ZOO URLs of the 12_2017 baselines.
    url = catalog.ModelCatalog.get("Caffe2Detectron/COCO/35858933/e2e_mask_rcnn_R-50-FPN_1x")
    assert url == (
        "https://dl.fbaipublicfiles.com/detectron/35858933/12_2017_baselines/"
        "e2e_mask_rcnn_R-50-FPN_1x.yaml.01_48_14.DzEQe4wC/output/train/"
        "coco_2014_train%3Acoco_2014_valminusminival/generalized_rcnn/model_final.pkl"
    )
    url = catalog.ModelCatalog.get("Caffe2Detectron/COCO/37697547/e2e_keypoint_rcnn_R-50-FPN_1x")
    assert url == (
        "https://dl.fbaipublicfiles.com/detectron/37697547/12_2017_baselines/"
        "e2e_keypoint_rcnn_R-50-FPN_1x.yaml.08_42_54.kdzV35ao/output/train/"
        "keypoints_coco_2014_train%3Akeypoints_coco_2014_valminusminival/generalized_rcnn/model_final.pkl"
    )


def test_every_catalog_weight_named_by_a_config_resolves(catalog):
    for path in CONFIG_FILES:
        config = cfg.clone()
        merge_config_file(config, path)
        if config.MODEL.WEIGHT.startswith("catalog://"):
            url = catalog.ModelCatalog.get(config.MODEL.WEIGHT[len("catalog://"):])
            assert url.startswith("https://dl.fbaipublicfiles.com/detectron/") and url.endswith(".pkl")


def test_unknown_model_error_names_the_model(catalog):
    with pytest.raises(RuntimeError, match="ImageNetPretrained/MSRA/R-18"):
        catalog.ModelCatalog.get("ImageNetPretrained/MSRA/R-18")
    with pytest.raises(RuntimeError, match="NotACatalogName"):
        catalog.ModelCatalog.get("NotACatalogName")


# --------------------------------------------------------------------------- _BASE_ files


def test_base_file_is_merged_first_then_overridden(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 7\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nSOLVER:\n  MAX_ITER: 9\n")
    config = cfg.clone()
    merge_config_file(config, str(tmp_path / "sub" / "child.yaml"))
    assert config.SOLVER.BASE_LR == 0.5 and config.SOLVER.MAX_ITER == 9
    assert cfg.SOLVER.MAX_ITER != 9  # the defaults are untouched


def test_base_chain_errors_name_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ValueError, match="circular"):
        merge_config_file(cfg.clone(), str(tmp_path / "a.yaml"))
    (tmp_path / "c.yaml").write_text("_BASE_: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="missing.yaml.*c.yaml"):
        merge_config_file(cfg.clone(), str(tmp_path / "c.yaml"))
    (tmp_path / "d.yaml").write_text("_BASE_: b2.yaml\n")
    (tmp_path / "b2.yaml").write_text("SOLVER:\n  NOT_A_KEY: 1\n")
    with pytest.raises(KeyError, match="NOT_A_KEY"):
        merge_config_file(cfg.clone(), str(tmp_path / "d.yaml"))


def test_every_table1_baseline_row_has_its_synthetic_and_lvis_config():
    """lst_scripts/table1.sh trains the baseline row r from <prefix><row_suffix[r]>.yaml; every
    suffix it declares must exist for both default prefixes, and merge."""
    repo_root = os.path.dirname(CONFIG_ROOT)
    with open(os.path.join(repo_root, "lst_scripts", "table1.sh")) as f:
        script = f.read()
    declaration = re.search(r"declare -A row_suffix=\((.*?)\)\n", script, flags=re.S).group(1)
    suffixes = dict(re.findall(r'\[(\w+)\]="([^"]*)"', declaration))
    assert {"plain", "rfs", "federated", "eqlv2", "seesaw"} <= set(suffixes)
    for prefix in ("configs/synthetic/e2e_mask_rcnn_R_18_FPN_cpu", "configs/lvis/e2e_mask_rcnn_R_50_FPN_1x_lvis_v0.5"):
        for row, suffix in suffixes.items():
            path = os.path.join(repo_root, prefix + suffix + ".yaml")
            assert os.path.isfile(path), (row, path)
            merge_config_file(cfg.clone(), path)


@pytest.mark.parametrize("name", sorted(os.path.relpath(path, os.path.join(CONFIG_ROOT, "synthetic", "budget_1000"))
                                        for path in glob.glob(os.path.join(CONFIG_ROOT, "synthetic", "budget_1000", "**",
                                                                           "*.yaml"), recursive=True)
                                        if not path.endswith("schedule.yaml")))
def test_a_budget_1000_config_is_its_3000_iteration_config_on_a_shorter_schedule(name):
    """Table 1's 1,000-iteration budget changes the schedule only: the same keys as the config of
    the same name in configs/synthetic/, but SOLVER.MAX_ITER (a third) and SOLVER.STEPS (at the
    same fractions of the schedule, to the iteration)."""
    short = _merged(os.path.join("synthetic", "budget_1000", name))
    full = _merged(os.path.join("synthetic", name))
    assert abs(short.SOLVER.MAX_ITER - full.SOLVER.MAX_ITER / 3) <= 1  # 534 for phase 0: the chain sums to 1,000
    assert [step / short.SOLVER.MAX_ITER for step in short.SOLVER.STEPS] == pytest.approx(
        [step / full.SOLVER.MAX_ITER for step in full.SOLVER.STEPS], abs=0.01)
    for config in (short, full):
        config.SOLVER.MAX_ITER, config.SOLVER.STEPS = 0, ()
    assert short == full


def test_the_budget_1000_lst_chain_trains_the_baselines_1000_iterations():
    phase0 = _merged("synthetic/budget_1000/lst/phase0.yaml")
    incremental = _merged("synthetic/budget_1000/lst/incremental.yaml")
    classes = phase0.MODEL.ROI_BOX_HEAD.NUM_CLASSES - 1
    num_incremental = (classes - phase0.MODEL.LST.BASE_SIZE) // phase0.MODEL.LST.PHASE_SIZE
    assert num_incremental == 2
    assert phase0.SOLVER.MAX_ITER + num_incremental * incremental.SOLVER.MAX_ITER == \
        _merged("synthetic/budget_1000/e2e_mask_rcnn_R_18_FPN_cpu.yaml").SOLVER.MAX_ITER == 1000
