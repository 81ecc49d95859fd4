"""Architectures, their registry, weights I/O and the shipped model zoo."""

from upres.models.descriptor import ModelCard
from upres.models.registry import REGISTRY, ArchSpec, Registry
from upres.models.weights import load_model, save_model

__all__ = ["REGISTRY", "ArchSpec", "ModelCard", "Registry", "load_model", "save_model"]
