"""Stopping a training run without losing its work: Ctrl-C (SIGINT) or SIGTERM while training.

The first such signal is remembered; the trainer finishes the iteration it is in, writes a
checkpoint of it, and ends with ``TrainingStopped``, so that rerunning the same command resumes
from that iteration. A second signal acts as it would without this (SIGINT raises
KeyboardInterrupt, SIGTERM ends the process at once). The data-loading workers ignore both
signals (Ctrl-C reaches the whole process group): the main process decides when to stop, and
the workers end with it.
"""
import signal
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingStopped(Exception):
    """Training was stopped by a signal after a checkpoint of the last finished iteration.

    ``exit_status`` is the shell's for a process ended by that signal (128 + its number).
    """

    def __init__(self, signum, iteration, checkpoint_file):
        self.signum = signum
        self.iteration = iteration
        self.checkpoint_file = checkpoint_file
        self.exit_status = 128 + signum
        where = "saved {}".format(checkpoint_file) if checkpoint_file else "no checkpoint (no OUTPUT_DIR)"
        super().__init__(
            "stopped by {} after iteration {}; {}: rerun the same command to resume from it".format(
                signal.Signals(signum).name, iteration, where))


class StopRequests:
    """While entered (in the main thread), catches the first SIGINT or SIGTERM; ``signum`` is that
    signal's number, or None. Leaving restores the handlers it replaced."""

    def __init__(self, logger):
        self.logger = logger
        self.signum = None
        self._replaced = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._replaced = {signum: signal.signal(signum, self._catch) for signum in STOP_SIGNALS}
        return self

    def __exit__(self, *exc_info):
        self._restore()

    def _restore(self):
        for signum, handler in self._replaced.items():
            signal.signal(signum, handler)
        self._replaced = {}

    def _catch(self, signum, frame):
        self.signum = signum
        self._restore()  # a second signal stops at once
        self.logger.warning("%s received: training stops after this iteration, with a checkpoint (send it again "
                            "to stop at once)", signal.Signals(signum).name)


def leave_stop_signals_to_the_main_process(worker_id):
    """``worker_init_fn`` of the training data loader: its workers ignore SIGINT and SIGTERM."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
