"""What resuming a run from its checkpoint checks (the solver settings themselves are
re-applied by Checkpointer.load, see utils/checkpoint.py: the config's win).

* A checkpoint at or past SOLVER.MAX_ITER has nothing left to train: said so, and an error
  when the checkpoint is past it (a shorter schedule needs a fresh OUTPUT_DIR).
* The message of a non-finite loss says which checkpoint a rerun would resume from, if any.
"""
import logging

from maskrcnn_benchmark.utils.checkpoint import tagged_checkpoint_file


def _last_checkpoint(output_dir):
    """The checkpoint ``output_dir``'s last_checkpoint names, or "" (none, or an unreadable tag)."""
    try:
        return tagged_checkpoint_file(output_dir) if output_dir else ""
    except ValueError:
        return ""


def check_start_iteration(start_iter, max_iter, output_dir, logger=None):
    """Say that there is nothing to train when the run starts (from the checkpoint that
    ``output_dir``'s last_checkpoint names, or MODEL.WEIGHT) at or past SOLVER.MAX_ITER: a
    warning at MAX_ITER (the run is finished), ValueError past it."""
    checkpoint_file = _last_checkpoint(output_dir)
    if start_iter > max_iter:
        raise ValueError(
            "{} is at iteration {}, past SOLVER.MAX_ITER {}: there is nothing to train. To train "
            "longer, set SOLVER.MAX_ITER above {}; for a shorter schedule, train afresh in a new "
            "OUTPUT_DIR.".format(checkpoint_file or "The checkpoint", start_iter, max_iter,
                                 start_iter))
    if start_iter == max_iter and max_iter > 0:
        (logger or logging.getLogger(__name__)).warning(
            "%s is at iteration %d = SOLVER.MAX_ITER: training is already finished, nothing to "
            "train (raise SOLVER.MAX_ITER to train longer)", checkpoint_file or "The checkpoint",
            start_iter)


def non_finite_loss_message(iteration, culprits, output_dir):
    """The FloatingPointError message of a non-finite loss: what stopped, and from which
    checkpoint (if any) a rerun with a lower learning rate resumes."""
    last = _last_checkpoint(output_dir)
    advice = "lower SOLVER.BASE_LR or lengthen SOLVER.WARMUP_ITERS"
    if last:
        where = ("the last checkpoint written, {}, is the last good state: {}, then rerun with the "
                 "same OUTPUT_DIR to resume from it (the config's solver settings replace the "
                 "checkpoint's)".format(last, advice))
    else:
        where = ("no checkpoint has been written{}: {}, then rerun, which starts afresh".format(
            " in " + output_dir if output_dir else " (OUTPUT_DIR is empty)", advice))
    return "Loss became infinite or NaN at iteration {} ({}); training stopped before the " \
           "update; {}".format(iteration, culprits, where)
