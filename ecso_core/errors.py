"""The one exception tree of ecso.

Every error ecso raises on purpose is an :class:`ECSOError`. Foreign errors (PIL, torch, httpx,
pydantic) are caught at the boundary where they happen and re-raised as one of these, ``from`` the
original, so callers need a single ``except ECSOError``::

    ECSOError
    ├── ConfigError              bad configuration or backend spec; unknown prompt set
    ├── InputError (ValueError)  a request that cannot be served as given
    │   ├── MessageError         empty or malformed messages, no user turn
    │   └── ImageError           corrupt, huge, unsupported or refused images (URLs, SVG)
    ├── CapabilityError          the backend cannot do what the request needs (checked up front)
    ├── BackendError             a model call failed
    │   ├── BackendUnavailableError  the model cannot be loaded or reached (offline hub, bad path)
    │   └── BackendTimeoutError      a model call took longer than allowed
    ├── CheckFailedError         the safety check failed and ``fail_mode="raise"`` was chosen
    ├── RequestCancelledError    the request was cancelled (deadline, client gone): its work stopped
    └── MissingDependencyError (ImportError)  an optional extra is not installed; names the pip command
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CapabilityError",
    "CheckFailedError",
    "ConfigError",
    "ECSOError",
    "ImageError",
    "InputError",
    "MessageError",
    "MissingDependencyError",
    "RequestCancelledError",
]


class ECSOError(Exception):
    """Root of every error ecso raises on purpose."""


class ConfigError(ECSOError, ValueError):
    """Invalid configuration: unknown prompt set, bad backend spec, bad option values."""


class InputError(ECSOError, ValueError):
    """A request that cannot be served as given; the caller should fix the input."""

    param: str | None = None
    """The request field at fault, when one is (the server's error body names it)."""


class MessageError(InputError):
    """Empty or malformed messages (for example no user turn to take the query from)."""


class ImageError(InputError):
    """An image that is corrupt, truncated, too large, of an unsupported format, or refused (URL)."""


class CapabilityError(ECSOError):
    """The backend lacks a capability the request needs (too many images, tools, scoring)."""

    param: str | None = None
    """The request field that needs the capability, when one does (the server's error body names it)."""


class BackendError(ECSOError):
    """A model call failed. ``status_code`` holds the HTTP status when a server answered one."""

    status_code: int | None = None


class BackendUnavailableError(BackendError):
    """The model cannot be loaded or reached (not downloaded and offline, bad path, server down)."""


class BackendTimeoutError(BackendError):
    """A model call exceeded its time limit."""


class CheckFailedError(ECSOError):
    """The harm-aware self-check failed or was unparseable and ``fail_mode="raise"`` is set."""


class RequestCancelledError(ECSOError):
    """The request's :class:`~ecso_core.cancel.CancelToken` was cancelled; its remaining work was skipped."""


class MissingDependencyError(ECSOError, ImportError):
    """An optional dependency is missing; the message names the ``pip install`` that fixes it."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install the '{extra}' extra: pip install 'ecso[{extra}]' "
            f"(from a checkout of ecso: pip install -e '.[{extra}]')"
        )
        self.package = package
        self.extra = extra
