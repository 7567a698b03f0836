"""Text generation with decoder language models: `Generator` (see generator.py)."""

from .generator import Generator

__all__ = ["Generator"]
