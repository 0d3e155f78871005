"""Caffe2/Detectron .pkl loading: blob renaming (upstream's rules), pickle safety, catalog:// loading.

The expected names follow upstream's c2_model_loading renaming rules and the parameter names of its
released detectors; the fixtures are written in the byte format of Detectron's Python 2
pickles (str keys, numpy arrays whose data is a Python 2 str).
"""
import datetime
import pickle
import struct

import numpy as np
import pytest
import torch
from torch import nn

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.utils import checkpoint as checkpoint_module
from maskrcnn_benchmark.utils.c2_model_loading import C2_FORMAT_LOADER, load_c2_format
from maskrcnn_benchmark.utils.checkpoint import DetectronCheckpointer

# Detectron blob name -> name after renaming, for an R-50-FPN Mask R-CNN (plus an X-101 "pred_w").
R50_FPN_RENAMES = {
    "conv1_w": "conv1.weight",
    "res_conv1_bn_s": "bn1.weight",
    "res_conv1_bn_b": "bn1.bias",
    "res2_0_branch2a_w": "layer1.0.conv1.weight",
    "res2_0_branch2a_bn_s": "layer1.0.bn1.weight",
    "res2_0_branch2a_bn_b": "layer1.0.bn1.bias",
    "res2_0_branch2b_w": "layer1.0.conv2.weight",
    "res2_0_branch2c_bn_s": "layer1.0.bn3.weight",
    "res2_0_branch1_w": "layer1.0.downsample.0.weight",
    "res2_0_branch1_bn_s": "layer1.0.downsample.1.weight",
    "res2_0_branch1_bn_b": "layer1.0.downsample.1.bias",
    "res3_3_branch2c_w": "layer2.3.conv3.weight",
    "res4_5_branch2b_bn_b": "layer3.5.bn2.bias",
    "res5_2_branch2a_w": "layer4.2.conv1.weight",
    "fpn_inner_res5_2_sum_w": "fpn_inner4.weight",
    "fpn_inner_res5_2_sum_b": "fpn_inner4.bias",
    "fpn_inner_res4_5_sum_lateral_w": "fpn_inner3.weight",
    "fpn_inner_res3_3_sum_lateral_w": "fpn_inner2.weight",
    "fpn_inner_res2_2_sum_lateral_b": "fpn_inner1.bias",
    "fpn_res2_2_sum_w": "fpn_layer1.weight",
    "fpn_res5_2_sum_b": "fpn_layer4.bias",
    "rpn_conv_fpn2_w": "rpn.head.conv.weight",
    "rpn_cls_logits_fpn2_b": "rpn.head.cls_logits.bias",
    "rpn_bbox_pred_fpn2_w": "rpn.head.bbox_pred.weight",
    "fc6_w": "fc6.weight",
    "fc7_b": "fc7.bias",
    "cls_score_w": "cls_score.weight",
    "bbox_pred_b": "bbox_pred.bias",
    "_[mask]_fcn1_w": "mask_fcn1.weight",
    "_[mask]_fcn4_b": "mask_fcn4.bias",
    "conv5_mask_w": "conv5_mask.weight",
    "mask_fcn_logits_w": "mask_fcn_logits.weight",
    "pred_w": "fc1000.weight",
}

# The C4 detector: single-level RPN names and the res5 head.
R50_C4_RENAMES = {
    "conv1_w": "conv1.weight",
    "res_conv1_bn_s": "bn1.weight",
    "res4_5_branch2c_w": "layer3.5.conv3.weight",
    "res5_0_branch2a_w": "layer4.0.conv1.weight",
    "res5_0_branch1_bn_b": "layer4.0.downsample.1.bias",
    "conv_rpn_w": "rpn.head.conv.weight",
    "rpn_cls_logits_w": "rpn.head.cls_logits.weight",
    "rpn_bbox_pred_b": "rpn.head.bbox_pred.bias",
    "cls_score_b": "cls_score.bias",
    "bbox_pred_w": "bbox_pred.weight",
    "conv5_mask_w": "conv5_mask.weight",
    "mask_fcn_logits_b": "mask_fcn_logits.bias",
    "fc1000_w": "fc1000.weight",
}

# GroupNorm backbones (R-50-GN) store gn_s / gn_b.
GN_RENAMES = {
    "res2_0_branch2a_gn_s": "layer1.0.bn1.weight",
    "res2_0_branch2b_gn_b": "layer1.0.bn2.bias",
    "res2_0_branch2c_gn_s": "layer1.0.bn3.weight",
    "res2_0_branch1_gn_s": "layer1.0.downsample.1.weight",
    "res2_0_branch1_gn_b": "layer1.0.downsample.1.bias",
}

MOMENTUM_BLOBS = ("conv1_w_momentum", "res2_0_branch2a_w_momentum")


def _py2_str(data):
    """A Python 2 ``str`` pickle opcode (SHORT_BINSTRING / BINSTRING) holding ``data``."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_ndarray(array):
    """Pickle opcodes of a numpy array as NumPy 1 under Python 2 wrote them (protocol 2)."""
    array = np.ascontiguousarray(array)
    shape = b"(" + b"".join(b"J" + struct.pack("<i", size) for size in array.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(array.dtype.str[1:].encode()) + b"K\x00K\x01\x87R"
             + b"(K\x03" + _py2_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89" + _py2_str(array.tobytes()) + b"tb")


def write_detectron_pkl(path, blobs, under_blobs_key=True):
    """Write ``blobs`` (name -> float32 array) as Detectron did: a Python 2 protocol-2 pickle."""
    items = b"".join(_py2_str(name.encode()) + _py2_ndarray(value) for name, value in blobs.items())
    body = b"}(" + items + b"u"
    if under_blobs_key:
        body = b"}(" + _py2_str(b"blobs") + body + _py2_str(b"cfg") + _py2_str(b"MODEL: {}") + b"u"
    path.write_bytes(b"\x80\x02" + body + b".")


def random_blobs(names, seed=0):
    generator = np.random.default_rng(seed)
    return {name: generator.standard_normal((3, 2)).astype(np.float32) for name in names}


def config_for(conv_body, stage_with_dcn=(False, False, False, False)):
    cfg = default_cfg.clone()
    cfg.merge_from_list(["MODEL.BACKBONE.CONV_BODY", conv_body,
                         "MODEL.RESNETS.STAGE_WITH_DCN", stage_with_dcn])
    return cfg


def assert_loaded(state_dict, blobs, renames):
    assert sorted(state_dict) == sorted(renames.values())
    for c2_name, name in renames.items():
        assert isinstance(state_dict[name], torch.Tensor)
        assert torch.equal(state_dict[name], torch.from_numpy(blobs[c2_name]))


def test_fixture_is_a_python2_detectron_pickle(tmp_path):
    # The Python 2 format needs encoding="latin1" to read the array data; this checks the fixture.
    blobs = random_blobs(["conv1_w", "fc6_w"])
    write_detectron_pkl(tmp_path / "w.pkl", blobs)
    data = pickle.loads((tmp_path / "w.pkl").read_bytes(), encoding="latin1")
    assert data["cfg"] == "MODEL: {}"
    assert all(np.array_equal(data["blobs"][name], value) for name, value in blobs.items())


@pytest.mark.parametrize("conv_body, renames", [
    ("R-50-FPN", R50_FPN_RENAMES),
    ("R-50-FPN", GN_RENAMES),
    ("R-50-C4", R50_C4_RENAMES),
])
def test_load_c2_format_renames_blobs_and_drops_momentum(tmp_path, conv_body, renames):
    blobs = random_blobs([*renames, *MOMENTUM_BLOBS])
    write_detectron_pkl(tmp_path / "weights.pkl", blobs)
    loaded = load_c2_format(config_for(conv_body), str(tmp_path / "weights.pkl"))
    assert list(loaded) == ["model"]
    assert_loaded(loaded["model"], blobs, renames)


def test_flat_python3_pickle_loads_the_same(tmp_path):
    # ImageNet-pretrained files are a flat dict; a Python 3 protocol-2 pickle encodes bytes via _codecs.
    blobs = random_blobs(R50_C4_RENAMES)
    (tmp_path / "flat.pkl").write_bytes(pickle.dumps(blobs, protocol=2))
    loaded = load_c2_format(config_for("R-50-C4"), str(tmp_path / "flat.pkl"))
    assert_loaded(loaded["model"], blobs, R50_C4_RENAMES)


@pytest.mark.parametrize("conv_body, c2_names", [
    ("R-50-FPN", {"fpn_inner_res4_5_sum_lateral_w": "fpn_inner3.weight",
                  "fpn_res3_3_sum_b": "fpn_layer2.bias"}),
    ("R-101-FPN", {"fpn_inner_res4_22_sum_lateral_w": "fpn_inner3.weight",
                   "fpn_res4_22_sum_w": "fpn_layer3.weight", "fpn_res3_3_sum_b": "fpn_layer2.bias"}),
    ("R-152-FPN", {"fpn_inner_res4_35_sum_lateral_w": "fpn_inner3.weight",
                   "fpn_res3_7_sum_b": "fpn_layer2.bias", "fpn_inner_res5_2_sum_w": "fpn_inner4.weight"}),
    # the R-50 stage suffixes do not apply to R-101's res4_22: the blob only gets the basic renaming
    ("R-50-FPN", {"fpn_inner_res4_22_sum_lateral_w": "fpn.inner.layer3.22.sum.lateral.weight"}),
])
def test_fpn_stage_names_depend_on_depth(tmp_path, conv_body, c2_names):
    blobs = random_blobs(c2_names)
    write_detectron_pkl(tmp_path / "fpn.pkl", blobs)
    assert_loaded(load_c2_format(config_for(conv_body), str(tmp_path / "fpn.pkl"))["model"], blobs, c2_names)


def test_deformable_stages_move_conv2_under_conv(tmp_path):
    renames = {
        "res2_0_branch2b_w": "layer1.0.conv2.weight",
        "res3_0_branch2b_w": "layer2.0.conv2.conv.weight",
        "res3_0_branch2b_bn_s": "layer2.0.bn2.weight",
        "res3_0_branch2a_w": "layer2.0.conv1.weight",
    }
    blobs = random_blobs(renames)
    write_detectron_pkl(tmp_path / "dcn.pkl", blobs)
    cfg = config_for("R-50-FPN", stage_with_dcn=(False, True, False, False))
    assert_loaded(load_c2_format(cfg, str(tmp_path / "dcn.pkl"))["model"], blobs, renames)


def test_loaders_registered_per_conv_body_and_unknown_body_is_explained(tmp_path):
    assert set(C2_FORMAT_LOADER) == {
        "R-50-C4", "R-50-C5", "R-101-C4", "R-101-C5", "R-50-FPN", "R-50-FPN-RETINANET",
        "R-101-FPN", "R-101-FPN-RETINANET", "R-152-FPN",
    }
    write_detectron_pkl(tmp_path / "w.pkl", random_blobs(["conv1_w"]))
    with pytest.raises(KeyError, match="No Caffe2 weight converter for MODEL.BACKBONE.CONV_BODY 'T-NARROW'"):
        load_c2_format(config_for("T-NARROW"), str(tmp_path / "w.pkl"))


def test_pickle_with_other_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"blobs": {"conv1_w": datetime.date(2020, 1, 1)}}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="evil.pkl is not a Caffe2 weights pickle.*datetime.date"):
        load_c2_format(config_for("R-50-FPN"), str(path))


def make_model(shapes):
    """A module tree with a parameter (or BN statistics buffer) at every dotted name in ``shapes``."""
    root = nn.Module()
    for name, shape in shapes.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if part not in module._modules:
                module.add_module(part, nn.Module())
            module = module._modules[part]
        if leaf == "running_mean":
            module.register_buffer(leaf, torch.zeros(shape))
        elif leaf == "running_var":
            module.register_buffer(leaf, torch.ones(shape))
        else:
            module.register_parameter(leaf, nn.Parameter(torch.full(shape, 7.0)))
    return root


# Parameter names of upstream's R-50-FPN Mask R-CNN -> the Detectron blob that must land there.
DETECTOR_FROM_BLOB = {
    "backbone.body.stem.conv1.weight": "conv1_w",
    "backbone.body.stem.bn1.weight": "res_conv1_bn_s",
    "backbone.body.stem.bn1.bias": "res_conv1_bn_b",
    "backbone.body.layer1.0.conv1.weight": "res2_0_branch2a_w",
    "backbone.body.layer1.0.bn1.weight": "res2_0_branch2a_bn_s",
    "backbone.body.layer1.0.bn1.bias": "res2_0_branch2a_bn_b",
    "backbone.body.layer1.0.downsample.0.weight": "res2_0_branch1_w",
    "backbone.body.layer1.0.downsample.1.weight": "res2_0_branch1_bn_s",
    "backbone.fpn.fpn_inner1.bias": "fpn_inner_res2_2_sum_lateral_b",
    "backbone.fpn.fpn_inner4.weight": "fpn_inner_res5_2_sum_w",
    "backbone.fpn.fpn_layer1.weight": "fpn_res2_2_sum_w",
    "rpn.head.conv.weight": "rpn_conv_fpn2_w",
    "rpn.head.bbox_pred.weight": "rpn_bbox_pred_fpn2_w",
    "roi_heads.box.feature_extractor.fc6.weight": "fc6_w",
    "roi_heads.box.predictor.cls_score.weight": "cls_score_w",
    "roi_heads.mask.feature_extractor.mask_fcn1.weight": "_[mask]_fcn1_w",
    "roi_heads.mask.predictor.conv5_mask.weight": "conv5_mask_w",
    "roi_heads.mask.predictor.mask_fcn_logits.weight": "mask_fcn_logits_w",
}


def test_catalog_imagenet_weights_load_into_detector(tmp_path, monkeypatch):
    """catalog:// -> ModelCatalog URL -> cache_url -> load_c2_format -> longest-suffix loading."""
    blobs = random_blobs([*DETECTOR_FROM_BLOB.values(), "pred_w", *MOMENTUM_BLOBS])
    write_detectron_pkl(tmp_path / "R-50.pkl", blobs, under_blobs_key=False)
    requested = []

    def fake_cache_url(url):
        requested.append(url)
        return str(tmp_path / "R-50.pkl")

    monkeypatch.setattr(checkpoint_module, "cache_url", fake_cache_url)
    statistics = {"backbone.body.stem.bn1.running_mean": (3,), "backbone.body.stem.bn1.running_var": (3,),
                  "roi_heads.box.feature_extractor.fc7.weight": (3, 2)}
    model = make_model({**{name: (3, 2) for name in DETECTOR_FROM_BLOB}, **statistics})

    extra = DetectronCheckpointer(config_for("R-50-FPN"), model, save_dir=str(tmp_path / "out")).load(
        "catalog://ImageNetPretrained/MSRA/R-50")

    assert extra == {}
    assert requested == ["https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"]
    state = model.state_dict()
    for name, blob in DETECTOR_FROM_BLOB.items():
        assert torch.equal(state[name], torch.from_numpy(blobs[blob])), name
    # AffineChannel has no statistics, and fc7 is not in the file: these keep their values
    assert torch.equal(state["backbone.body.stem.bn1.running_mean"], torch.zeros(3))
    assert torch.equal(state["backbone.body.stem.bn1.running_var"], torch.ones(3))
    assert torch.equal(state["roi_heads.box.feature_extractor.fc7.weight"], torch.full((3, 2), 7.0))


def test_missing_pkl_names_the_file(tmp_path):
    model = make_model({"conv1.weight": (3, 2)})
    with pytest.raises(FileNotFoundError, match="absent.pkl does not exist. Check MODEL.WEIGHT"):
        DetectronCheckpointer(config_for("R-50-C4"), model).load(str(tmp_path / "absent.pkl"))
