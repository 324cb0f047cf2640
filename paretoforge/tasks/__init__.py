"""Tasks: data, held-out split and metric that candidates are trained and scored on.

Importing this package is cheap: loaders import numpy / scikit-learn only when called.

Example:
    >>> from paretoforge.tasks import TASKS, load_task
    >>> "digits" in TASKS
    True
    >>> task = load_task("digits")
"""

from __future__ import annotations

from paretoforge.tasks import digits as _digits  # noqa: F401  (registers "digits")
from paretoforge.tasks import embedding as _embedding  # noqa: F401  ("embedding-fidelity")
from paretoforge.tasks import image as _image  # noqa: F401  ("image-classification")
from paretoforge.tasks import text as _text  # noqa: F401  ("text-classification")
from paretoforge.tasks._base import TASKS, TaskData, load_task

__all__ = ["TASKS", "TaskData", "load_task"]
