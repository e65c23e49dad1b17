"""Progress bars for long runs (tqdm), and a silent stand-in."""

from __future__ import annotations

from typing import Protocol

from .errors import MissingDependencyError

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar(Protocol):
    """What the runners use of a bar: tqdm's ``update`` and ``close``."""

    def update(self, n: int) -> object:
        """Advance the bar by ``n`` items."""

    def close(self) -> None:
        """Finish the bar."""


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, done: int = 0, enabled: bool = True, desc: str = "ecso") -> ProgressBar:
    """A tqdm bar over ``total`` items (``done`` already finished), or a silent one.

    Raises:
        MissingDependencyError: a bar is wanted and tqdm (the ``eval`` extra) is not installed.

    """
    if not enabled:
        return _Silent()
    try:
        from tqdm import tqdm
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "tqdm", "eval") from exc
    bar: ProgressBar = tqdm(total=total, initial=done, unit="case", desc=desc)
    return bar
