"""Inference: tiling and the Upscaler that routes images through a model."""
