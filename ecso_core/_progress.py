"""Progress bars for long runs (tqdm), and a silent stand-in."""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, done: int = 0, enabled: bool = True, desc: str = "ecso") -> Any:
    """A tqdm bar over ``total`` items (``done`` already finished), or a silent one."""
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="case", desc=desc)
