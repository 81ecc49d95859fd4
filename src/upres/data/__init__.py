"""Training data: HR folders, LR synthesis, patch sampling."""
