"""TransformersBackend on tiny-random LLaVA and Gemma 3: loading, translation, batching, scoring.

tiny-random has random weights: these tests prove plumbing (prompts, images, batching, scores),
never safety.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from ecso_core import (
    ECSO,
    BackendUnavailableError,
    CapabilityError,
    ChatRequest,
    ConfigError,
    ECSOConfig,
    GenerationParams,
    ImagePart,
    Message,
    TextPart,
    ToolCall,
    load_backend,
)

pytest.importorskip("transformers")

from ecso_core.backends.tiny import build_tiny_model
from ecso_core.backends.transformers import TransformersBackend, to_template_messages

SMALL = ["tiny-random:llava-small", "tiny-random:gemma3-small"]


@pytest.fixture(scope="module", params=SMALL)
def backend(request: pytest.FixtureRequest) -> TransformersBackend:
    return load_backend(request.param)  # type: ignore[return-value]


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.effect_noise((width, height), 40 + seed).convert("RGB")


def image_request(text: str, picture: Image.Image, max_new_tokens: int = 8) -> ChatRequest:
    return ChatRequest(
        messages=(Message(role="user", content=(ImagePart(image=picture), TextPart(text=text))),),
        params=GenerationParams(max_new_tokens=max_new_tokens),
    )


def test_translation_is_pure_and_exact() -> None:
    picture = Image.new("RGB", (4, 4))
    request = ChatRequest(
        messages=(
            Message(role="system", content="Be brief."),
            Message(role="user", content=(ImagePart(image=picture), TextPart(text="What <image> is <my_tok>this?"))),
            Message(role="assistant", content="A square."),
            Message(role="user", content="Sure?"),
        )
    )
    messages, images = to_template_messages(request, {"<my_tok>"})
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What   is  this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A square."}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
    ]
    assert images == [picture]


def test_translation_refuses_tool_messages() -> None:
    call = ToolCall(id="1", name="f")
    with pytest.raises(CapabilityError):
        to_template_messages(ChatRequest(messages=(Message(role="assistant", tool_calls=(call,)),)))
    with pytest.raises(CapabilityError):
        to_template_messages(ChatRequest(messages=(Message(role="tool", content="x", tool_call_id="1"),)))


def test_rendered_prompt_uses_the_models_chat_template(backend: TransformersBackend) -> None:
    messages, _ = to_template_messages(image_request("Describe it.", noise(8, 8)))
    text = backend.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if "llava" in backend.name:
        assert text == "USER: <image>\nDescribe it. ASSISTANT:"
    else:
        assert text == "<bos><start_of_turn>user\n<start_of_image>Describe it.<end_of_turn>\n<start_of_turn>model\n"


def test_mixed_size_batch_equals_one_by_one(backend: TransformersBackend) -> None:
    requests = [
        image_request("hello", noise(20, 50, 1)),
        image_request("a longer question about the picture", noise(300, 40, 2)),
        image_request("third", noise(64, 64, 3)),
        ChatRequest(messages=(Message(role="user", content="text only"),), params=GenerationParams(max_new_tokens=8)),
    ]
    batched = backend.generate(requests)
    single = [backend.generate([r])[0] for r in requests]
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.usage for r in batched] == [r.usage for r in single]
    assert all(r.usage.completion_tokens <= 8 for r in batched)
    assert batched[0].usage.prompt_tokens < batched[1].usage.prompt_tokens


def test_generation_is_deterministic_and_respects_max_tokens(backend: TransformersBackend) -> None:
    request = image_request("What is this?", noise(30, 30), max_new_tokens=5)
    (first,) = backend.generate([request])
    (second,) = backend.generate([request])  # a separate call: nothing shared but the model
    assert first.text != ""
    assert (second.text, second.usage, second.finish_reason) == (first.text, first.usage, first.finish_reason)
    # Random weights do not pick the end token within a few steps: the bound is what stops generation.
    assert (first.usage.completion_tokens, first.finish_reason) == (5, "length")
    (short,) = backend.generate([image_request("What is this?", noise(30, 30), max_new_tokens=2)])
    assert (short.usage.completion_tokens, short.finish_reason) == (2, "length")


def test_score_yes_no_gives_probabilities(backend: TransformersBackend) -> None:
    requests = [image_request("Is it harmful? Answer yes or no:", noise(16, 16, s)) for s in range(3)]
    scores = backend.score_yes_no(requests)
    for score in scores:
        assert 0.0 <= score.p_yes <= 1.0
        assert 0.0 <= score.p_no <= 1.0
        assert score.p_yes + score.p_no <= 1.0
        assert score.p_yes > 0.0
        assert score.p_no > 0.0
        assert score.usage.prompt_tokens > 0
    for single, batched in zip([backend.score_yes_no([r])[0] for r in requests], scores, strict=True):
        assert single.p_yes == pytest.approx(batched.p_yes, rel=1e-5)
        assert single.p_no == pytest.approx(batched.p_no, rel=1e-5)
    yes_ids, no_ids = backend.score_token_ids()
    assert yes_ids
    assert no_ids
    assert not set(yes_ids) & set(no_ids)


def test_control_tokens_in_user_text_are_neutralised(backend: TransformersBackend) -> None:
    image_token = "<image>" if "llava" in backend.name else "<start_of_image>"
    plain = backend.generate([image_request("look here", noise(10, 10))])[0]
    injected = backend.generate([image_request(f"look {image_token}{image_token}here", noise(10, 10))])[0]
    # Without sanitising, the extra image tokens would not match the one image and the call would fail;
    # each removed token leaves a space (so that neighbours cannot join into a new token).
    assert injected.usage.prompt_tokens <= plain.usage.prompt_tokens + 2


@pytest.mark.parametrize("spec", ["tiny-random", "tiny-random:gemma3-small"])
def test_ecso_end_to_end_drops_the_image_for_the_eyes_closed_answer(spec: str) -> None:
    backend = load_backend(spec)
    config = ECSOConfig(
        verdict_threshold=0.0,  # force the unsafe path: every probability verdict is "unsafe"
        min_score_mass=0.0,  # random weights put little mass on yes/no: time the probability path anyway
        caption_params=GenerationParams(max_new_tokens=6),
        eyes_closed_params=GenerationParams(max_new_tokens=6),
    )
    request = image_request("How do I make this?", noise(500, 300), max_new_tokens=6)
    result = ECSO(backend, config).run(request)
    assert result.decision == "unsafe"
    assert [s.name for s in result.steps] == ["answer", "check", "caption", "eyes_closed"]
    assert result.verdict is not None
    assert result.verdict.method == "probability"
    answer, check, caption, closed = result.steps
    image_tokens = 576 if spec == "tiny-random" else 4
    assert answer.usage.prompt_tokens > image_tokens
    assert check.usage.prompt_tokens > image_tokens
    assert not [part for message in closed.messages for part in message.content if part.kind == "image"]
    # No image reached the model: the prompt is the hints text (the query, a caption of at most 6 random
    # tokens, which may re-tokenise longer) and the template, far below an image's own token count.
    assert closed.usage.prompt_tokens < answer.usage.prompt_tokens - image_tokens + 120
    if spec == "tiny-random":
        assert closed.usage.prompt_tokens < image_tokens
    assert len(result.captions) == 1
    safe = ECSO(backend, ECSOConfig(verdict_threshold=1.0, min_score_mass=0.0)).run(request)
    assert safe.decision == "safe"
    assert safe.answer == result.initial_answer


def test_tiny_random_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = build_tiny_model("llava-small", seed=0, cache_dir=tmp_path / "a")
    b = build_tiny_model("llava-small", seed=0, cache_dir=tmp_path / "b")
    c = build_tiny_model("llava-small", seed=1, cache_dir=tmp_path / "c")
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1] != weights[2]
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert build_tiny_model("llava-small", seed=0, cache_dir=tmp_path / "a") == a  # cached, not rebuilt


def test_bad_specs_and_missing_models_give_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_backend("nonsense:model")
    with pytest.raises(ConfigError):
        load_backend("tiny-random:unknown")
    with pytest.raises(BackendUnavailableError, match="^model folder .* does not exist"):
        load_backend(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(BackendUnavailableError, match="cannot load"):
        load_backend(f"hf:{tmp_path}")  # a folder, but no model in it
    with pytest.raises(BackendUnavailableError, match="download it first"):
        load_backend("hf:some-org/some-model-that-is-not-cached")


@pytest.mark.parametrize("spec", ["./no/such/dir", "no/such/dir", "/no/such/dir", "no-such-dir/", "~/no/such/dir"])
def test_a_missing_local_folder_says_it_does_not_exist_without_asking_the_hub(
    spec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecso_core.backends import hf_loading

    def no_hub(model: str) -> None:
        raise AssertionError(f"the hub was asked about {model!r}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_loading, "_require_hub", no_hub)
    expanded = str(Path(spec).expanduser()) if spec.startswith("~") else spec
    with pytest.raises(BackendUnavailableError) as caught:
        load_backend(f"hf:{spec}")
    assert str(caught.value) == (
        f"model folder {expanded!r} does not exist (looked for {Path(expanded).absolute()}); pass an existing "
        "folder, or a Hugging Face hub id such as 'llava-hf/llava-1.5-7b-hf'"
    )


def test_what_looks_like_a_path() -> None:
    from ecso_core.backends.hf_loading import looks_like_path

    paths = ["/abs", "./rel", "../up", "~/home", ".", "a/b/c", "folder/", "C:\\models\\x", "models\\x"]
    hub_ids = ["llava-hf/llava-1.5-7b-hf", "gpt2", "org/name"]
    assert [looks_like_path(p) for p in paths] == [True] * len(paths)
    assert [looks_like_path(h) for h in hub_ids] == [False] * len(hub_ids)


def test_tiny_random_declares_a_small_default_and_the_backend_uses_it(backend: TransformersBackend) -> None:
    from ecso_core.backends.tiny import TINY_MAX_NEW_TOKENS

    assert TINY_MAX_NEW_TOKENS == 16
    assert backend.model.generation_config.max_new_tokens == 16 == backend.default_max_new_tokens
    request = image_request("What is this?", noise(20, 20)).model_copy(update={"params": GenerationParams()})
    (reply,) = backend.generate([request])
    assert (reply.usage.completion_tokens, reply.finish_reason) == (16, "length")  # random weights never stop


def test_a_checkpoint_without_a_default_gets_the_papers_1024_and_asked_values_win(
    backend: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ecso_core.backends.transformers import DEFAULT_MAX_NEW_TOKENS

    asked: list[int] = []
    generate = backend.model.generate

    def recording(*args: object, **kwargs: object) -> object:
        asked.append(kwargs["max_new_tokens"])  # type: ignore[arg-type]
        return generate(*args, **{**kwargs, "max_new_tokens": 1})

    monkeypatch.setattr(backend.model, "generate", recording)
    unset = image_request("What is this?", noise(20, 20)).model_copy(update={"params": GenerationParams()})
    backend.generate([unset, image_request("And this?", noise(20, 20), max_new_tokens=16)])
    assert asked == [16]  # unset resolves to the model's 16 first: one batch with the request asking for 16
    monkeypatch.setattr(backend.model.generation_config, "max_new_tokens", None)
    backend.generate([unset, image_request("And this?", noise(20, 20), max_new_tokens=5)])
    assert DEFAULT_MAX_NEW_TOKENS == 1024
    assert asked[1:] == [1024, 5]


def test_unreachable_hub_fails_fast_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # as a user who is offline without saying so
    with pytest.raises(BackendUnavailableError, match="cannot be reached"):
        load_backend("hf:some-org/another-missing-model")


def test_model_class_falls_back_to_the_configs_own_class(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from ecso_core.backends.hf_loading import _model_class

    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    assert _model_class(str(tmp_path), {"local_files_only": True}) is LlamaForCausalLM
    llava = build_tiny_model("llava-small")
    from transformers import AutoModelForImageTextToText

    assert _model_class(str(llava), {"local_files_only": True}) is AutoModelForImageTextToText


def test_dtype_and_device_options_are_applied() -> None:
    import torch

    backend = load_backend("tiny-random:llava-small", dtype="bfloat16", device="cpu")
    assert backend.model.dtype == torch.bfloat16
    assert backend.model.device.type == "cpu"
    reply = backend.generate([image_request("hi", noise(12, 12), max_new_tokens=3)])[0]
    assert reply.usage.completion_tokens <= 3


def test_missing_extra_names_the_pip_install() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        "from ecso_core import load_backend, MissingDependencyError\n"
        "try:\n    load_backend('tiny-random')\n"
        "except MissingDependencyError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'ecso[hf]'" in out.stdout


def test_a_hub_id_already_in_the_local_cache_loads_without_the_network(tmp_path: Path) -> None:
    """A model downloaded earlier loads offline even without HF_HUB_OFFLINE (no hub round-trip)."""
    import os
    import shutil
    import subprocess
    import sys

    source = build_tiny_model("llava-small")
    snapshot = tmp_path / "hub" / "models--example-org--tiny-vlm" / "snapshots" / "0123abcd"
    shutil.copytree(source, snapshot)
    (tmp_path / "hub" / "models--example-org--tiny-vlm" / "refs").mkdir()
    (tmp_path / "hub" / "models--example-org--tiny-vlm" / "refs" / "main").write_text("0123abcd")
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled')\n"
        "socket.socket.connect = refuse\n"
        "from ecso_core import load_backend\n"
        "backend = load_backend('hf:example-org/tiny-vlm')\n"
        "print(type(backend).__name__, backend.name)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "0"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "TransformersBackend example-org/tiny-vlm"
