"""Tasks plug into the one training loop and the one inference path.

A task *spec* (`registry.TaskSpec`), registered under the task's config name, says how the task is
configured, read, reported and documented and builds task objects; a task *object* (`base.Task`)
knows its labels and how to encode examples, compute the loss, decode outputs and score them.
Importing this package registers the built-in tasks. See docs/ARCHITECTURE.md, "Adding a task".
"""

from . import classification, generation, token_classification  # noqa: F401  (they register themselves)
from .base import Task, TaskBase
from .registry import TaskSpec, get_task, register, task_names

__all__ = ["Task", "TaskBase", "TaskSpec", "get_task", "register", "task_names"]
