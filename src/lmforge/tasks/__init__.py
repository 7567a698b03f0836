"""Tasks plug into the one training loop and the one inference path through a small protocol.

A task knows its labels and how to: build its model class, encode examples into features (for
training and for inference), compute the summed loss of a batch, decode model outputs into
predictions and compute metrics. See `base.Task`.
"""

from __future__ import annotations

from .base import Task


def task_for(name: str):
    from .classification import ClassificationTask
    from .token_classification import TokenClassificationTask

    tasks = {ClassificationTask.name: ClassificationTask, TokenClassificationTask.name: TokenClassificationTask}
    if name not in tasks:
        from ..errors import UserError

        raise UserError(f"unknown task '{name}'; available: {', '.join(sorted(tasks))}")
    return tasks[name]


__all__ = ["Task", "task_for"]
