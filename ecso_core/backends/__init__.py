"""Backends: the protocol, the light implementations, and :func:`load_backend` for spec strings.

``TransformersBackend`` (torch, transformers: the ``hf`` extra) lives in :mod:`ecso_core.backends.transformers`.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from .base import BackendBase, BackendCapabilities, VisionChatBackend, check_capabilities
from .openai import OpenAIBackend
from .scripted import ScriptedBackend, by_step

__all__ = [
    "BackendBase",
    "BackendCapabilities",
    "OpenAIBackend",
    "ScriptedBackend",
    "VisionChatBackend",
    "by_step",
    "check_capabilities",
    "load_backend",
]

SPEC_HELP = (
    "model specs: 'tiny-random' (or 'tiny-random:<variant>', variants llava, gemma3, llava-small, "
    "gemma3-small), 'hf:<hub id or local folder>', 'openai:<model>@<base_url>' (e.g. "
    "'openai:llava-hf/llava-1.5-7b-hf@http://localhost:8000/v1'; base URL default $OPENAI_BASE_URL or OpenAI), "
    "'moderation:<model>@<base_url>' (a /moderations endpoint, as a judge with the classifier profile); "
    "docs/models.md lists every tiny-random variant"
)


def load_backend(spec: str | VisionChatBackend, **options: Any) -> VisionChatBackend:
    """Resolve a model spec string into a backend (a backend object is returned as is).

    ``options`` go to the backend's settings (for transformers: ``device``, ``dtype``, ...).

    Raises:
        ConfigError: an unknown or malformed spec.
        BackendUnavailableError: the model cannot be loaded.
        MissingDependencyError: the extra the backend needs is not installed.

    """
    if not isinstance(spec, str):
        return spec
    scheme, _, rest = spec.partition(":")
    if scheme == "tiny-random":
        from .tiny import build_tiny_model
        from .transformers import TransformersBackend

        seed = int(options.pop("seed", 0))
        path = build_tiny_model(rest or "llava", seed=seed)
        backend = TransformersBackend.from_pretrained(str(path), local_files_only=True, **options)
        backend.name = spec
        return backend
    if scheme == "openai" and rest:
        from .openai import OpenAIBackend

        model, _, base_url = rest.partition("@")
        if base_url:
            options.setdefault("base_url", base_url)
        return OpenAIBackend(model, **options)
    if scheme == "moderation" and rest:
        from .moderation import ModerationBackend

        model, _, base_url = rest.partition("@")
        if base_url:
            options.setdefault("base_url", base_url)
        return ModerationBackend(model, **options)
    if scheme == "hf" and rest:
        from .transformers import TransformersBackend

        return TransformersBackend.from_pretrained(rest, **options)
    raise ConfigError(f"unknown model spec {spec!r}; {SPEC_HELP}")
