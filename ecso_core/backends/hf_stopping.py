"""Stopping criteria of the transformers backend: cancelled rows end, and streamed answers pause.

Both run inside ``generate`` after every token (see :class:`~ecso_core.backends.transformers.TransformersBackend`).
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

import torch
from transformers import StoppingCriteria

if TYPE_CHECKING:
    from .transformers import TransformersBackend

__all__ = ["Pacer", "StopCancelled"]


class StopCancelled(StoppingCriteria):
    """Ends the rows of a batch whose request was cancelled, at the next generated token."""

    def __init__(self, tokens: list[Any]) -> None:
        self.tokens = tokens
        self._none: Any = None  # the answer almost every step: built once

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """True for the rows whose request is cancelled."""
        done = [token is not None and token.cancelled for token in self.tokens]
        if any(done):
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
        if self._none is None:
            self._none = torch.zeros(len(done), dtype=torch.bool, device=input_ids.device)
        return self._none


class Pacer(StoppingCriteria):
    """Hands a streamed answer's new text to the consumer and pauses generation until it asks for more.

    Called by ``generate`` after every token, in the worker thread that holds the backend's lock. While
    paused it releases the lock, so that the consumer's own model calls can run, and keeps the M-RoPE
    state ``generate`` relies on (a call of the consumer clears it).
    """

    def __init__(self, backend: TransformersBackend, handoff: queue.Queue[Any]) -> None:
        self.backend = backend
        self.handoff = handoff
        self.text = ""
        self._prompt_length = 0
        self._go = threading.Semaphore(0)
        self._stopped = False

    def start(self, prompt_length: int) -> None:
        """The prompt's length in tokens: generated tokens come after it."""
        self._prompt_length = prompt_length

    def resume(self) -> None:
        """The consumer wants the next piece."""
        self._go.release()

    def stop(self) -> None:
        """The consumer is gone: end the generation at the next token."""
        self._stopped = True
        self._go.release()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """Hand over new text and wait for the consumer; True (stop) once it is gone."""
        backend = self.backend
        tokens = [t for t in input_ids[0, self._prompt_length :].tolist() if t not in backend._stop_ids]
        text = backend.tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
        delta = text[len(self.text) :] if text.startswith(self.text) else ""
        if delta and not delta.endswith("\ufffd") and not self._stopped:  # a whole character: hand it over
            self.text = text
            holder = getattr(backend.model, "model", backend.model)
            rope = getattr(holder, "rope_deltas", None)
            self.handoff.put(delta)
            backend._lock.release()  # the consumer may use the model until it asks for more
            try:
                self._go.acquire()
            finally:
                backend._lock.acquire()
            if rope is not None:
                holder.rope_deltas = rope
        return torch.full((input_ids.shape[0],), self._stopped, dtype=torch.bool, device=input_ids.device)
