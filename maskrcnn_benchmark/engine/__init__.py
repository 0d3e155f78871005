"""Engine: the training loop (trainer.do_train) and inference with evaluation (inference.inference)."""
