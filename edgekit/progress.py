"""The progress seam between the SDK and whoever draws bars.

SDK functions take ``progress: ProgressFn | None`` and call ``progress(task, completed, total)``;
the CLI passes a callback that draws rich bars when stderr is a terminal.
"""
from __future__ import annotations

from typing import Callable, Optional

ProgressFn = Callable[[str, float, Optional[float]], None]


def noop(task: str, completed: float, total: float | None = None) -> None:
    return None
