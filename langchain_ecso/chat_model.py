"""``ChatECSO``: ECSO as a LangChain chat model, usable wherever a chat model goes."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, RunnableParallel, RunnableSequence, ensure_config
from langchain_core.runnables.base import RunnableBindingBase
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SkipValidation, field_validator, model_validator

from ecso_core.backends.base import VisionChatBackend
from ecso_core.config import ECSOConfig
from ecso_core.errors import BackendError, CapabilityError, ECSOError
from ecso_core.guard import ECSO, StreamEnd, TextDelta
from ecso_core.result import ECSOResult
from ecso_core.types import ChatRequest, GenerationParams

from ._callbacks import PARENT_KWARG, PENDING_RUN, StreamParent, from_run_manager, from_stream_parent
from ._convert import ai_message, final_chunk, to_ecso_request
from .backend import ChatRunnable, LangChainBackend, chat_model_of, model_name, resolve_model

__all__ = ["ChatECSO"]


class ChatECSO(BaseChatModel):
    """A chat model guarded by ECSO ("Eyes Closed, Safety On").

    Wrap a LangChain chat model (``ChatECSO(model=ChatOpenAI(model="gpt-4o"))``) or an ecso backend
    (``ChatECSO(backend=load_backend("hf:..."))``) and use it anywhere a chat model goes. Every answer
    carries ``response_metadata["ecso"]`` (decision, verdict, steps: the result's client summary) and
    ``usage_metadata`` summed over all steps. Streaming emits text only after the verdict. Nothing a
    client or a UI handler sees carries withheld text (the step-1 answer when not released, captions,
    the check's reply); the step runs go to tracers only.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: ChatRunnable | None = None
    """The LangChain chat model to guard: a chat model, a Runnable around one (``with_retry``,
    ``with_fallbacks``, ``bind``, a configurable ``init_chat_model``), or an ``init_chat_model`` string
    such as ``"openai:gpt-4o"``."""
    # backend and judge: checked by _one_model and when the guard is built, not by pydantic
    backend: SkipValidation[VisionChatBackend | None] = None
    """Or: an ecso ``VisionChatBackend`` to guard."""
    judge: SkipValidation[ChatRunnable | VisionChatBackend | str | None] = None
    """Optional separate model (LangChain chat model or ecso backend) for the self-check."""
    config: ECSOConfig = Field(default_factory=ECSOConfig)
    """The guard's configuration (prompts, thresholds, fail mode, limits)."""
    max_tokens: int | None = None
    """Most new tokens per answer (ecso backends; a LangChain model keeps its own setting)."""
    temperature: float | None = None
    """Sampling temperature of the answers (ecso backends; default greedy)."""
    stop: list[str] | None = None
    """Stop sequences for the answers."""
    step_callbacks: list[Any] = Field(default_factory=list)
    """Handlers that also receive the step runs, withheld text included (operator-side tracing such as
    Langfuse). LangChain tracers (LangSmith, ``collect_runs``) receive them already; event streams and
    other handlers never do (see docs/langchain.md, "What tracers and streams see")."""
    audit: Any = None
    """Called with every :class:`~ecso_core.result.ECSOResult`, withheld text included (operator-side)."""

    _warned_images: bool = PrivateAttr(default=False)

    @field_validator("model", mode="before")
    @classmethod
    def _resolve(cls, model: Any) -> Any:
        return None if model is None else resolve_model(model)

    @model_validator(mode="after")
    def _one_model(self) -> ChatECSO:
        if (self.model is None) == (self.backend is None):
            raise ValueError("ChatECSO needs exactly one of model= (a LangChain chat model) or backend=")
        if self.backend is not None and not isinstance(self.backend, VisionChatBackend):
            raise ValueError("backend= must be an ecso VisionChatBackend (see ecso_core.load_backend)")
        return self

    @property
    def _llm_type(self) -> str:
        return "ecso"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"guarded": self._inner_name, "prompt_set": self.config.prompt_set}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        name = kwargs["model"] if isinstance(kwargs.get("model"), str) else self._inner_name
        params = LangSmithParams(ls_provider="ecso", ls_model_name=name, ls_model_type="chat")
        if self.temperature is not None:
            params["ls_temperature"] = self.temperature
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    @property
    def _inner_name(self) -> str:
        if self.model is not None:
            return model_name(self.model)
        assert self.backend is not None  # _one_model: a backend when there is no model
        return str(self.backend.name)

    # ---- what LangChain asks of a model: profile, serialisation ---------------------------------

    def _resolve_model_profile(self) -> ModelProfile | None:
        """The guarded model's profile, narrowed to what the guard passes on.

        A wrapped LangChain model's own profile (None when it has none); for an ecso backend, what its
        capabilities declare. The guard takes images (data: URLs; http(s) only when allowed), text and
        tools; PDFs, audio, video and images inside tool messages are refused.
        """
        if self.model is None:
            assert self.backend is not None  # _one_model: a backend when there is no model
            caps = self.backend.capabilities
            return ModelProfile(
                text_inputs=True,
                image_inputs=True,
                image_url_inputs=self.config.allow_image_urls,
                tool_calling=caps.tools,
                structured_output=caps.tools,
            )
        inner = chat_model_of(self.model)
        if inner is None or inner.profile is None:
            return None
        profile = ModelProfile(**inner.profile)
        profile.update({"pdf_inputs": False, "audio_inputs": False, "video_inputs": False, "image_tool_message": False})
        profile.update({"pdf_tool_message": False})
        if "image_url_inputs" in profile:
            profile["image_url_inputs"] = bool(profile["image_url_inputs"]) and self.config.allow_image_urls
        return profile

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """ChatECSO serialises (``dumpd``/``load``) when its model does; ecso backends do not."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """``["langchain_ecso"]``: ``load(..., valid_namespaces=["langchain_ecso"])`` revives it."""
        return ["langchain_ecso"]

    @property
    def lc_attributes(self) -> dict[str, Any]:
        """The configuration as plain JSON: only what differs from the defaults."""
        return {"config": self.config.model_dump(mode="json", exclude_defaults=True)}

    # ---- LangChain entry points ---------------------------------------------------------------

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        """Stream the guarded answer (after the verdict); the steps stay child runs of this run."""
        config, parent = _with_run_id(config)
        yield from super().stream(input, config, stop=stop, **{PARENT_KWARG: parent}, **kwargs)

    async def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:  # fmt: skip
        """Async :meth:`stream`."""
        config, parent = _with_run_id(config)
        async for chunk in super().astream(input, config, stop=stop, **{PARENT_KWARG: parent}, **kwargs):
            yield chunk

    def _should_stream(self, *, async_api: bool, run_manager: Any = None, **kwargs: Any) -> bool:
        # LangChain may route an invoke to _stream (event streams attached) without handing it the run
        # manager; keep it for _stream, which runs next in this context.
        PENDING_RUN.set(run_manager)
        return super()._should_stream(async_api=async_api, run_manager=run_manager, **kwargs)

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(PARENT_KWARG, None)  # private plumbing, not an invocation parameter to trace
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs.pop(PARENT_KWARG, None)
        PENDING_RUN.set(None)
        with _provider_errors():
            result = self._guard(from_run_manager(run_manager, self.step_callbacks, False)).run(
                self._request(messages, stop, kwargs)
            )
        return _chat_result(result, self._inner_name, self.config.in_band_audit)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        kwargs.pop(PARENT_KWARG, None)
        PENDING_RUN.set(None)
        with _provider_errors():
            result = await self._guard(from_run_manager(run_manager, self.step_callbacks, True)).arun(
                self._request(messages, stop, kwargs)
            )
        return _chat_result(result, self._inner_name, self.config.in_band_audit)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain itself reports each yielded chunk to the run's handlers (on_llm_new_token).
        guard = self._guard(self._step_callbacks(run_manager, kwargs, asynchronous=False))
        with _provider_errors():
            for event in guard.stream(self._request(messages, stop, kwargs)):
                chunk = self._chunk(event)
                if chunk is not None:
                    yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        guard = self._guard(self._step_callbacks(run_manager, kwargs, asynchronous=True))
        with _provider_errors():
            async for event in guard.astream(self._request(messages, stop, kwargs)):
                chunk = self._chunk(event)
                if chunk is not None:
                    yield chunk

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools: the guarded model (and the eyes-closed step) are called with them."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return super().bind(tools=formatted, tool_choice=_tool_choice(tool_choice), **kwargs)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured output the way the guarded model does it, through the guard.

        The model's own ``with_structured_output`` (``method="json_schema"``, ``"json_mode"``,
        ``strict``, ...) decides the call options and the parser; the call goes through the guard, whose
        check judges the structured answer.

        An ecso backend, or a model that hides its type (a configurable ``init_chat_model``), gets
        LangChain's default: tool calling through :meth:`bind_tools`.
        """
        inner = chat_model_of(self.model) if self.model is not None else None
        if inner is None:
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        structured = inner.with_structured_output(schema, include_raw=include_raw, **kwargs)
        swapped, found = _rebind(structured, inner, self)
        if not found:  # a shape we do not know: never call the model unguarded
            raise NotImplementedError(
                f"{type(inner).__name__}.with_structured_output built a chain ECSO cannot route through the guard"
            )
        return swapped

    # ---- internals ----------------------------------------------------------------------------

    def _guard(self, callbacks: Any) -> ECSO:
        # A guard per call: cheap, and the inner LangChain runs become children of this run.
        backend: VisionChatBackend
        if self.model is not None:
            backend = LangChainBackend(self.model, callbacks=callbacks)
        else:
            assert self.backend is not None  # _one_model: a backend when there is no model
            backend = self.backend
        judge = self.judge
        if judge is not None and not isinstance(judge, VisionChatBackend):
            judge = LangChainBackend(judge, callbacks=callbacks)
        return ECSO(backend, self.config, judge=judge, audit=self.audit)

    def _step_callbacks(self, run_manager: Any, kwargs: dict[str, Any], asynchronous: bool) -> Any:
        """The step runs' callbacks for a streamed call: from the run manager, wherever LangChain left it."""
        parent = kwargs.pop(PARENT_KWARG, None)
        pending = PENDING_RUN.get()
        PENDING_RUN.set(None)
        if run_manager is None and parent is not None:
            return from_stream_parent(parent, self, self.step_callbacks, asynchronous)
        return from_run_manager(run_manager or pending, self.step_callbacks, asynchronous)

    def _request(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatRequest:
        """The guarded request: every call kwarg goes on to the model that answers.

        ``response_format``, ``parallel_tool_calls``, ... reach the step-1 and eyes-closed answers; for an
        ecso backend ``max_tokens`` and ``temperature`` become its decoding parameters.
        """
        options = {k: v for k, v in kwargs.items() if k not in ("tools", "tool_choice")}
        params = GenerationParams()
        if self.model is None:
            max_tokens, temperature = options.pop("max_tokens", None), options.pop("temperature", None)
            params = GenerationParams(
                max_new_tokens=max_tokens or self.max_tokens or params.max_new_tokens,
                temperature=next((t for t in (temperature, self.temperature) if t is not None), 0.0),
            )
        request = to_ecso_request(
            messages,
            tools=kwargs.get("tools"),
            tool_choice=kwargs.get("tool_choice"),
            stop=stop or self.stop,
            params=params,
        )
        if request.images:
            self._check_image_support()
        return request.model_copy(update={"options": options}) if options else request

    def _check_image_support(self) -> None:
        """Refuse images to a model that declares it takes none; warn once when it declares nothing.

        A text-only model would answer without seeing the image and its check would miss what the
        image carries: a guard that looks like it works and does not.
        """
        if self.model is None:
            return
        inner = chat_model_of(self.model)
        profile = inner.profile if inner is not None else None
        if profile is not None and profile.get("image_inputs") is False:
            raise CapabilityError(f"{self._inner_name} declares no image inputs (its profile): ECSO needs a VLM")
        if (profile is None or "image_inputs" not in profile) and not self._warned_images:
            self._warned_images = True
            warnings.warn(
                f"{self._inner_name} declares no image support (no model profile): make sure it is a VLM, "
                "or ECSO's check will not see the image",
                UserWarning,
                stacklevel=4,
            )

    def _chunk(self, event: Any) -> ChatGenerationChunk | None:
        if isinstance(event, TextDelta):
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
        if isinstance(event, StreamEnd):
            return ChatGenerationChunk(message=final_chunk(event.result, self._inner_name, self.config.in_band_audit))
        return None  # step progress shows as child runs in the trace


@contextmanager
def _provider_errors() -> Iterator[None]:
    """Re-raise the wrapped model's own exception where the guard typed it as a BackendError.

    ``with_retry(retry_if_exception_type=(openai.APIConnectionError,))`` and ``with_fallbacks`` around
    ChatECSO must see the provider's exception; ecso's own failures stay ``ECSOError``s.
    """
    try:
        yield
    except BackendError as exc:
        cause = exc.__cause__
        if isinstance(cause, Exception) and not isinstance(cause, ECSOError):
            raise cause from None
        raise


def _rebind(
    runnable: Runnable[Any, Any], old: Runnable[Any, Any], new: BaseChatModel
) -> tuple[Runnable[Any, Any], bool]:
    """``runnable`` with every binding of ``old`` made a binding of ``new`` (same kwargs and config)."""
    if isinstance(runnable, RunnableBindingBase) and runnable.bound is old:
        bound = new.bind(**runnable.kwargs)
        return (bound.with_config(runnable.config) if runnable.config else bound), True
    if isinstance(runnable, RunnableSequence):
        steps = [_rebind(step, old, new) for step in runnable.steps]
        return RunnableSequence(*(step for step, _ in steps), name=runnable.name), any(f for _, f in steps)
    if isinstance(runnable, RunnableParallel):
        branches = {key: _rebind(step, old, new) for key, step in runnable.steps__.items()}
        return RunnableParallel({k: step for k, (step, _) in branches.items()}), any(f for _, f in branches.values())
    return runnable, False


def _chat_result(result: ECSOResult, name: str, audit: bool) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=ai_message(result, name, audit))])


def _with_run_id(config: RunnableConfig | None) -> tuple[RunnableConfig, StreamParent]:
    """``config`` with a run id fixed here, so that ``_stream`` can parent the step runs to it."""
    config = ensure_config(config)
    run_id = config.get("run_id") or uuid.uuid4()
    config = {**config, "run_id": run_id}
    return config, StreamParent(run_id=run_id, config=config)


def _tool_choice(choice: str | dict[str, Any] | bool | None) -> str | dict[str, Any] | None:
    """LangChain's tool_choice spellings in OpenAI form."""
    if choice is None or choice is False:
        return None
    if choice is True or choice == "any":
        return "required"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return {"type": "function", "function": {"name": choice}}
    return choice
