"""Decoupled classifier re-training (cRT; Kang et al., "Decoupling Representation and Classifier
for Long-Tailed Recognition", ICLR 2020), applied to the box classifier of a trained detector.

The representation (backbone, RPN, box and mask heads) is kept as trained with instance-balanced
sampling; the box predictor's classification layer ``cls_score`` (plus the cosine predictor's
scale when it is learnable) is re-initialised and re-trained alone, with class-aware sampling
(``DATALOADER.SAMPLER "ClassAwareSampler"``). ``MODEL.CRT.ENABLED`` turns it on in
tools/train_net.py; ``MODEL.WEIGHT`` names the trained detector.
"""
import logging

from torch import nn

logger = logging.getLogger(__name__)

# The predictors' own initialisation of cls_score (roi_box_predictors.py).
CLASSIFIER_INIT_STD = 0.01


def classifier_parameters(model):
    """The parameters cRT trains: the box predictor's cls_score (weight (C, D), bias (C,) if any)
    and, for FPNCosinePredictor with a learnable scale, its scale_cls (a scalar)."""
    predictor = model.roi_heads.box.predictor
    parameters = list(predictor.cls_score.parameters())
    scale = getattr(predictor, "scale_cls", None)
    if isinstance(scale, nn.Parameter):
        parameters.append(scale)
    return parameters


def freeze_all_but_classifier(model):
    """Set requires_grad False on every parameter of ``model`` except :func:`classifier_parameters`
    (call before the optimizer is built, which leaves frozen parameters out)."""
    model.requires_grad_(False)
    for parameter in classifier_parameters(model):
        parameter.requires_grad_(True)


def reinitialize_classifier(model):
    """cls_score's weight drawn from N(0, 0.01^2) and its bias set to 0, as a new predictor's.
    The cosine scale keeps its trained value."""
    cls_score = model.roi_heads.box.predictor.cls_score
    nn.init.normal_(cls_score.weight, mean=0.0, std=CLASSIFIER_INIT_STD)
    if cls_score.bias is not None:
        nn.init.zeros_(cls_score.bias)


def start_classifier_retraining(cfg, model, checkpointer):
    """Begin a cRT run: the weights of MODEL.WEIGHT (the model alone: the optimizer, schedule and
    iteration of that run are not taken), then a new classifier if MODEL.CRT.REINIT_CLASSIFIER.

    Only for a run that has no checkpoint of its own yet; an interrupted cRT run resumes from its
    last checkpoint like any other run.
    """
    weight = cfg.MODEL.WEIGHT
    if not weight:
        raise ValueError(
            "MODEL.CRT.ENABLED re-trains the classifier of a trained detector: set MODEL.WEIGHT to its "
            "checkpoint (e.g. the plain baseline's OUTPUT_DIR/model_final.pth)"
        )
    checkpointer.load_model_weights(weight)
    if cfg.MODEL.CRT.REINIT_CLASSIFIER:
        reinitialize_classifier(model)
        logger.info("cRT: the box classifier re-initialised; training it alone from %s", weight)
    else:
        logger.info("cRT: training the box classifier of %s alone, from its trained values", weight)
