"""Pieces the trainer (framework/training/trainer.py) is assembled from: model and adapter building, the
optimizer, the loss meter, evaluation, stop signals. Each is small and used by the trainer only."""
