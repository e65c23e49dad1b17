"""The ECSO algorithm, written once, as a generator that does no I/O.

:func:`ecso_flow` yields the model calls it needs, a list at a time (calls in one list are
independent and may run together), is sent one :class:`Outcome` per call, and returns the
:class:`~ecso_core.result.ECSOResult`. The drivers in :mod:`ecso_core.guard` pump it for sync,
async, streaming and batched use, so every mode runs exactly this code. Tests can step it by hand.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Literal

from .config import ECSOConfig
from .errors import CheckFailedError, MessageError
from .judging import CheckSubject, JudgeProfile, get_judge_profile
from .neutralize import neutralize
from .prompts import PromptSet, get_prompt_set, sanitize_caption
from .result import Decision, ECSOResult, StepName, StepTrace
from .types import ChatReply, ChatRequest, ImagePart, Message, TextPart, TokenUsage, YesNoScore
from .verdict import Verdict, combine_verdicts, verdict_from_score, worst_verdict

__all__ = [
    "ModelCall",
    "Outcome",
    "FlowContext",
    "after_answer",
    "answer_windows",
    "begin",
    "check_answer",
    "check_flow",
    "distinct_images",
    "ecso_flow",
    "judge_view",
    "last_user_index",
    "neutralize_request",
    "window_spans",
]


@dataclass(frozen=True)
class ModelCall:
    """One model call the flow needs."""

    step: StepName
    request: ChatRequest
    target: Literal["model", "judge"] = "model"
    """``"judge"`` for the self-check (a separate judge backend when one is configured)."""
    score: bool = False
    """Ask for yes/no token probabilities instead of generated text."""


@dataclass(frozen=True)
class Outcome:
    """What a driver sends back for one :class:`ModelCall`: a value or the error it raised."""

    value: ChatReply | YesNoScore | None = None
    """The reply or score; None without an error: the judge cannot score this request."""
    error: BaseException | None = None
    latency_s: float = 0.0

    def trace(self, call: ModelCall) -> StepTrace:
        """The step record of ``call`` with this outcome."""
        value = self.value
        if isinstance(value, YesNoScore):
            output: str | None = f"P(yes)={value.p_yes:.6f} P(no)={value.p_no:.6f}"
        elif isinstance(value, ChatReply):
            output = value.as_check_text()
        else:
            output = None if self.error is not None else "no token probabilities"
        return StepTrace(
            name=call.step,
            messages=call.request.messages,
            output=output,
            latency_s=self.latency_s,
            usage=value.usage if value is not None else TokenUsage(),
            error=None if self.error is None else f"{type(self.error).__name__}: {self.error}",
        )


Flow = Generator[list[ModelCall], list[Outcome], ECSOResult]


def last_user_index(messages: Sequence[Message]) -> int:
    """Index of the last user message (its text is the query).

    Raises:
        MessageError: the conversation has no user message.

    """
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            return index
    raise MessageError("the conversation has no user message to take the query from")


def distinct_images(request: ChatRequest) -> tuple[ImagePart, ...]:
    """The conversation's images, first occurrence of each (by digest, else by identity)."""
    seen: set[object] = set()
    unique: list[ImagePart] = []
    for image in request.images:
        key = _image_key(image)
        if key not in seen:
            seen.add(key)
            unique.append(image)
    return tuple(unique)


def window_spans(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, end)`` of overlapping windows of at most ``size`` that together cover ``range(length)``.

    Up to ``size`` characters are one window (the paper's prompt, exactly). Longer texts get the
    fewest windows that cover them with ``overlap`` characters shared by neighbours, all of one width
    (a batch pads to its longest row, so equal widths waste nothing): 2,000 characters are two windows
    of 1,100, not 1,927 + 273.
    """
    if length <= size:
        return [(0, length)]
    count = -(-(length - overlap) // (size - overlap))  # ceil
    width = -(-(length + (count - 1) * overlap) // count)  # <= size, by the choice of count
    starts = [i * (width - overlap) for i in range(count - 1)] + [length - width]
    return [(start, start + width) for start in starts]


def answer_windows(text: str, size: int, overlap: int, start: int = 0) -> list[str]:
    """The windows of ``text`` (see :func:`window_spans`) that the check judges, those ending past ``start``.

    By default all of them. Windows of whitespace only carry nothing to judge and are left out (one
    window always remains).
    """
    spans = [(a, b) for a, b in window_spans(len(text), size, overlap) if b > start] or [(0, len(text))]
    windows = [text[a:b] for a, b in spans]
    return [w for w in windows if not w.isspace()] or windows[:1]


def neutralize_request(request: ChatRequest) -> ChatRequest:
    """``request`` with control tokens removed from every text part (see :mod:`ecso_core.neutralize`)."""
    messages = []
    for message in request.messages:
        parts = tuple(
            TextPart(text=neutralize(part.text)) if isinstance(part, TextPart) else part for part in message.content
        )
        changed = any(new is not old for new, old in zip(parts, message.content, strict=True))
        messages.append(message.model_copy(update={"content": parts}) if changed else message)
    if all(new is old for new, old in zip(messages, request.messages, strict=True)):
        return request
    return request.model_copy(update={"messages": tuple(messages)})


def judge_view(request: ChatRequest, profile: JudgeProfile | None = None) -> ChatRequest:
    """What the judge is asked about ``request``: its images and text, never its tools or call options.

    The check is a question with the conversation's images (as many as one of ``profile``'s requests
    carries); a judge that cannot take the caller's tools or ``response_format`` can still judge (the
    guard checks the judge's capabilities on this).
    """
    update: dict[str, object] = {"tools": (), "tool_choice": None, "options": {}}
    limit = None if profile is None else profile.images_per_request
    if limit is not None and len(request.images) > limit:
        kept = set(map(id, request.images[:limit]))

        def shown(message: Message) -> Message:
            parts = tuple(p for p in message.content if not isinstance(p, ImagePart) or id(p) in kept)
            return message.model_copy(update={"content": parts})

        update["messages"] = tuple(shown(m) for m in request.messages)
    return request.model_copy(update=update)


@dataclass
class FlowContext:
    """One request on its way through the flow: what every step after the first answer needs."""

    request: ChatRequest
    """The request with its text neutralised (images prepared by the guard)."""
    config: ECSOConfig
    prompts: PromptSet
    fence: str
    """A random marker drawn for this request: untrusted text cannot forge it."""
    final_user: int
    """Index of the last user message, whose text is the query."""
    query: str
    images: tuple[ImagePart, ...]
    """The conversation's distinct images."""
    can_score: bool
    steps: list[StepTrace]
    """The trace, appended to by every step."""
    profile: JudgeProfile
    """How the check asks the judge and reads it (``config.judge_profile``)."""
    image_verdict: Verdict | None = None
    """An image-only judge's verdict, reached once per request (later checks of the answer reuse it)."""

    @property
    def answer_request(self) -> ChatRequest:
        """Step 1: the normal answer, with images (the config's answer parameters, if any)."""
        return _with_params(self.request, self.config.answer_params)

    @property
    def checked(self) -> bool:
        """Whether the answer is self-checked (it has images, or text-only checks are on)."""
        return bool(self.images) or self.config.check_text_only


def begin(request: ChatRequest, config: ECSOConfig, *, can_score: bool = False) -> FlowContext:
    """Set up the flow for ``request`` (images already prepared): neutralise its text, find the query.

    Raises:
        MessageError: no user message in the conversation.

    """
    request = neutralize_request(request)
    final_user = last_user_index(request.messages)
    return FlowContext(
        request=request,
        config=config,
        prompts=get_prompt_set(config.prompt_set, config.prompt_overrides),
        fence=f"=={secrets.token_hex(8)}==",
        final_user=final_user,
        query=request.messages[final_user].text,
        images=distinct_images(request),
        can_score=can_score,
        steps=[],
        profile=get_judge_profile(config.judge_profile),
    )


def ecso_flow(request: ChatRequest, config: ECSOConfig, *, can_score: bool = False) -> Flow:
    """Run ECSO on ``request`` (images already prepared), yielding model calls.

    Args:
        request: the user's request; its images should carry digests (see ``images.prepare_request``).
        config: the guard's configuration.
        can_score: the judge backend offers ``score_yes_no`` (used when ``config.use_scores``).

    Returns:
        The :class:`ECSOResult` (as the generator's return value).

    Raises:
        MessageError: no user message in the conversation.
        CheckFailedError: the check failed and ``config.fail_mode == "raise"``.
        Exception: whatever the answer, caption or eyes-closed call raised.

    """
    context = begin(request, config, can_score=can_score)
    # Step 1: the normal answer, with images.
    answer = yield from _one(ModelCall("answer", context.answer_request), context.steps)
    assert isinstance(answer, ChatReply)
    return (yield from after_answer(context, answer))


def check_flow(
    request: ChatRequest, answer: str, config: ECSOConfig, *, can_score: bool = False
) -> Generator[list[ModelCall], list[Outcome], Verdict]:
    """Step 2 alone for an answer given from outside (evaluation with a dedicated judge): its verdict.

    Raises:
        MessageError: no user message in the conversation.

    """
    context = begin(request, config, can_score=can_score)
    return (yield from _check(answer, context))


def check_answer(
    context: FlowContext, answer: str, start: int = 0
) -> Generator[list[ModelCall], list[Outcome], Verdict]:
    """Step 2 alone: judge the windows of ``answer`` that reach past character ``start`` (all by default).

    Progressive streaming judges the answer so far at window boundaries, each time the windows that
    hold text not yet released.
    """
    return _check(answer, context, start)


def after_answer(context: FlowContext, answer: ChatReply, verdict: Verdict | None = None) -> Flow:
    """Steps 2 to 5 after the step-1 ``answer``: check it, then release it or rewrite it eyes closed.

    A ``verdict`` already reached (progressive streaming flagged a window) skips the check.
    """
    config, prompts, request = context.config, context.prompts, context.request
    steps, images, fence = context.steps, context.images, context.fence
    initial = answer.as_check_text()

    def finish(decision: Decision, final: ChatReply, **extra: object) -> ECSOResult:
        return ECSOResult(
            answer=final.text,
            decision=decision,
            initial_answer=initial,
            tool_calls=final.tool_calls,
            steps=tuple(steps),
            prompt_set=prompts.name,
            finish_reason=final.finish_reason,
            **{"released": final, **extra},  # type: ignore[arg-type]
        )

    if not context.checked:
        return finish("no_image", answer)

    # Step 2: harm-aware self-check of every window of the answer, with the same images (unless the
    # gate is configured off: then every request with images takes the eyes-closed path).
    if verdict is None and not config.gate and images:
        verdict = Verdict(unsafe=True, method="no_gate", profile=context.profile.name)
    if verdict is None:
        verdict = yield from _check(initial, context)

    # Step 3: a safe verdict releases the step-1 answer unchanged.
    if verdict.unsafe is False:
        return finish("safe", answer, verdict=verdict)

    decision: Decision = "unsafe"
    if verdict.unsafe is None:
        if config.fail_mode == "raise":
            # The judge's own reply or an upstream error text could quote the answer: name the kind only.
            reason = verdict.error if verdict.method != "failed" else str(verdict.error).partition(":")[0]
            raise CheckFailedError(f"the safety check gave no verdict ({verdict.method}): {reason}")
        if config.fail_mode == "refuse":
            refusal = ChatReply(text=config.refusal_message, finish_reason="stop")
            return finish("fail_closed", refusal, verdict=verdict, released=None)
        decision = "fail_closed"

    # Step 4: query-aware image-to-text, one caption per distinct image.
    captions: dict[int, str] = {}
    if images:
        caption_text = prompts.render("caption", query=neutralize(context.query, headers=True), fence=fence)
        caption_calls = [
            ModelCall(
                "caption",
                ChatRequest(
                    messages=(Message(role="user", content=(image, TextPart(text=caption_text))),),
                    params=config.caption_params,
                    cancel=request.cancel,
                ),
            )
            for image in images
        ]
        outcomes = yield caption_calls
        for n, (call, out) in enumerate(zip(caption_calls, outcomes, strict=True), start=1):
            steps.append(out.trace(call))
            reply = _unwrap(out)
            assert isinstance(reply, ChatReply)
            captions[n] = sanitize_caption(reply.text, config.max_caption_chars)

    # Step 5: eyes closed: the conversation with no image at all.
    closed_messages = _eyes_closed_messages(request, images, captions, context.final_user, prompts, fence)
    closed_request = ChatRequest(
        messages=closed_messages,
        params=config.eyes_closed_params or request.params,
        tools=request.tools,
        tool_choice=request.tool_choice,
        options=request.options,
        cancel=request.cancel,
    )
    final = yield from _one(ModelCall("eyes_closed", closed_request), steps)
    assert isinstance(final, ChatReply)
    return finish(decision, final, verdict=verdict, captions=tuple(captions.values()))


def _check(answer: str, context: FlowContext, start: int = 0) -> Generator[list[ModelCall], list[Outcome], Verdict]:
    """Judge every window of ``answer`` reaching past ``start`` in one round; safe only if all are.

    The judge profile turns each window into its requests (one, or one per image, or per image and
    policy). Requests the judge could not score (or scored with too little unsafe/safe mass) are asked
    again for text in a second round, and so are unsafe scores of a profile that names categories.
    """
    profile = context.profile
    if not profile.judges_answer and context.image_verdict is not None:
        return context.image_verdict  # an image classifier's verdict does not change as the answer grows
    config, steps = context.config, context.steps
    if profile.judges_answer:
        windows = answer_windows(answer, config.check_response_chars, config.check_window_overlap, start)
    else:
        windows = [""]
    if not profile.judges_answer and not context.images:
        verdict = Verdict(
            unsafe=None, method="failed", profile=profile.name, error=f"{profile.name} judges images; there are none"
        )
        context.image_verdict = verdict
        return verdict
    data_query = neutralize(context.query, headers=True)
    groups = [
        profile.calls(
            CheckSubject(
                query=data_query,
                response=neutralize(window, headers=True),
                images=context.images,
                prompts=context.prompts,
                fence=context.fence,
                params=config.check_params,
                cancel=context.request.cancel,
            )
        )
        for window in windows
    ]
    judge_calls = [call for group in groups for call in group]
    scored = context.can_score and config.use_scores and profile.scorable
    calls = [ModelCall("check", c.request, target="judge", score=scored) for c in judge_calls]
    outcomes = yield calls
    verdicts: list[Verdict] = []
    ask_text: list[int] = []
    for index, (call, outcome) in enumerate(zip(calls, outcomes, strict=True)):
        steps.append(outcome.trace(call))
        verdict = _verdict(outcome, config, profile)
        unscored = outcome.error is None and outcome.value is None
        low_mass = verdict.method == "probability" and verdict.unsafe is None and config.score_fallback == "text"
        name_them = verdict.method == "probability" and verdict.unsafe is True and profile.reports_categories
        if unscored or low_mass or name_them:
            ask_text.append(index)
        verdicts.append(verdict)
    if ask_text:
        text_calls = [ModelCall("check", calls[i].request, target="judge") for i in ask_text]
        outcomes = yield text_calls
        for index, call, outcome in zip(ask_text, text_calls, outcomes, strict=True):
            steps.append(outcome.trace(call))
            read = _verdict(outcome, config, profile)
            if verdicts[index].unsafe is True:  # scored unsafe: the text only names the categories
                named = read.categories if read.unsafe is True else ()
                verdicts[index] = verdicts[index].model_copy(update={"categories": named})
            else:
                verdicts[index] = read.model_copy(update={"fallback": verdicts[index].error})
    for index, judge_call in enumerate(judge_calls):
        if verdicts[index].unsafe is True and judge_call.categories:
            verdicts[index] = verdicts[index].model_copy(update={"categories": judge_call.categories})
    per_window: list[Verdict] = []
    position = 0
    for group in groups:
        per_window.append(worst_verdict(verdicts[position : position + len(group)]))
        position += len(group)
    verdict = combine_verdicts(per_window)
    if not profile.judges_answer:
        context.image_verdict = verdict
    return verdict


def _one(call: ModelCall, steps: list[StepTrace]) -> Generator[list[ModelCall], list[Outcome], ChatReply | YesNoScore]:
    (outcome,) = yield [call]
    steps.append(outcome.trace(call))
    return _unwrap(outcome)


def _unwrap(outcome: Outcome) -> ChatReply | YesNoScore:
    if outcome.error is not None:
        raise outcome.error
    assert outcome.value is not None
    return outcome.value


def _with_params(request: ChatRequest, params: object) -> ChatRequest:
    return request if params is None else request.model_copy(update={"params": params})


def _verdict(outcome: Outcome, config: ECSOConfig, profile: JudgeProfile) -> Verdict:
    if outcome.error is not None:
        error = f"{type(outcome.error).__name__}: {outcome.error}"
        return Verdict(unsafe=None, method="failed", profile=profile.name, error=error)
    if outcome.value is None:  # the judge said it cannot score this request
        error = "the judge gave no token probabilities"
        return Verdict(unsafe=None, method="failed", profile=profile.name, error=error)
    if isinstance(outcome.value, YesNoScore):
        floor = config.min_score_mass if profile.min_score_mass is None else profile.min_score_mass
        verdict = verdict_from_score(outcome.value, config.verdict_threshold, floor)
        return verdict.model_copy(update={"profile": profile.name})
    return profile.read(outcome.value)


def _eyes_closed_messages(
    request: ChatRequest,
    images: tuple[ImagePart, ...],
    captions: dict[int, str],
    final_user: int,
    prompts: PromptSet,
    fence: str,
) -> tuple[Message, ...]:
    """Replace every image by its caption and wrap the final user turn in the hints prompt."""
    number = {_image_key(image): n for n, image in enumerate(images, start=1)}
    messages: list[Message] = []
    for index, message in enumerate(request.messages):
        if index == final_user:
            messages.append(_hints_turn(message, number, captions, prompts, fence))
            continue
        parts = tuple(
            TextPart(
                text=prompts.render(
                    "image_in_history",
                    n=str(number[_image_key(part)]),
                    caption=captions.get(number[_image_key(part)], ""),
                    fence=fence,
                )
            )
            if isinstance(part, ImagePart)
            else part
            for part in message.content
        )
        messages.append(message.model_copy(update={"content": parts}))
    return tuple(messages)


def _hints_turn(
    message: Message, number: dict[object, int], captions: dict[int, str], prompts: PromptSet, fence: str
) -> Message:
    own = [number[_image_key(image)] for image in message.images]
    chosen = list(dict.fromkeys(own)) or sorted(captions)
    if not captions:  # text-only request judged unsafe (check_text_only)
        text = prompts.render("harmless", query=message.text, fence=fence)
    else:
        if len(chosen) == 1:
            hint = captions[chosen[0]]
        else:
            hint = "\n".join(
                prompts.render("numbered_caption", n=str(n), caption=captions[n], fence=fence) for n in chosen
            )
        text = prompts.render("eyes_closed", caption=hint, query=message.text, fence=fence)
    return message.model_copy(update={"content": (TextPart(text=text),)})


def _image_key(image: ImagePart) -> object:
    return image.digest or id(image.image)
