"""Tasks plug into the one training loop and the one inference path through a small protocol.

A task knows its labels and how to: build its model class, encode examples into features (for
training and for inference), compute the summed loss of a batch, decode model outputs into
predictions and compute metrics. See `base.Task`.
"""

from .base import Task

__all__ = ["Task"]
