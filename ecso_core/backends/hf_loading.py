"""Loading policy of the transformers backend: hub or local folder, offline, device, dtype, classes.

Kept apart from inference (:mod:`ecso_core.backends.transformers`): where a model comes from and how it
is put together is one job; running it is another.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import math
import os
import re
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import transformers
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs
from transformers.utils import logging as hf_logging
from transformers.utils.hub import cached_file
from transformers.utils.import_utils import is_torchvision_available

from ..errors import BackendUnavailableError

if TYPE_CHECKING:
    from transformers import ProcessorMixin

    from .transformers import TransformersSettings

__all__ = [
    "image_only_processor",
    "Llama4ImageProcessorPil",
    "llama4_output_fix",
    "load_pretrained",
    "load_processor",
    "looks_like_path",
    "pixtral_processor_class",
    "shieldgemma2_prompt_processor",
]

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
        config = transformers.AutoConfig.from_pretrained(options.model, **kwargs)
        processor = load_processor(options.model, kwargs)
        load = {"dtype": _dtype(options.dtype, device), **kwargs}
        if options.attn_implementation:
            load["attn_implementation"] = options.attn_implementation
        if config.model_type == "shieldgemma2":
            loaded = _shieldgemma2_model(options.model, load)
            processor = shieldgemma2_prompt_processor(processor)
        else:
            loaded = _model_class(options.model, kwargs).from_pretrained(options.model, **load)
        if isinstance(loaded, transformers.Llama4ForConditionalGeneration):
            llama4_output_fix(loaded)
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
    :func:`pixtral_processor_class`). Llama 4's image processor exists only for torchvision: without it,
    :class:`Llama4ImageProcessorPil` is registered as its PIL version.
    """
    if not is_torchvision_available():
        _register_llama4_image_processor_pil()
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


# ---- ShieldGemma 2: an image classifier around a Gemma 3 image-text model -------------------------


def _shieldgemma2_model(model: str, load: dict[str, Any]) -> Any:
    """The Gemma 3 model inside a ShieldGemma 2 checkpoint (``ShieldGemma2ForImageClassification.model``).

    The classifier returns only P(Yes) and P(No) of the next token (``probabilities``: a softmax over the
    logits of ``yes_token_index`` and ``no_token_index`` at the last position); ECSO needs the whole
    next-token distribution and generation, which the inner model gives, with the same weights. Its
    generation settings come from the checkpoint's ``generation_config.json`` where there is one.
    """
    classifier = transformers.ShieldGemma2ForImageClassification.from_pretrained(model, **load)
    inner = classifier.model
    try:
        inner.generation_config = transformers.GenerationConfig.from_pretrained(
            model, local_files_only=bool(load.get("local_files_only"))
        )
    except OSError:  # none saved: keep the one derived from the config
        pass
    return inner


def shieldgemma2_prompt_processor(classifier_processor: Any) -> Any:
    """A ``Gemma3Processor`` that encodes rendered prompts exactly as ``ShieldGemma2Processor`` encodes its own.

    ``ShieldGemma2Processor.__call__`` ignores ``text``: it renders one prompt per (image, policy) from
    its policy definitions. This processor has the same tokenizer, image processor, image token count and
    chat template, and takes any rendered prompt. As ``ShieldGemma2Processor`` does, it lets the tokenizer
    add its special tokens even though the template already starts with BOS (``add_special_tokens`` is
    not passed on), so that its ids are the classifier's own (tests/test_judge_families.py proves it).
    """
    return ShieldGemma2PromptProcessor(
        image_processor=classifier_processor.image_processor,
        tokenizer=classifier_processor.tokenizer,
        chat_template=classifier_processor.chat_template,
        image_seq_length=classifier_processor.image_seq_length,
    )


class ShieldGemma2PromptProcessor(transformers.Gemma3Processor):
    """``Gemma3Processor`` encoding as ``ShieldGemma2Processor`` does (see :func:`shieldgemma2_prompt_processor`)."""

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        """Encode ``text`` and ``images``; the tokenizer adds its special tokens, as ShieldGemma 2's processor."""
        kwargs.pop("add_special_tokens", None)
        return super().__call__(images=images, text=text, **kwargs)


# ---- Llama 4: its image processor without torchvision, its forward pass on transformers 5.x ----------


def llama4_output_fix(model: Any) -> None:
    """Let ``Llama4ForConditionalGeneration.forward`` finish on transformers versions where it cannot.

    Some transformers 5.x releases (5.24 among them) build its output with ``outputs.image_outputs`` read
    from the output of its language model (``Llama4ForCausalLM``), which has no such field: every forward
    pass that returns a dict raises ``AttributeError``. A forward hook gives the language model's output an
    empty ``image_outputs`` when it has none; nothing else changes (the image features are merged before
    the language model runs). Where transformers has it right, the hook does nothing.
    """

    def add_image_outputs(module: Any, args: Any, output: Any) -> Any:
        if not isinstance(output, tuple) and not hasattr(output, "image_outputs"):
            output.image_outputs = None
        return output

    if not getattr(model.language_model, "_ecso_output_fix", False):
        model.language_model.register_forward_hook(add_image_outputs)
        model.language_model._ecso_output_fix = True


class _Llama4ImagesKwargs(ImagesKwargs, total=False):
    max_patches: int
    resize_to_max_canvas: bool


class Llama4ImageProcessorPil(PilBackend):
    """Llama 4's image processor (``Llama4ImageProcessor``, torchvision only in transformers) on PIL and torch.

    The same steps as the torchvision class: each image is resized without distortion to fit the best
    canvas of ``size`` tiles (at most ``max_patches`` of them; never upscaled past one tile unless
    ``resize_to_max_canvas``), padded to the canvas (bottom and right), rescaled and normalised in
    bfloat16 as the original implementation, split into tiles, and followed by a global tile (the whole
    image resized to one tile) when there are several. Resizing uses PIL's bilinear filter, which
    torchvision's antialiased bilinear resize mirrors to within rounding. Saved as ``Llama4ImageProcessor``.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"height": 336, "width": 336}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    max_patches = 16
    resize_to_max_canvas = False
    valid_kwargs = _Llama4ImagesKwargs

    def _preprocess(  # type: ignore[override]
        self,
        images: list[Any],
        size: SizeDict,
        resample: Any,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        max_patches: int,
        resize_to_max_canvas: bool,
        return_tensors: Any,
        **kwargs: Any,
    ) -> BatchFeature:
        tile_h, tile_w = size.height, size.width
        if tile_h is None or tile_h != tile_w:
            raise ValueError("`size` must be square.")
        canvases = torch.tensor(_llama4_canvases(max_patches, tile_h))
        pixel_values, aspect_ratios = [], []
        for image in images:  # channels-first uint8 arrays
            height, width = image.shape[-2:]
            # Mixed int / tensor arithmetic as in transformers (its float32 rounding decides the sizes).
            canvas = _llama4_best_fit((height, width), canvases, resize_to_max_canvas)
            fit = (
                canvas
                if resize_to_max_canvas
                else (min(max(height, tile_h), canvas[0]), min(max(width, tile_w), canvas[1]))
            )
            new_h, new_w = (max(int(side), 1) for side in _llama4_no_distortion((height, width), fit))
            resized = self.resize(image, SizeDict(height=new_h, width=new_w), resample=resample)
            canvas = (int(canvas[0]), int(canvas[1]))
            padded = np.zeros((resized.shape[0], canvas[0], canvas[1]), dtype=resized.dtype)
            padded[:, : resized.shape[1], : resized.shape[2]] = resized
            rows, cols = canvas[0] // tile_h, canvas[1] // tile_w
            tiles = self._rescale_normalize(padded, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
            tiles = (
                tiles.view(-1, rows, tile_h, cols, tile_w)
                .permute(1, 3, 0, 2, 4)
                .reshape(-1, tiles.shape[0], tile_h, tile_w)
            )
            if rows * cols > 1:
                whole = self.resize(image, SizeDict(height=tile_h, width=tile_w), resample=resample)
                glob = self._rescale_normalize(whole, do_rescale, rescale_factor, do_normalize, image_mean, image_std)
                tiles = torch.cat([tiles, glob[None]])
            pixel_values.append(tiles)
            aspect_ratios.append([rows, cols])
        data = {
            "pixel_values": torch.cat(pixel_values) if return_tensors else pixel_values,
            "aspect_ratios": torch.tensor(aspect_ratios),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _rescale_normalize(
        image: Any, do_rescale: bool, rescale_factor: float, do_normalize: bool, mean: Any, std: Any
    ) -> torch.Tensor:
        """As ``Llama4ImageProcessor.rescale_and_normalize``: in bfloat16 when both steps run."""
        pixels = torch.from_numpy(np.ascontiguousarray(image))
        if do_rescale and do_normalize:
            pixels = pixels.to(torch.bfloat16) * rescale_factor
        elif do_rescale:
            pixels = pixels.float() * rescale_factor
        if do_normalize:
            pixels = pixels if pixels.is_floating_point() else pixels.float()
            mean_t = torch.as_tensor(mean, dtype=pixels.dtype).view(-1, 1, 1)
            std_t = torch.as_tensor(std, dtype=pixels.dtype).view(-1, 1, 1)
            pixels = (pixels - mean_t) / std_t
        return pixels


def _llama4_canvases(max_tiles: int, tile: int) -> list[tuple[int, int]]:
    """The canvases (height, width) of at most ``max_tiles`` square tiles, in transformers' order."""
    by_ratio: dict[float, list[tuple[int, int]]] = {}
    for count in range(max_tiles, 0, -1):
        for factor in sorted(f for f in range(1, count + 1) if count % f == 0):
            by_ratio.setdefault(factor / (count // factor), []).append((factor, count // factor))
    return [(h * tile, w * tile) for pairs in by_ratio.values() for h, w in pairs]


def _llama4_best_fit(image: tuple[int, int], canvases: torch.Tensor, to_max: bool) -> Any:
    """The canvas (a tensor ``[height, width]``) transformers' ``get_best_fit`` picks.

    The least (or, ``to_max``, the most) upscaling canvas, else the least downscaling one; ties go to the
    smallest area.
    """
    scale_h, scale_w = canvases[:, 0] / image[0], canvases[:, 1] / image[1]
    scales = torch.where(scale_h > scale_w, scale_w, scale_h)
    up = scales[scales >= 1]
    chosen = (up.max() if to_max else up.min()) if len(up) else scales[scales < 1].max()
    options = canvases[scales == chosen]
    return options[torch.argmin(options[:, 0] * options[:, 1])] if len(options) > 1 else options[0]


def _llama4_no_distortion(image: tuple[int, int], target: Any) -> tuple[Any, Any]:
    """The largest size within ``target`` of the image's aspect ratio (``get_max_res_without_distortion``)."""
    (height, width), (target_h, target_w) = image, target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return min(math.floor(height * scale_w), target_h), target_w
    return target_h, min(math.floor(width * scale_h), target_w)


def _register_llama4_image_processor_pil() -> None:
    """Let ``AutoImageProcessor`` load ``Llama4ImageProcessor`` configs as :class:`Llama4ImageProcessorPil`.

    The mapping's own entry for Llama 4 names only the torchvision class; the added one names both, so
    that transformers finds the PIL backend by the saved ``image_processor_type``.
    """
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING

    entry: Any = {"torchvision": "Llama4ImageProcessor", "pil": Llama4ImageProcessorPil}  # typed as a pair there
    IMAGE_PROCESSOR_MAPPING.register(transformers.Llama4Config, entry, exist_ok=True)
