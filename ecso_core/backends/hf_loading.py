"""Loading policy of the transformers backend: hub or local folder, offline, device, dtype, classes.

Kept apart from inference (:mod:`ecso_core.backends.transformers`): where a model comes from and how it
is put together is one job; running it is another.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import re
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import transformers
from transformers.utils import logging as hf_logging
from transformers.utils.hub import cached_file
from transformers.utils.import_utils import is_torchvision_available

from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    from transformers import ProcessorMixin

    from .transformers import TransformersSettings

__all__ = ["image_only_processor", "load_pretrained", "load_processor", "looks_like_path", "pixtral_processor_class"]

_log = logging.getLogger("ecso")


def load_pretrained(options: TransformersSettings) -> tuple[Any, Any, str]:
    """The model (on its device, in eval mode), its processor and the name to report.

    Raises:
        BackendUnavailableError: not found locally and the hub is unreachable, or a bad path.

    """
    hf_logging.disable_progress_bar()
    if options.model.startswith("~"):  # "hf:~/models/x": no shell expands a ~ inside a spec
        options = options.model_copy(update={"model": str(Path(options.model).expanduser())})
    local = Path(options.model).exists()
    if not local and looks_like_path(options.model):  # not a hub id: "download it" would mislead
        raise BackendUnavailableError(
            f"model folder {options.model!r} does not exist (looked for {Path(options.model).absolute()}); "
            "pass an existing folder, "
            "or a Hugging Face hub id such as 'llava-hf/llava-1.5-7b-hf'"
        )
    offline = options.local_files_only or _env_flag("HF_HUB_OFFLINE")
    if not local and not offline and not _is_cached(options.model):
        _require_hub(options.model)  # fail in seconds, not after minutes of retries
    kwargs: dict[str, Any] = {
        "trust_remote_code": options.trust_remote_code,
        "local_files_only": options.local_files_only or (not local and _is_cached(options.model)),
    }
    device = _device(options.device)
    try:
        processor = load_processor(options.model, kwargs)
        load = {"dtype": _dtype(options.dtype, device), **kwargs}
        if options.attn_implementation:
            load["attn_implementation"] = options.attn_implementation
        loaded = _model_class(options.model, kwargs).from_pretrained(options.model, **load)
    except (OSError, ValueError) as exc:  # ValueError: a folder without a model's files in it
        hint = "" if local else f" {_DOWNLOAD_HINT.format(model=options.model)}"
        raise BackendUnavailableError(f"cannot load model {options.model!r}: {exc}.{hint}") from exc
    loaded.to(device).eval()
    return loaded, processor, Path(options.model).name if local else options.model


def looks_like_path(model: str) -> bool:
    """Whether ``model`` can only be a folder, not a hub id (``name`` or ``org/name``).

    Absolute, ``./``, ``../`` and ``~`` paths, Windows paths, and anything with more than one ``/`` or a
    trailing one. A relative ``org/name`` stays ambiguous: a folder when it exists, else a hub id.
    """
    return (
        model.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or model in (".", "..")
        or "\\" in model
        or model.count("/") > 1
        or model.endswith("/")
        or re.match(r"[A-Za-z]:[\\/]", model) is not None
    )


def load_processor(model: str, kwargs: dict[str, Any]) -> Any:
    """``AutoProcessor.from_pretrained``, or, where that needs torchvision, the same processor without video.

    Processors of video-capable families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V, SmolVLM, LLaVA-OneVision,
    InternVL, ...) always load a video processor, and video processors need torchvision; their image
    processors have PIL versions, which transformers picks when torchvision is absent. Then the
    processor class is loaded without its ``video_processor`` (images only), and the log says so.
    Mistral3's ``PixtralProcessor`` is imported past its torchvision import (see
    :func:`pixtral_processor_class`).
    """
    try:
        return transformers.AutoProcessor.from_pretrained(model, **kwargs)
    except (OSError, ImportError, AttributeError, ValueError) as exc:
        if is_torchvision_available():
            raise
        name = _processor_class_name(model, kwargs)
        base = _processor_class(name) if name else None
        if base is None:
            raise
        if "video_processor" in inspect.signature(base.__init__).parameters:
            base = image_only_processor(base)
        processor = base.from_pretrained(model, **kwargs)
        _log.info("%s: loaded %s without its video processor (torchvision is not installed): %s", model, name, exc)
        return processor


def image_only_processor(base: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``base`` (a multimodal processor class) without its ``video_processor`` attribute.

    ``ProcessorMixin`` takes its attributes from the ``__init__`` signature and type-checks each; without
    torchvision the video processor's class is a placeholder, so ``video_processor=None`` fails. The
    subclass leaves it out of the signature and passes None, and keeps the parent's name, so that what it
    saves still names the parent class.
    """
    parameters = inspect.signature(base.__init__).parameters
    names = [
        name
        for name, p in parameters.items()
        if name not in ("self", "video_processor") and p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    defaults = {name: parameters[name].default for name in names}
    # ProcessorMixin reads the accepted arguments from the code object of __init__, so it must be a real
    # function with these parameters (names are the library's own identifiers).
    source = (
        f"def __init__(self, {', '.join(f'{n}=_defaults[{n!r}]' for n in names)}, **kwargs):\n"
        f"    _base.__init__(self, {', '.join(f'{n}={n}' for n in names)}, video_processor=None, **kwargs)\n"
    )
    scope: dict[str, Any] = {"_base": base, "_defaults": defaults}
    exec(compile(source, f"<image-only {base.__name__}>", "exec"), scope)
    subclass = type(base.__name__, (base,), {"__init__": scope["__init__"], "__module__": base.__module__})
    return cast("type[ProcessorMixin]", subclass)  # a subclass of base; type() is typed as returning a plain type


def pixtral_processor_class() -> type[ProcessorMixin]:
    """``PixtralProcessor`` (Mistral3), also without torchvision.

    Its module imports one helper from the torchvision image processor module at import time, so
    without torchvision ``transformers.PixtralProcessor`` is a placeholder. The PIL image processor
    module defines the same helper: while the processor module is imported, a stand-in holding it takes
    the torchvision module's place, and is removed right after.
    """
    name = "transformers.models.pixtral.processing_pixtral"
    if is_torchvision_available() or name in sys.modules:
        return _pixtral_processor(name)
    pil = importlib.import_module("transformers.models.pixtral.image_processing_pil_pixtral")
    torch_name = "transformers.models.pixtral.image_processing_pixtral"
    stand_in = types.ModuleType(torch_name)
    stand_in.get_resize_output_image_size = pil.get_resize_output_image_size  # type: ignore[attr-defined]
    saved = sys.modules.get(torch_name)
    sys.modules[torch_name] = stand_in
    try:
        return _pixtral_processor(name)
    finally:
        if saved is None:
            sys.modules.pop(torch_name, None)
        else:
            sys.modules[torch_name] = saved


def _pixtral_processor(module: str) -> type[ProcessorMixin]:
    processor: type[ProcessorMixin] = importlib.import_module(module).PixtralProcessor
    return processor


def _processor_class(name: str) -> type[ProcessorMixin] | None:
    if name == "PixtralProcessor":
        return pixtral_processor_class()
    return getattr(transformers, name, None)


def _processor_class_name(model: str, kwargs: dict[str, Any]) -> str | None:
    for filename in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            path = cached_file(model, filename, _raise_exceptions_for_missing_entries=False, **kwargs)
        except OSError:
            continue
        if path:
            name = json.loads(Path(path).read_text()).get("processor_class")
            if name:
                return str(name)
    return None


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
    except Exception:  # malformed ids are "not cached"; loading reports them
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
