"""Work the ECSO steps share, kept so that later steps do not redo it (transformers backend only).

Steps 1-3 of ECSO send the same image(s) behind the same chat-template prefix. Two caches make the
check (and a single caption) cost little more than the tokens that differ:

- :class:`CachedImageProcessor` keeps the processor's pixel tensors per image digest, so an image is
  resized and normalised once, not once per step.
- :class:`PrefixCache` keeps each prompt's key/value cache (prompt positions only, padding removed),
  so a later prompt that starts with the same tokens, image included, prefills only its own suffix
  without re-encoding the image.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

from ..images import DIGEST_KEY

__all__ = ["CachedImageProcessor", "PrefixCache", "PrefixHit", "ReusePlan", "plan_reuse"]


class CachedImageProcessor:
    """Wraps a transformers image processor; reuses its output per image digest.

    Only images that carry a digest (prepared by ecso) are cached, and only when the processor's
    output is a set of tensors laid out image after image; anything else goes straight to the wrapped
    processor. Whether the composition equals the processor's own output is proven per model when the
    backend loads (:func:`ecso_core.backends.hf_probe.probe_image_cache`): where it does not, the
    backend does not use this wrapper at all.
    """

    def __init__(self, inner: Any, max_images: int = 64) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["_cache"] = OrderedDict()
        self.__dict__["_max"] = max_images
        self.__dict__["_lock"] = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        """Process ``images`` like the wrapped processor, from the cache where possible."""
        flat = _flatten(images)
        digests = [getattr(image, "info", {}).get(DIGEST_KEY) for image in flat]
        if not flat or args or None in digests:
            return self._inner(images, *args, **kwargs)
        options = repr(sorted(kwargs.items()))
        keys = [(digest, options) for digest in digests]
        with self._lock:
            found = {key: self._cache[key] for key in keys if key in self._cache}
        missing = {key: image for key, image in zip(keys, flat, strict=True) if key not in found}
        nested = _is_nested(images)

        def process(image: Any) -> Any:
            return self._inner([[image]] if nested else [image], **kwargs)

        fresh: dict[Any, Any] = {}
        if missing:  # resizing and normalising release the GIL: distinct new images run in parallel
            with ThreadPoolExecutor(max_workers=min(len(missing), os.cpu_count() or 1)) as pool:
                fresh = dict(zip(missing, pool.map(process, missing.values()), strict=True))
        if not all(isinstance(v, torch.Tensor) for out in fresh.values() for v in out.values()):
            return self._inner(images, *args, **kwargs)  # not laid out image by image: no caching
        with self._lock:
            for key, out in fresh.items():
                self._cache[key] = out
            for key in found:
                self._cache.move_to_end(key)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        parts = [found[key] if key in found else fresh[key] for key in keys]
        try:
            return parts[0].__class__({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        except RuntimeError:  # per-call padding (any-res patch counts, per-image sizes): process together
            return self._inner(images, *args, **kwargs)

    def clear(self) -> None:
        """Forget every cached output."""
        with self._lock:
            self._cache.clear()


def _is_nested(images: Any) -> bool:
    return isinstance(images, (list, tuple)) and any(isinstance(i, (list, tuple)) for i in images)


def _flatten(images: Any) -> list[Any]:
    if not isinstance(images, (list, tuple)):
        return [images]
    return [leaf for item in images for leaf in _flatten(item)]


@dataclass(frozen=True)
class PrefixHit:
    """A cached prompt whose first ``length`` tokens equal the new prompt's."""

    length: int
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    """Per layer (keys, values), shape [1, heads, tokens, head_dim], for at least ``length`` tokens."""


Images = tuple[str, ...]
"""The digests of a prompt's images, in order: image placeholder tokens are the same ids for every
picture, so the ids alone cannot tell two prompts about different images apart."""


class PrefixCache:
    """Prompt key/value caches keyed by (image digests, token ids), least recently used out, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Images, tuple[int, ...]], tuple[torch.Tensor, Any]] = OrderedDict()
        # Lookups only compare prompts about the same images: an index keeps them O(entries per image).
        self._by_images: dict[Images, set[tuple[Images, tuple[int, ...]]]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def store(
        self,
        images: Sequence[Images | None],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        cache: Any,
        max_tokens: int | None,
    ) -> None:
        """Keep each row's prompt part of ``cache`` (a batched, left-padded generation cache).

        Rows whose images are unknown (``None``: an image without a digest) are not kept.
        """
        width = input_ids.shape[1]
        for row in range(input_ids.shape[0]):
            if images[row] is None:
                continue
            start = int(width - attention_mask[row].sum())
            ids = input_ids[row, start:]
            if max_tokens is not None and len(ids) > max_tokens:
                continue  # longer than a sliding window: the cache no longer holds the whole prompt
            layers = tuple(
                (layer.keys[row : row + 1, :, start:width].clone(), layer.values[row : row + 1, :, start:width].clone())
                for layer in cache.layers
            )
            self._put(images[row], ids.cpu(), layers)  # type: ignore[arg-type]

    def lookup(self, images: Images | None, ids: torch.Tensor) -> PrefixHit | None:
        """The cached prompt about the same images sharing the longest prefix with ``ids``."""
        if images is None:
            return None
        ids = ids.cpu()
        best: PrefixHit | None = None
        with self._lock:
            best_key = None
            for key in self._by_images.get(images, ()):
                cached, layers = self._entries[key]
                n = min(len(cached), len(ids))
                differ = (cached[:n] != ids[:n]).nonzero()
                length = int(differ[0]) if len(differ) else n
                if length and (best is None or length > best.length):
                    best, best_key = PrefixHit(length, layers), key
            if best_key is not None:
                self._entries.move_to_end(best_key)
        return best

    def _put(self, images: Images, ids: torch.Tensor, layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if size > self.max_bytes:
            return
        key = (images, tuple(ids.tolist()))
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return
            self._entries[key] = (ids, layers)
            self._by_images.setdefault(images, set()).add(key)
            self._bytes += size
            while self._bytes > self.max_bytes:
                old_key, (_, old) = self._entries.popitem(last=False)
                siblings = self._by_images[old_key[0]]
                siblings.discard(old_key)
                if not siblings:
                    del self._by_images[old_key[0]]
                self._bytes -= sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in old)

    def clear(self) -> None:
        """Forget every cached prefix."""
        with self._lock:
            self._entries.clear()
            self._by_images.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)


def image_token_ids(model: Any) -> set[int]:
    """Token ids that stand for image content in the model's prompts."""
    config = model.config
    ids = set()
    for name in ("image_token_id", "image_token_index", "boi_token_index", "eoi_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            ids.add(value)
    return ids


@dataclass(frozen=True)
class ReusePlan:
    """A batch whose first ``cached`` positions come from stored caches.

    Each row is laid out as ``[pad][its cached prefix] | [pad][its new tokens]``: the cached part is
    right-aligned in the first ``cached`` positions, the new tokens in the last ``fed`` positions.
    Pads (left and interior) are masked out and positions are counted over real tokens only, so
    every row computes exactly what it would alone.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    cached: int


def plan_reuse(
    rows: Sequence[torch.Tensor], hits: Sequence[PrefixHit | None], image_ids: set[int], pad_id: int
) -> ReusePlan | None:
    """Combine per-row cache hits into one batch, or None when some row cannot reuse its cache.

    Reuse needs each row's cached prefix to hold all of its image tokens, since no pixels are sent.
    """
    if not rows or any(hit is None for hit in hits):
        return None
    marker = torch.tensor(sorted(image_ids) or [-1])
    own: list[int] = []
    for ids, hit in zip(rows, hits, strict=True):
        length = min(hit.length, len(ids) - 1)  # type: ignore[union-attr]  # feed at least one token
        images = torch.isin(ids, marker).nonzero()
        if length < 1 or (len(images) and int(images.max()) >= length):
            return None
        own.append(length)
    cached = max(own)
    fed = max(len(ids) - length for ids, length in zip(rows, own, strict=True))
    batch, width = len(rows), cached + fed
    input_ids = torch.full((batch, width), pad_id, dtype=rows[0].dtype)
    attention_mask = torch.zeros((batch, width), dtype=torch.long)
    for row, (ids, length) in enumerate(zip(rows, own, strict=True)):
        input_ids[row, cached - length : cached] = ids[:length]
        input_ids[row, width - (len(ids) - length) :] = ids[length:]
        attention_mask[row, cached - length : cached] = 1
        attention_mask[row, width - (len(ids) - length) :] = 1
    layers = []
    for layer in range(len(hits[0].layers)):  # type: ignore[union-attr]
        keys, values = hits[0].layers[layer]  # type: ignore[union-attr]
        shape = (batch, keys.shape[1], cached, keys.shape[3])
        batch_keys, batch_values = keys.new_zeros(shape), values.new_zeros(shape)
        for row, (hit, length) in enumerate(zip(hits, own, strict=True)):
            row_keys, row_values = hit.layers[layer]  # type: ignore[union-attr]
            batch_keys[row, :, cached - length :] = row_keys[0, :, :length]
            batch_values[row, :, cached - length :] = row_values[0, :, :length]
        layers.append((batch_keys, batch_values))
    return ReusePlan(input_ids=input_ids, attention_mask=attention_mask, layers=layers, cached=cached)
