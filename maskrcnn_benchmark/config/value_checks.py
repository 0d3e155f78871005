"""Range checks of config values, run when a config is merged (engine/cli.py's load_config), so
that a count of zero or less fails at start-up with the key's name instead of deep inside a run
(e.g. SOLVER.MAX_ITER -3 used to end in "__len__() should return >= 0")."""
from maskrcnn_benchmark.utils.seed import SEED_BOUND

from .defaults import _C as DEFAULTS

# Keys whose value (or every value, for a list) must be > 0.
POSITIVE_KEYS = (
    "SOLVER.MAX_ITER",
    "SOLVER.IMS_PER_BATCH",
    "SOLVER.CHECKPOINT_PERIOD",
    "SOLVER.BASE_LR",
    "SOLVER.GAMMA",
    "TEST.IMS_PER_BATCH",
    "TEST.DETECTIONS_PER_IMG",
    "TEST.LVIS_MAX_DETS",
    "TEST.LVIS_FIXED_AP_DETS_PER_CLASS",
    "INPUT.MIN_SIZE_TRAIN",
    "INPUT.MAX_SIZE_TRAIN",
    "INPUT.MIN_SIZE_TEST",
    "INPUT.MAX_SIZE_TEST",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "MODEL.RPN.PRE_NMS_TOP_N_TRAIN",
    "MODEL.RPN.PRE_NMS_TOP_N_TEST",
    "MODEL.RPN.POST_NMS_TOP_N_TRAIN",
    "MODEL.RPN.POST_NMS_TOP_N_TEST",
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN",
    "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES",
    "MODEL.LST.BASE_SIZE",
    "MODEL.LST.PHASE_SIZE",
)

# Keys whose value (or every value) must be >= 0.
NON_NEGATIVE_KEYS = (
    "SOLVER.STEPS",
    "SOLVER.WARMUP_ITERS",
    "SOLVER.TEST_PERIOD",
    "SOLVER.MOMENTUM",
    "SOLVER.WEIGHT_DECAY",
    "SOLVER.WEIGHT_DECAY_BIAS",
    "DATALOADER.NUM_WORKERS",
    "DATALOADER.SIZE_DIVISIBILITY",
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMG",
    "MODEL.ROI_HEADS.DETECTIONS_PER_CLASS",
    "TEST.CALIBRATION.GAMMA",
    "MODEL.LST.PHASE",
    "MODEL.LST.NUM_OLD_CLASSES",
)

# Seeds: -1 (SEED: drawn at random; DATALOADER.SEED: the run's SEED) or 0 <= seed < 2^31.
SEED_KEYS = ("SEED", "DATALOADER.SEED")


def _value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check_value_ranges(cfg):
    """ValueError naming the first key of POSITIVE_KEYS / NON_NEGATIVE_KEYS / SEED_KEYS whose
    value is out of range, with its value and an example of a valid one (the default)."""
    for keys, bad, wanted in ((POSITIVE_KEYS, lambda v: v <= 0, "positive"),
                              (NON_NEGATIVE_KEYS, lambda v: v < 0, "zero or more"),
                              (SEED_KEYS, lambda v: not -1 <= v < SEED_BOUND, "-1 or in [0, 2^31)")):
        for key in keys:
            value = _value(cfg, key)
            is_list = isinstance(value, (list, tuple))
            if any(bad(v) for v in (value if is_list else [value])):
                default = _value(DEFAULTS, key)
                example = "'{}'".format(tuple(default)) if is_list else default
                raise ValueError(
                    "{} is {!r}, but {} must be {}; set it in the config file or on the command "
                    "line, e.g. {} {}".format(key, value, "every value" if is_list else "it",
                                              wanted, key, example))
