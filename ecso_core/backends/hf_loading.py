"""Loading policy of the transformers backend: hub or local folder, offline, device, dtype, classes.

Kept apart from inference (:mod:`ecso_core.backends.transformers`): where a model comes from and how it
is put together is one job; running it is another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers
from transformers.utils import logging as hf_logging

from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    from .transformers import TransformersSettings

__all__ = ["load_pretrained"]


def load_pretrained(options: TransformersSettings) -> tuple[Any, Any, str]:
    """The model (on its device, in eval mode), its processor and the name to report.

    Raises:
        BackendUnavailableError: not found locally and the hub is unreachable, or a bad path.

    """
    hf_logging.disable_progress_bar()
    local = Path(options.model).exists()
    offline = options.local_files_only or _env_flag("HF_HUB_OFFLINE")
    if not local and not offline and not _is_cached(options.model):
        _require_hub(options.model)  # fail in seconds, not after minutes of retries
    kwargs: dict[str, Any] = {
        "trust_remote_code": options.trust_remote_code,
        "local_files_only": options.local_files_only or (not local and _is_cached(options.model)),
    }
    device = _device(options.device)
    try:
        processor = transformers.AutoProcessor.from_pretrained(options.model, **kwargs)
        load = {"dtype": _dtype(options.dtype, device), **kwargs}
        if options.attn_implementation:
            load["attn_implementation"] = options.attn_implementation
        loaded = _model_class(options.model, kwargs).from_pretrained(options.model, **load)
    except OSError as exc:
        hint = "" if local else f" {_DOWNLOAD_HINT.format(model=options.model)}"
        raise BackendUnavailableError(f"cannot load model {options.model!r}: {exc}.{hint}") from exc
    loaded.to(device).eval()
    return loaded, processor, Path(options.model).name if local else options.model


_DOWNLOAD_HINT = (
    "If you are offline, download it first on a connected machine "
    "(huggingface-cli download {model}) or pass a local folder."
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _is_cached(model: str) -> bool:
    """Whether the hub id has a config in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids are "not cached"; loading reports them
        return False
    return isinstance(found, str)


def _require_hub(model: str) -> None:
    """Raise at once when the hub cannot be reached, instead of retrying for minutes."""
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=5.0)
    except (httpx.HTTPError, OSError) as exc:
        raise BackendUnavailableError(
            f"model {model!r} is not in the local cache and the Hugging Face hub ({endpoint}) cannot be "
            f"reached: {exc}. {_DOWNLOAD_HINT.format(model=model)}"
        ) from exc


def _device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def _dtype(name: str, device: str) -> Any:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return getattr(torch, name)
    except AttributeError:
        raise BackendUnavailableError(f"unknown dtype {name!r}") from None


def _model_class(model: str, kwargs: dict[str, Any]) -> Any:
    """``AutoModelForImageTextToText`` where it covers the model, else the config's own class."""
    config = transformers.AutoConfig.from_pretrained(model, **kwargs)
    if type(config) in transformers.AutoModelForImageTextToText._model_mapping:
        return transformers.AutoModelForImageTextToText
    for architecture in config.architectures or []:
        if hasattr(transformers, architecture):
            return getattr(transformers, architecture)
    raise BackendUnavailableError(f"{model!r} is not an image-text-to-text model transformers can load")
