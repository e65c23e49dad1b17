"""Hugging Face transformers backend: any image-text-to-text model, loaded with ``from_pretrained``.

Layers: :func:`to_template_messages` is a pure translator (request -> chat-template messages and the
PIL images in order); :class:`TransformersBackend` renders the processor's chat template, batches
with left padding, generates greedily by default, and scores yes/no from first-token logits.
Importing this module imports torch and transformers; ``ecso_core`` imports it lazily.
"""

from __future__ import annotations

import inspect
import logging
import queue
import re
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from PIL import Image
from pydantic import Field

from .._model import ECSOModel
from ..errors import BackendError, CapabilityError, ConfigError, MissingDependencyError
from ..images import load_image
from ..neutralize import neutralize
from ..types import (
    ChatReply,
    ChatRequest,
    GenerationParams,
    ImagePart,
    ScoreWords,
    TextPart,
    TokenUsage,
    YesNoScore,
)
from ..verdict import starts_word
from .base import BackendBase, BackendCapabilities, check_capabilities

try:
    import torch
    import transformers
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.processing_utils import ProcessorMixin
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise MissingDependencyError(exc.name or "transformers", "hf") from exc

from .hf_loading import load_pretrained
from .hf_probe import probe_image_cache, probe_prefix_reuse
from .hf_reuse import CachedImageProcessor, PrefixCache, ReusePlan, image_token_ids, plan_reuse
from .hf_stopping import Pacer, StopCancelled

_log = logging.getLogger("ecso")

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "TransformersBackend",
    "TransformersSettings",
    "control_tokens",
    "to_template_messages",
    "yes_no_token_ids",
]

DEFAULT_MAX_NEW_TOKENS = 1024
"""New tokens per call when the request leaves it to the model and the checkpoint's
``generation_config`` sets no ``max_new_tokens``: the paper's setting for every ECSO step."""

_YES_VARIANTS = ("yes", "Yes", "YES", " yes", " Yes", " YES")
_NO_VARIANTS = ("no", "No", "NO", " no", " No", " NO")


class TransformersSettings(ECSOModel):
    """How to load and run a transformers model."""

    invalid = ConfigError

    model: str
    """Hub id or local folder."""
    device: str = "auto"
    """``"auto"`` (CUDA, then MPS, then CPU), or a torch device string."""
    dtype: str = "auto"
    """``"auto"`` (bfloat16 on CUDA, float32 elsewhere), ``"float32"``, ``"bfloat16"``, ``"float16"``."""
    max_batch_size: int = Field(default=8, ge=1)
    """Most requests per forward pass; larger calls are split."""
    trust_remote_code: bool = False
    local_files_only: bool = False
    """Never contact the hub (also implied by ``HF_HUB_OFFLINE=1``)."""
    attn_implementation: str | None = None
    """E.g. ``"sdpa"``, ``"flash_attention_2"``; None lets transformers choose."""
    prefix_cache_mb: int = Field(default=512, ge=0)
    """Memory for prompt key/value caches reused across ECSO steps (0 turns reuse off)."""


def to_template_messages(
    request: ChatRequest, control_tokens: Collection[str] = ()
) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """Translate ``request`` into chat-template messages and its images, in order.

    Image parts become ``{"type": "image"}`` placeholders (the processor receives the PIL images
    separately, never a path or URL); text has control tokens (the generic list and
    ``control_tokens``, the tokenizer's own) removed to a fixpoint, so it cannot become special ids.

    Raises:
        CapabilityError: tool messages or tool calls (this backend does not do tools).

    """
    messages: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for message in request.messages:
        if message.role == "tool" or message.tool_calls:
            raise CapabilityError("the transformers backend does not support tool messages")
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, ImagePart):
                images.append(part.image if isinstance(part.image, Image.Image) else load_image(part.image))
                content.append({"type": "image"})
            elif isinstance(part, TextPart):
                content.append({"type": "text", "text": neutralize(part.text, control_tokens)})
            else:  # pragma: no cover - the Part union is closed
                raise CapabilityError(f"unknown message part {type(part).__name__}")
        messages.append({"role": message.role, "content": content})
    return messages, images


def _spellings(words: tuple[str, ...]) -> tuple[str, ...]:
    """Each spelling bare and after a space (its casings are the profile's to list)."""
    return tuple(dict.fromkeys(f"{lead}{w.strip()}" for w in words for lead in ("", " ")))


def yes_no_token_ids(tokenizer: Any, words: ScoreWords | None = None) -> tuple[list[int], list[int]]:
    """First-token ids of the spellings of "yes" and "no", or of ``words`` (ids shared by both are dropped).

    A spelling counts by the first token it encodes to, when that token is the word or, of two
    characters or more, its start ("un" for "unsafe" in a tokenizer without the whole word), as
    :func:`~ecso_core.verdict.score_from_tokens` reads server log-probabilities. Yes/no in any case;
    a profile's spellings as written.
    """
    fold = str.lower if words is None else str
    unsafe, safe = (_YES_VARIANTS, _NO_VARIANTS) if words is None else (_spellings(words[0]), _spellings(words[1]))

    def first_ids(variants: tuple[str, ...]) -> set[int]:
        ids = set()
        for variant in variants:
            encoded = tokenizer.encode(variant, add_special_tokens=False)
            if encoded:
                piece, word = fold(tokenizer.decode(encoded[:1]).strip()), fold(variant.strip())
                if piece and starts_word(piece, word):
                    ids.add(encoded[0])
        return ids

    yes, no = first_ids(unsafe), first_ids(safe)
    return sorted(yes - no), sorted(no - yes)


class TransformersBackend(BackendBase):
    """A transformers vision-language model with its processor.

    Build it with :meth:`from_pretrained`, or pass an already loaded ``model`` and ``processor``.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        name: str | None = None,
        max_batch_size: int = 8,
        prefix_cache_mb: int = 512,
    ) -> None:
        self.model = model
        self.processor = processor
        inner = getattr(processor, "image_processor", None)
        if inner is not None and not isinstance(inner, CachedImageProcessor):
            processor.image_processor = CachedImageProcessor(inner)
        self._prefix_cache = PrefixCache(prefix_cache_mb * 2**20) if prefix_cache_mb else None
        self._reuse = self._prefix_cache is not None
        self._image_ids = image_token_ids(model)
        text_config = getattr(model.config, "text_config", model.config)
        self._window = getattr(text_config, "sliding_window", None)  # caches past it are incomplete
        # transformers renamed `past_key_values` to `cache` during 5.x; use whichever this version has.
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"  # decoder-only batching: pad on the left
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.name = name or getattr(model.config, "name_or_path", None) or type(model).__name__
        self.max_batch_size = max_batch_size
        self.capabilities = BackendCapabilities(score_yes_no=True, tools=False)
        self.control_tokens = control_tokens(self.tokenizer)
        self._score_ids: dict[ScoreWords | None, tuple[list[int], list[int]]] = {}
        self._stop_ids = set(_as_list(model.generation_config.eos_token_id)) | {self.tokenizer.pad_token_id}
        self._lock = threading.Lock()  # one forward pass at a time on the model
        self.reused_calls = 0  # model calls that ran from cached prefixes
        # Fast paths stay on only where they are proven exact for this model (see hf_probe).
        self.fast_paths: dict[str, str | None] = {"image_cache": probe_image_cache(self)}
        if self.fast_paths["image_cache"] is not None and isinstance(processor.image_processor, CachedImageProcessor):
            processor.image_processor = processor.image_processor._inner
        self.fast_paths["prefix_reuse"] = probe_prefix_reuse(self)
        self._reuse = self.fast_paths["prefix_reuse"] is None
        for path, reason in self.fast_paths.items():
            _log.info("%s: %s %s", self.name, path, "on" if reason is None else f"off ({reason})")

    @property
    def default_max_new_tokens(self) -> int:
        """New tokens per call when ``GenerationParams.max_new_tokens`` is None: the model's own default.

        The checkpoint's ``generation_config.max_new_tokens`` when it sets one (tiny-random sets 16, so
        a first run takes seconds), else :data:`DEFAULT_MAX_NEW_TOKENS` (the paper's 1,024).
        """
        own = getattr(self.model.generation_config, "max_new_tokens", None)
        return int(own) if own else DEFAULT_MAX_NEW_TOKENS

    def describe(self) -> dict[str, Any]:
        """What was loaded and which fast paths are on (None) or off (the reason)."""
        image_processor = getattr(self.processor, "image_processor", None)
        image_processor = getattr(image_processor, "_inner", image_processor)
        return {
            "name": self.name,
            "model_class": type(self.model).__name__,
            "processor_class": type(self.processor).__name__,
            "image_processor_class": type(image_processor).__name__,
            "fast_paths": dict(self.fast_paths),
        }

    @classmethod
    def from_pretrained(cls, model: str, **settings: Any) -> TransformersBackend:
        """Load a hub id or a local folder (see :class:`TransformersSettings` for options).

        Raises:
            BackendUnavailableError: not found locally and the hub is unreachable, or a bad path.

        """
        options = TransformersSettings(model=model, **settings)
        loaded, processor, name = load_pretrained(options)
        return cls(
            loaded,
            processor,
            name=name,
            max_batch_size=options.max_batch_size,
            prefix_cache_mb=options.prefix_cache_mb,
        )

    # ---- backend protocol -------------------------------------------------------------------

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        """Generate an answer for each request (batched per identical decoding parameters).

        A request cancelled before its batch starts gets an empty ``finish_reason="cancelled"`` reply;
        one cancelled while generating stops at the next token (its row of the batch ends there).
        """
        replies: dict[int, ChatReply] = {i: _CANCELLED for i, r in enumerate(requests) if _cancelled(r)}
        for params, indices in self._batches(requests, skip=set(replies)):
            for index, reply in zip(indices, self._generate_batch([requests[i] for i in indices], params), strict=True):
                replies[index] = reply
        return [replies[i] for i in range(len(requests))]

    def score_yes_no(self, requests: Sequence[ChatRequest]) -> list[YesNoScore | None]:
        """P(yes) and P(no) of the first answer token, from one forward pass over each prompt.

        Prompts that start like ones already run (the same image behind the same template prefix, as
        ECSO's check does after its answer) compute only their new tokens.
        """
        scores: dict[int, YesNoScore | None] = dict.fromkeys(range(len(requests)))
        cancelled = {i for i, r in enumerate(requests) if _cancelled(r)}
        for _, indices in self._batches(requests, by_params=False, skip=cancelled):
            batch = [requests[i] for i in indices]
            probs, prompt_tokens = self.next_token_probs(batch)
            for row, index in enumerate(indices):
                yes_ids, no_ids = self.score_token_ids(requests[index].score_words)
                if not yes_ids or not no_ids:
                    continue  # stays None: nothing to score this request's words with
                scores[index] = YesNoScore(
                    p_yes=min(float(probs[row, yes_ids].sum()), 1.0),
                    p_no=min(float(probs[row, no_ids].sum()), 1.0),
                    usage=TokenUsage(prompt_tokens=prompt_tokens[row]),
                )
        return [scores[i] for i in range(len(requests))]

    def score_token_ids(self, words: ScoreWords | None = None) -> tuple[list[int], list[int]]:
        """The first-token ids :meth:`score_yes_no` sums as (unsafe, safe) for ``words`` (default yes/no).

        A side without a distinct first token is empty: such requests are not scored (None), and the
        guard reads the judge's text instead.
        """
        if words not in self._score_ids:
            self._score_ids[words] = yes_no_token_ids(self.tokenizer, words)
        return self._score_ids[words]

    def next_token_probs(self, requests: list[ChatRequest]) -> tuple[torch.Tensor, list[int]]:
        """The next-token distribution after each prompt (one forward pass), and the prompts' token counts."""
        inputs, prompt_tokens = self._encode(requests)
        plan = self._plan(requests, inputs)
        # Keep this prompt's cache too: a later, longer prompt about the same image (progressive checks
        # of a growing answer) then computes only what it adds.
        keep = self._reuse and self._prefix_cache is not None and any(r.images for r in requests)
        if plan is None and not bool(inputs["attention_mask"].all()):
            # A plain pass over a left-padded batch places padded rows at shifted positions (harmless to
            # its own logits under RoPE, not to a cache reused at generation's positions): not kept.
            keep = False
        if plan is not None and not all(
            bool(row[len(row) - int(row.sum()) :].all()) for row in plan.attention_mask
        ):  # a ragged reused batch has padding between a row's prefix and its new tokens: not a prompt cache
            keep = False
        full_ids, full_mask = (
            (plan.input_ids, plan.attention_mask) if plan else (inputs["input_ids"], inputs["attention_mask"])
        )
        if plan is not None:
            self.reused_calls += 1
            positions = (plan.attention_mask.cumsum(-1) - 1).clamp(min=0)[:, plan.cached :]
            deltas = self._rope_deltas(inputs)
            if deltas is not None:  # M-RoPE: the text after the images sits at its position + the row's delta
                positions = (positions + deltas.to(positions.device)).unsqueeze(0).expand(3, -1, -1)
            inputs = {
                "input_ids": plan.input_ids[:, plan.cached :],
                "attention_mask": plan.attention_mask,
                "position_ids": positions,
                self._cache_arg: self._cache(plan),
            }
        with self._lock, torch.inference_mode():
            self._forget_call_state()
            try:
                output = self.model(**self._on_device(inputs), logits_to_keep=1, use_cache=keep)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"{self.name} forward pass failed: {exc}") from exc
        if keep and self._prefix_cache is not None:
            digests = [_digests(r) for r in requests]
            self._prefix_cache.store(digests, full_ids, full_mask, _output_cache(output), self._window)
        return torch.softmax(output.logits[:, -1, :].float(), dim=-1).cpu(), prompt_tokens

    @contextmanager
    def reuse_disabled(self) -> Iterator[None]:
        """Run the plain computation (no prefix reuse) inside the block: what the fast path must equal."""
        saved, self._reuse = self._reuse, False
        try:
            yield
        finally:
            self._reuse = saved

    # ---- internals ----------------------------------------------------------------------------

    def _batches(
        self, requests: Sequence[ChatRequest], by_params: bool = True, skip: Collection[int] = ()
    ) -> list[tuple[GenerationParams, list[int]]]:
        """Group request indices (but ``skip``) by decoding params and by with/without images, in chunks."""
        groups: dict[tuple[Any, bool], list[int]] = {}
        for index, request in enumerate(requests):
            if index in skip:
                continue
            check_capabilities(self.capabilities, request, self.name)
            key = (self._resolved(request.params) if by_params else None, bool(request.images))
            groups.setdefault(key, []).append(index)
        batches = []
        for (params, _), indices in groups.items():
            for start in range(0, len(indices), self.max_batch_size):
                batches.append((params or GenerationParams(), indices[start : start + self.max_batch_size]))
        return batches

    def _resolved(self, params: GenerationParams) -> GenerationParams:
        """``params`` with the model's own default in place of an unset ``max_new_tokens``.

        Resolved before grouping, so that requests that leave it unset batch with those that ask for
        the same number explicitly.
        """
        if params.max_new_tokens is not None:
            return params
        return params.model_copy(update={"max_new_tokens": self.default_max_new_tokens})

    def _encode(self, requests: list[ChatRequest]) -> tuple[Any, list[int]]:
        texts, images = [], []
        for request in requests:
            messages, request_images = to_template_messages(request, self.control_tokens)
            # The mixin's own rendering: some processors override it only to add video defaults, which an
            # image-only processor (no torchvision) does not have.
            texts.append(ProcessorMixin.apply_chat_template(self.processor, messages, add_generation_prompt=True))
            images.append(request_images)
        # Templates that write the BOS token themselves must not get a second one.
        bos = self.tokenizer.bos_token
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        try:
            inputs = self.processor(
                text=texts,
                images=images if any(images) else None,
                padding=True,
                return_tensors="pt",
                add_special_tokens=add_special,
            )
        except (ValueError, TypeError, OSError) as exc:
            if any(images):
                raise BackendError(f"{self.name} processor failed: {exc}") from exc
            # Some processors (PaliGemma) take no prompt without an image; the eyes-closed step has none.
            inputs = self.tokenizer(texts, padding=True, return_tensors="pt", add_special_tokens=add_special)
        inputs.pop("labels", None)  # PaliGemma's processor adds training labels: not ours to pass
        inputs = inputs.to(self.model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs, inputs["attention_mask"].sum(-1).tolist()

    def stream_generate(self, request: ChatRequest) -> Iterator[str | ChatReply]:
        """Text deltas of one answer as it is generated, then the whole :class:`ChatReply`.

        Generation runs in a worker thread and pauses after each new piece of text until the consumer
        asks for the next one, with the model free meanwhile: model calls the consumer makes between two
        deltas (progressive checks) run at that point, exactly as they would alone. Closing the iterator
        stops the generation at the next token.
        """
        check_capabilities(self.capabilities, request, self.name)
        params = self._resolved(request.params)
        handoff: queue.Queue[Any] = queue.Queue()
        pacer = Pacer(self, handoff)
        worker = threading.Thread(
            target=self._stream_worker, args=(request, params, pacer, handoff), name="ecso-stream", daemon=True
        )
        worker.start()
        try:
            while True:
                item = handoff.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, ChatReply):
                    return
                pacer.resume()
        finally:
            pacer.stop()
            worker.join()

    def _stream_worker(
        self, request: ChatRequest, params: GenerationParams, pacer: Pacer, handoff: queue.Queue[Any]
    ) -> None:
        try:
            (reply,) = self._generate_batch([request], params, pacer)
            handoff.put(reply.model_copy(update={"text": pacer.text}))
        except BaseException as exc:  # handed to the consumer, who raises it
            handoff.put(exc)

    def _generate_batch(
        self, requests: list[ChatRequest], params: GenerationParams, pacer: Pacer | None = None
    ) -> list[ChatReply]:
        inputs, prompt_tokens = self._encode(requests)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self._resolved(params).max_new_tokens,
            "do_sample": params.temperature > 0,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.temperature > 0:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:  # greedy: drop sampling defaults a model's generation_config may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        criteria: list[StoppingCriteria] = []
        if any(r.cancel is not None for r in requests):
            criteria.append(StopCancelled([r.cancel for r in requests]))
        if pacer is not None:
            pacer.start(inputs["input_ids"].shape[1])
            criteria.append(pacer)
        if criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
        plan = self._plan(requests, inputs)
        deltas = None
        if plan is not None:  # the images are in the cached prefixes: no pixels, only new tokens prefilled
            self.reused_calls += 1
            deltas = self._rope_deltas(inputs)
            inputs = {
                "input_ids": plan.input_ids,
                "attention_mask": plan.attention_mask,
                self._cache_arg: self._cache(plan),
            }
        with self._lock, torch.inference_mode():
            self._forget_call_state()
            if deltas is not None:  # M-RoPE: generate adds these to its text positions when a cache is given
                self.model.model.rope_deltas = deltas.to(self.model.device)
            if params.seed is not None:
                torch.manual_seed(params.seed)
            try:
                output = self.model.generate(**self._on_device(inputs), **kwargs, return_dict_in_generate=True)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"{self.name} generation failed: {exc}") from exc
        if plan is None and self._prefix_cache is not None and any(r.images for r in requests):
            images = [_digests(r) for r in requests]
            self._prefix_cache.store(
                images, inputs["input_ids"], inputs["attention_mask"], _output_cache(output), self._window
            )
        new_tokens = output.sequences[:, inputs["input_ids"].shape[1] :]
        return [
            _CANCELLED if _cancelled(request) else self._reply(row.tolist(), prompt, params)
            for request, row, prompt in zip(requests, new_tokens, prompt_tokens, strict=True)
        ]

    def _plan(self, requests: Sequence[ChatRequest], inputs: Any) -> ReusePlan | None:
        """How to run ``inputs`` from cached prefixes, or None to run them in full."""
        if not self._reuse or self._prefix_cache is None or not any(r.images for r in requests):
            return None
        rows = [_row_ids(inputs, row) for row in range(len(requests))]
        hits = [self._prefix_cache.lookup(_digests(r), ids) for r, ids in zip(requests, rows, strict=True)]
        plan = plan_reuse(rows, hits, self._image_ids, self.tokenizer.pad_token_id)
        if plan is not None and self._window is not None and plan.input_ids.shape[1] > self._window:
            return None  # sliding-window layers would drop part of the batch's cache: prefill in full
        return plan

    def _rope_deltas(self, inputs: Any) -> torch.Tensor | None:
        """Per-row M-RoPE deltas of the full prompts (None for 1-D RoPE models).

        Qwen2-VL-style models place the text after an image at (its index + delta) on all three axes;
        the model's own ``get_rope_index`` over the whole prompt gives the delta of each row.
        """
        inner = getattr(self.model, "model", None)
        if inner is None or not hasattr(inner, "get_rope_index") or "image_grid_thw" not in inputs:
            return None
        names = ("input_ids", "mm_token_type_ids", "image_grid_thw", "second_per_grid_ts", "attention_mask")
        deltas: torch.Tensor | None
        with torch.inference_mode():
            _, deltas = inner.get_rope_index(**{k: inputs[k] for k in names if k in inputs})
        return deltas

    def _forget_call_state(self) -> None:
        """Drop what a previous call left on the model (M-RoPE ``rope_deltas``): each call starts clean."""
        for holder in (self.model, getattr(self.model, "model", None)):
            if holder is not None and getattr(holder, "rope_deltas", None) is not None:
                holder.rope_deltas = None

    def _cache(self, plan: ReusePlan) -> Any:
        device = self.model.device
        data = [(keys.to(device), values.to(device)) for keys, values in plan.layers]
        return transformers.DynamicCache(ddp_cache_data=data, config=self.model.config)

    def _on_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        device = self.model.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}

    def _reply(self, tokens: list[int], prompt_tokens: int, params: GenerationParams) -> ChatReply:
        length = next((i for i, t in enumerate(tokens) if t in self._stop_ids), None)
        finish = "stop" if length is not None else "length"
        kept = tokens if length is None else tokens[:length]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        for stop in params.stop:
            if stop in text:
                text, finish = text[: text.index(stop)], "stop"
        usage = TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=len(kept))
        return ChatReply(text=text.strip(), usage=usage, finish_reason=finish)


_CANCELLED = ChatReply(finish_reason="cancelled")


def _cancelled(request: ChatRequest) -> bool:
    return request.cancel is not None and request.cancel.cancelled


def _output_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _digests(request: ChatRequest) -> tuple[str, ...] | None:
    """The request's image digests in order; None when an image was not prepared (no digest)."""
    digests = tuple(part.digest for part in request.images)
    return None if None in digests else digests  # type: ignore[return-value]


def _row_ids(inputs: Any, row: int) -> Any:
    """Row ``row`` of a left-padded batch, without its padding."""
    mask = inputs["attention_mask"][row]
    return inputs["input_ids"][row, int(len(mask) - mask.sum()) :].cpu()


_MARKUP = re.compile(r"^[<\[\uff5c].*[>\]\uff5c]$")


def control_tokens(tokenizer: Any) -> frozenset[str]:
    """The tokenizer's control tokens: its special tokens and its added tokens shaped like markup.

    Added tokens that are ordinary text (some tokenizers add runs of spaces or words) are kept out:
    removing them would change what users wrote.
    """
    tokens = {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        text = str(token)
        if getattr(token, "special", False) or (_MARKUP.match(text) and not any(c.isspace() for c in text)):
            tokens.add(text)
    return frozenset(t for t in tokens if t and not t.isspace())


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
