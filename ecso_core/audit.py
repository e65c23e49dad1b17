"""Operator-side audit trails: every guarded result, withheld text included, kept where no client looks.

Clients only ever see :meth:`~ecso_core.result.ECSOResult.client_summary`. Operators who must keep the
flagged answers (abuse review, evaluation, data engine) pass an audit sink to the guard::

    guard = ECSO(backend, audit=JsonlAuditLog("audit.jsonl"))

``ecso serve --audit-log FILE`` does the same for the server.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ._jsonl import append_lines
from .result import ECSOResult

__all__ = ["JsonlAuditLog"]


class JsonlAuditLog:
    """An append-only JSONL file with one line per guarded result (thread-safe; images described, not embedded).

    Args:
        path: the file; created on first write, never truncated.

    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __call__(self, result: ECSOResult) -> None:
        """Append ``result`` with a UNIX timestamp."""
        record = {"time": round(time.time(), 3), **result.model_dump(mode="json")}
        with self._lock:
            append_lines(self.path, [record])
