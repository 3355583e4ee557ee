"""Fixtures shared across test folders (pytest finds them here by name)."""

from tests.serving.gateway_kit import tiny_model

__all__ = ["tiny_model"]
