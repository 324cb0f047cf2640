"""Tasks: the data candidates are trained and scored on, its split, metrics and export head.

Every task implements the :class:`Task` contract and is registered in :data:`TASKS`; adding
one is one file with a :class:`Task` subclass and :func:`register_task`. Importing this package
is cheap: loaders import numpy / scikit-learn / transformers only when called.

Example:
    >>> from paretoforge.tasks import TASKS, load_task
    >>> "digits" in TASKS
    True
    >>> TASKS.get("embedding-fidelity").quality_metric
    'embedding_cosine'
    >>> task = load_task("digits")
"""

from __future__ import annotations

from paretoforge.tasks import causal_lm as _causal_lm  # noqa: E402,F401,I001  ("causal-lm")
from paretoforge.tasks import digits as _digits  # noqa: E402,F401  (registers "digits")
from paretoforge.tasks import embedding as _embedding  # noqa: E402,F401  ("embedding-fidelity")
from paretoforge.tasks import image as _image  # noqa: E402,F401  ("image-classification")
from paretoforge.tasks import text as _text  # noqa: E402,F401  ("text-classification")
from paretoforge.tasks._base import TaskData, classification_accuracy
from paretoforge.tasks._contract import (
    TASKS,
    ExportHead,
    Task,
    ensure_registered,
    load_task,
    register_task,
    task_metrics,
)

__all__ = ["TASKS", "ExportHead", "Task", "TaskData", "classification_accuracy",
           "ensure_registered", "load_task", "register_task", "task_metrics"]
