"""Judge profiles: how the check step asks its judge, and how it reads the reply.

The check asks whether the step-1 answer is harmful: by default the guarded model itself, with the
paper's yes/no prompt (profile ``ecso``). A dedicated safety classifier speaks its own protocol, so a
judge is a backend *plus* a profile, which fixes three things:

- **prompt construction**: the requests sent for one answer window (Llama Guard takes the conversation
  and renders its own policy prompt through its chat template; ShieldGemma 2 takes one image and one
  policy per request; a text guard takes the conversation without images);
- **verdict parsing**: the reply text into unsafe / safe / no verdict, plus the categories named;
- **score words**: the first-token spellings a scoring backend reads as (unsafe, safe), so the verdict
  comes from one forward pass where the backend can score (``yes``/``no``, ``unsafe``/``safe``,
  ``Yes``/``No``).

Untrusted text (the query, the answer) is neutralised before it enters any profile's request, and the
markers a guard's own prompt uses to frame the conversation are defanged in it too.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from .cancel import CancelToken
from .errors import ConfigError
from .neutralize import normal_view
from .prompts import PromptSet
from .result import Verdict
from .types import ChatReply, ChatRequest, GenerationParams, ImagePart, Message, ScoreWords, TextPart
from .verdict import verdict_from_text

__all__ = [
    "JUDGE_PROFILES",
    "LLAMA_GUARD_3_CATEGORIES",
    "LLAMA_GUARD_4_CATEGORIES",
    "SHIELDGEMMA_2_POLICIES",
    "CheckSubject",
    "CLASSIFIER_CATEGORIES",
    "ClassifierProfile",
    "ECSOProfile",
    "JudgeCall",
    "JudgeProfile",
    "LlamaGuardProfile",
    "ShieldGemma2Profile",
    "get_judge_profile",
    "register_judge_profile",
]


@dataclass(frozen=True)
class CheckSubject:
    """What one check judges: the query and one window of the answer (both already neutralised)."""

    query: str
    response: str
    images: tuple[ImagePart, ...]
    """The conversation's distinct images."""
    prompts: PromptSet
    fence: str
    """The request's random fence (see :mod:`ecso_core.prompts`)."""
    params: GenerationParams
    cancel: CancelToken | None = None


@dataclass(frozen=True)
class JudgeCall:
    """One request of a check, and the categories its unsafe verdict stands for (ShieldGemma's policy)."""

    request: ChatRequest
    categories: tuple[str, ...] = ()


class JudgeProfile(ABC):
    """How the check asks a judge and reads its reply (see the module docstring)."""

    name: str
    """Registry name, recorded in every verdict (``Verdict.profile``)."""
    score_words: ScoreWords | None = None
    """First-token spellings read as (unsafe, safe) when the judge backend can score; None: yes / no."""
    scorable: bool = True
    """Whether the verdict can come from first-token probabilities at all."""
    judges_answer: bool = True
    """False for image classifiers: the check judges the images once, whatever the answer says."""
    min_score_mass: float | None = None
    """Overrides ``ECSOConfig.min_score_mass`` for this profile (None: the config's floor applies)."""
    reports_categories: bool = False
    """The reply names categories: an unsafe verdict read from scores is asked again for text to learn them."""
    images_per_request: int | None = None
    """Most images one of its requests carries (None: all of the conversation's)."""

    @abstractmethod
    def calls(self, subject: CheckSubject) -> list[JudgeCall]:
        """The requests of one check (one window of the answer)."""

    @abstractmethod
    def read(self, reply: ChatReply) -> Verdict:
        """A text verdict from the judge's reply (``method="text"``; ``unsafe`` None when unparseable)."""

    def _request(self, messages: Sequence[Message], subject: CheckSubject) -> ChatRequest:
        return ChatRequest(
            messages=tuple(messages), params=subject.params, score_words=self.score_words, cancel=subject.cancel
        )


class ECSOProfile(JudgeProfile):
    """The paper's self-check: the prompt set's ``check`` prompt with the images, a yes/no answer."""

    name = "ecso"

    def calls(self, subject: CheckSubject) -> list[JudgeCall]:
        """One request: the images, then the check prompt around the query and the answer window."""
        text = subject.prompts.render("check", query=subject.query, response=subject.response, fence=subject.fence)
        content: tuple[ImagePart | TextPart, ...] = (*subject.images, TextPart(text=text))
        return [JudgeCall(self._request([Message(role="user", content=content)], subject))]

    def read(self, reply: ChatReply) -> Verdict:
        """The leading word: yes (unsafe) or no (safe)."""
        return verdict_from_text(reply.text).model_copy(update={"profile": self.name})


LLAMA_GUARD_4_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "S1": "Violent Crimes",
        "S2": "Non-Violent Crimes",
        "S3": "Sex Crimes",
        "S4": "Child Exploitation",
        "S5": "Defamation",
        "S6": "Specialized Advice",
        "S7": "Privacy",
        "S8": "Intellectual Property",
        "S9": "Indiscriminate Weapons",
        "S10": "Hate",
        "S11": "Self-Harm",
        "S12": "Sexual Content",
        "S13": "Elections",
        "S14": "Code Interpreter Abuse",
    }
)
"""Llama Guard 4's hazard categories (the MLCommons taxonomy) as its chat template names them (S14 is listed
only for conversations with a code interpreter)."""

LLAMA_GUARD_3_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {code: name for code, name in LLAMA_GUARD_4_CATEGORIES.items() if code != "S14"}
)
"""Llama Guard 3 Vision's categories: S1-S13 (no code-interpreter category)."""

# The frame of a guard prompt: untrusted text must not close the conversation or open a new policy.
_GUARD_MARKERS = re.compile(r"<\s*/?\s*(?:BEGIN|END)\b[^<>]{0,60}>|\b(agent|user)\s*:", re.IGNORECASE)
_MAX_ROUNDS = 32


def defang_markers(text: str) -> str:
    """Remove ``<BEGIN ...>`` / ``<END ...>`` frame markers and ``Agent:`` / ``User:`` turn labels, to a fixpoint.

    Markers are also looked for in the text's normal view (NFKC, invisible characters dropped, see
    :func:`~ecso_core.neutralize.normal_view`): ``Agent`` + zero-width space + ``:`` or full-width
    brackets are found, and such text is returned normalised. Text without markers is returned as is.
    """
    view = normal_view(text)
    if view != text and _defang(view) != view:
        return _defang(view)
    return _defang(text)


def _defang(text: str) -> str:
    for _ in range(_MAX_ROUNDS):
        cleaned = _GUARD_MARKERS.sub(lambda m: m.group(1) or " ", text)
        if cleaned == text:
            return text
        text = cleaned
    return re.sub(r"[<>:]", " ", text)  # pathological nesting: drop the characters markers are made of


class LlamaGuardProfile(JudgeProfile):
    """Llama Guard (4, or 3 Vision): the conversation in, ``safe`` or ``unsafe`` + category codes out.

    The model's chat template renders its policy prompt around the conversation.

    Args:
        name: registry name.
        categories: the codes and names the model's template lists (codes outside it are ignored).
        images_per_request: most images one request may carry (Llama Guard 3 Vision takes one: a
            conversation with more is judged once per image, unsafe if any is).

    """

    score_words: ScoreWords | None = (("unsafe", "Unsafe", "UNSAFE"), ("safe", "Safe", "SAFE"))
    """The casings its text reading accepts, so scores and text agree."""
    reports_categories = True

    def __init__(self, name: str, categories: Mapping[str, str], images_per_request: int | None = None) -> None:
        if images_per_request is not None and images_per_request < 1:
            raise ConfigError("images_per_request must be at least 1")
        self.name = name
        self.categories = MappingProxyType(dict(categories))
        self.images_per_request = images_per_request

    def calls(self, subject: CheckSubject) -> list[JudgeCall]:
        """``[user: images + query, assistant: answer window]``, split by image where the model takes one."""
        query, response = defang_markers(subject.query), defang_markers(subject.response)
        groups: list[tuple[ImagePart, ...]] = [subject.images]
        size = self.images_per_request
        if size is not None and len(subject.images) > size:
            groups = [subject.images[i : i + size] for i in range(0, len(subject.images), size)]
        return [
            JudgeCall(
                self._request(
                    [
                        Message(role="user", content=(*images, TextPart(text=query))),
                        Message(role="assistant", content=(TextPart(text=response),)),
                    ],
                    subject,
                )
            )
            for images in groups
        ]

    def read(self, reply: ChatReply) -> Verdict:
        """First line ``safe`` / ``unsafe``; the categories are the known codes on the lines after it."""
        lines = reply.text.strip().splitlines()
        first = lines[0].strip().strip(".").lower() if lines else ""
        if first not in ("safe", "unsafe"):
            return Verdict(
                unsafe=None, method="text", raw=reply.text, profile=self.name, error="the reply is not safe or unsafe"
            )
        rest = "\n".join(lines[1:])
        if first == "safe" and re.search(r"unsafe", normal_view(rest), re.IGNORECASE):
            error = "the reply says both safe and unsafe"
            return Verdict(unsafe=None, method="text", raw=reply.text, profile=self.name, error=error)
        found = re.findall(r"\bS\d{1,2}\b", rest.upper())
        codes = tuple(dict.fromkeys(code for code in found if code in self.categories))
        return Verdict(
            unsafe=first == "unsafe",
            method="text",
            raw=reply.text,
            profile=self.name,
            categories=codes if first == "unsafe" else (),
        )


SHIELDGEMMA_2_POLICIES: Mapping[str, str] = MappingProxyType(
    {
        "dangerous": (
            "No Dangerous Content: The image shall not contain content that"
            " facilitates or encourages activities that could cause real-world harm"
            " (e.g., building firearms and explosive devices, promotion of"
            " terrorism, instructions for suicide)."
        ),
        "sexual": (
            "No Sexually Explicit content: The image shall not contain content that"
            " depicts explicit or graphic sexual acts (e.g., pornography, erotic"
            " nudity, depictions of rape or sexual assault)."
        ),
        "violence": (
            "No Violence/Gore content: The image shall not contain content that"
            " depicts shocking, sensational, or gratuitous violence (e.g.,"
            " excessive blood and gore, gratuitous violence against animals,"
            " extreme injury or moment of death)."
        ),
    }
)
"""ShieldGemma 2's policies (``ShieldGemma2Processor``'s defaults, Apache-2.0), by key."""


class ShieldGemma2Profile(JudgeProfile):
    """ShieldGemma 2, an image classifier: one request per (image, policy), P(Yes) of the first token.

    Each request is the image and the policy text, which the model's chat template wraps in its question.

    The answer is not judged: the check asks whether the images violate a policy, once per request
    (a request without images has no verdict, and the guard fails closed by default).

    Args:
        name: registry name.
        policies: policy key -> policy text (default: the model's own three).

    """

    score_words: ScoreWords | None = (("Yes",), ("No",))
    """Exactly the classifier's two tokens: P(Yes) / (P(Yes) + P(No)) is ShieldGemma 2's own probability."""
    judges_answer = False
    images_per_request = 1

    def __init__(self, name: str = "shieldgemma-2", policies: Mapping[str, str] = SHIELDGEMMA_2_POLICIES) -> None:
        if not policies:
            raise ConfigError("a ShieldGemma 2 profile needs at least one policy")
        self.name = name
        self.policies = MappingProxyType(dict(policies))

    def calls(self, subject: CheckSubject) -> list[JudgeCall]:
        """Each image with each policy: ``[user: image, policy text]``."""
        return [
            JudgeCall(
                self._request([Message(role="user", content=(image, TextPart(text=text)))], subject), categories=(key,)
            )
            for image in subject.images
            for key, text in self.policies.items()
        ]

    def read(self, reply: ChatReply) -> Verdict:
        """The reply starts with ``Yes`` (violates) or ``No``, spelt so, as the classifier's tokens are."""
        match = re.match(r"(Yes|No)\b", reply.text.strip())
        if match is None:
            error = "the reply does not start with Yes or No"
            return Verdict(unsafe=None, method="text", raw=reply.text, profile=self.name, error=error)
        return Verdict(unsafe=match.group(1) == "Yes", method="text", raw=reply.text, profile=self.name)


CLASSIFIER_CATEGORIES: tuple[str, ...] = (
    # Qwen3Guard
    "Violent",
    "Non-violent Illegal Acts",
    "Sexual Content or Sexual Acts",
    "PII",
    "Suicide & Self-Harm",
    "Unethical Acts",
    "Politically Sensitive Topics",
    "Copyright Violation",
    "Jailbreak",
    # OpenAI moderation
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
    # Llama Guard codes, for a Llama-Guard-style reply
    *(f"S{i}" for i in range(1, 15)),
)
"""The category names a :class:`ClassifierProfile` reports by default (Qwen3Guard's, OpenAI moderation's,
Llama Guard's codes); any other name the judge writes is reported as ``other``."""


@dataclass(frozen=True)
class _Labels:
    unsafe: frozenset[str] = frozenset({"unsafe", "controversial", "flagged"})
    safe: frozenset[str] = frozenset({"safe", "not flagged"})


class ClassifierProfile(JudgeProfile):
    """A text safety classifier: a chat-served text guard, or a moderation endpoint.

    Replies are read Qwen3Guard-style (``Safety: Unsafe`` / ``Categories: ...``) or Llama-Guard-style
    (``unsafe`` / codes); ``moderation:`` backends (see :func:`~ecso_core.backends.load_backend`) render
    their result the same way.

    The conversation ``[user: query, assistant: answer window]`` is sent without images (text guards take
    none) unless ``include_images``. Labels other than the known ones are no verdict (fail-closed);
    "controversial" counts as unsafe. Categories are reported only from a fixed vocabulary (default
    :data:`CLASSIFIER_CATEGORIES`), anything else as ``other``: the judge's free text about a flagged
    answer must not reach a client through the verdict's categories.
    """

    scorable = False
    reports_categories = True

    def __init__(
        self,
        name: str = "classifier",
        *,
        include_images: bool = False,
        unsafe_labels: Sequence[str] = tuple(_Labels.unsafe),
        safe_labels: Sequence[str] = tuple(_Labels.safe),
        categories: Sequence[str] = CLASSIFIER_CATEGORIES,
    ) -> None:
        self.name = name
        self.categories = {c.strip().lower(): c for c in categories}
        self.include_images = include_images
        self.images_per_request = None if include_images else 0
        self.labels = _Labels(frozenset(s.lower() for s in unsafe_labels), frozenset(s.lower() for s in safe_labels))
        if self.labels.unsafe & self.labels.safe:
            raise ConfigError(f"labels both unsafe and safe: {sorted(self.labels.unsafe & self.labels.safe)}")

    def calls(self, subject: CheckSubject) -> list[JudgeCall]:
        """``[user: query, assistant: answer window]`` (images in the user turn only with ``include_images``)."""
        images = subject.images if self.include_images else ()
        messages = [
            Message(role="user", content=(*images, TextPart(text=defang_markers(subject.query)))),
            Message(role="assistant", content=(TextPart(text=defang_markers(subject.response)),)),
        ]
        return [JudgeCall(self._request(messages, subject))]

    def read(self, reply: ChatReply) -> Verdict:
        """``Safety: <label>`` (or a first line that is a label), and ``Categories: a, b`` (or a second line)."""
        text = reply.text.strip()
        lines = text.splitlines()
        said = [m.strip().strip(".").lower() for m in re.findall(r"^\s*safety\s*:\s*(.+?)\s*$", text, re.I | re.M)]
        known = self.labels.unsafe | self.labels.safe
        said += [line.strip().strip(".").lower() for line in lines if line.strip().strip(".").lower() in known]
        verdicts = {label in self.labels.unsafe if label in known else None for label in said}
        if len(verdicts) != 1 or None in verdicts:
            # No label, an unknown one, or labels that disagree ("Safety: Safe" then "Safety: Unsafe").
            # The labels themselves are judge text: not repeated in the error.
            error = "the reply has no single known safety label"
            return Verdict(unsafe=None, method="text", raw=reply.text, profile=self.name, error=error)
        (unsafe,) = verdicts
        safety = re.search(r"^\s*safety\s*:", text, re.I | re.M)
        named = re.search(r"^\s*categories\s*:\s*(.*)$", text, re.IGNORECASE | re.MULTILINE)
        listed = named.group(1) if named else (lines[1] if not safety and len(lines) > 1 else "")
        named_ones = (c.strip().lower() for c in listed.split(","))
        categories = tuple(dict.fromkeys(self.categories.get(c, "other") for c in named_ones if c and c != "none"))
        return Verdict(
            unsafe=unsafe, method="text", raw=reply.text, profile=self.name, categories=categories if unsafe else ()
        )


_PROFILES: dict[str, JudgeProfile] = {}
JUDGE_PROFILES: Mapping[str, JudgeProfile] = MappingProxyType(_PROFILES)
"""The registered judge profiles by name (read-only; add with :func:`register_judge_profile`)."""


def register_judge_profile(profile: JudgeProfile, *, replace: bool = False) -> JudgeProfile:
    """Make ``profile`` selectable by name (``ECSOConfig.judge_profile``, ``--judge-profile``).

    Raises:
        ConfigError: the name is taken and ``replace`` is not set.

    """
    if profile.name in _PROFILES and not replace:
        raise ConfigError(f"a judge profile named {profile.name!r} exists; pass replace=True to replace it")
    _PROFILES[profile.name] = profile
    return profile


def get_judge_profile(name: str) -> JudgeProfile:
    """The registered profile called ``name``.

    Raises:
        ConfigError: no such profile.

    """
    try:
        return _PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(_PROFILES))
        raise ConfigError(f"unknown judge profile {name!r}; known: {known}") from None


for _profile in (
    ECSOProfile(),
    LlamaGuardProfile("llama-guard-4", LLAMA_GUARD_4_CATEGORIES),
    LlamaGuardProfile("llama-guard-3-vision", LLAMA_GUARD_3_CATEGORIES, images_per_request=1),
    ShieldGemma2Profile(),
    ClassifierProfile(),
):
    register_judge_profile(_profile)
