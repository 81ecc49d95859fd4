"""Training: configs, losses and the trainer."""
