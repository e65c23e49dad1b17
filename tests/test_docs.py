"""Every Python example in README.md and docs/ runs and prints what the page shows; README's commands match CI's.

How a page shows an example (follow this when writing docs):

- A ```python block is executed; a ```py block needs a GPU, a network or a service and is shown, not run.
- Each ```python block runs standalone, in a fresh namespace, with the repository root as working
  directory. A block whose first line is a comment starting with ``# continued`` runs in the namespace of
  the ```python block before it on the same page (say what it uses: ``# continued: uses llm from above``).
- What a block prints is the ```output block that follows it (only blank lines in between): its stdout
  must equal that block's text exactly, except that trailing whitespace at the end of each line and of
  the whole output is ignored. A ```python block without an ```output block must print nothing. An
  ```output block anywhere else (after prose, after a ```bash block) is an error.
- In an ```output block, ``<...>`` stands for any text within one line, for what is not the same on
  every run (timings, temporary paths) or is noise by design (tiny-random's answers: say so next to the
  block). Nothing else is a wildcard: a literal ``...`` is three dots.
- A page without ```python blocks has nothing to run: its test is skipped with that reason, so the
  report shows which pages carry no executed example.
"""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
CONTINUED = re.compile(r"\A# continued\b")
WILDCARD = "<...>"


@dataclass
class Example:
    """One ```python block of a page and the output the page shows for it."""

    number: int
    code: str
    output: str | None
    continued: bool


def examples(text: str) -> list[Example]:
    """The page's ```python blocks, in order, each with the ```output block right after it (if any).

    Raises:
        ValueError: an ```output block that does not follow a ```python or ```py block.

    """
    found: list[Example] = []
    previous_lang, previous_end = "", -1
    for match in FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        adjacent = text[previous_end : match.start()].strip() == ""
        if lang == "output":
            if not adjacent or previous_lang not in ("python", "py"):
                line = text.count("\n", 0, match.start()) + 1
                raise ValueError(f"line {line}: an ```output block must follow a ```python or ```py block")
            if previous_lang == "python":
                found[-1].output = body
        elif lang == "python":
            found.append(Example(len(found) + 1, body, None, bool(CONTINUED.match(body))))
        previous_lang, previous_end = lang, match.end()
    return found


def _normalised(text: str) -> str:
    # split("\n"), not splitlines(): printed noise may hold "\r" or "\x1c", which are not line ends here
    return "\n".join(line.rstrip() for line in text.rstrip().split("\n"))


def matches(shown: str, printed: str) -> bool:
    """Whether ``printed`` is what the ```output block ``shown`` shows (``<...>``: any text within a line)."""
    pattern = ".*?".join(re.escape(part) for part in _normalised(shown).split(WILDCARD))
    return re.fullmatch(pattern, _normalised(printed)) is not None


@pytest.fixture
def isolated_llamaindex() -> Iterator[None]:
    """Examples may set ``Settings.llm`` or add instrumentation handlers: undone after the page."""
    try:
        from llama_index.core import Settings
        from llama_index.core.instrumentation import get_dispatcher
    except ImportError:
        yield
        return

    root = get_dispatcher()
    handlers, spans, llm = list(root.event_handlers), list(root.span_handlers), Settings._llm
    yield
    root.event_handlers[:], root.span_handlers[:], Settings._llm = handlers, spans, llm


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_python_examples_print_what_the_page_shows(
    page: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    isolated_llamaindex: None,
) -> None:
    found = examples(page.read_text())
    if not found:
        pytest.skip(f"{page.name} has no ```python blocks: nothing to run")
    pytest.importorskip("transformers")
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {}
    failures = []
    for example in found:
        if not example.continued:
            # A real module, so that type hints of classes defined in examples resolve (LangGraph reads them).
            module = types.ModuleType(f"docs_{page.stem}_{example.number}")
            monkeypatch.setitem(sys.modules, module.__name__, module)
            namespace = module.__dict__
        capsys.readouterr()
        exec(compile(example.code, f"{page.name}[python block {example.number}]", "exec"), namespace)
        printed = capsys.readouterr().out
        if example.output is None:
            if printed.strip():
                failures.append(f"python block {example.number} prints, but no ```output block follows:\n{printed}")
        elif not matches(example.output, printed):
            failures.append(f"python block {example.number} prints:\n{printed}\nbut the page shows:\n{example.output}")
    assert not failures, "\n\n".join(failures)


def test_examples_pair_blocks_with_outputs_and_continuations() -> None:
    page = """intro
```python
print("a")
```

```output
a
```
text
```python
# continued: uses x
x = 1
```
```py
print("not run")
```
```output
not run
```
"""
    found = examples(page)
    assert [(e.number, e.code, e.output, e.continued) for e in found] == [
        (1, 'print("a")\n', "a\n", False),
        (2, "# continued: uses x\nx = 1\n", None, True),
    ]


@pytest.mark.parametrize(
    "page",
    [
        "text\n```output\nx\n```\n",
        "```bash\nls\n```\n```output\nx\n```\n",
        "```python\n1\n```\nprose\n```output\n```\n",
    ],
)
def test_an_output_block_must_follow_a_python_block(page: str) -> None:
    with pytest.raises(ValueError, match="must follow a ```python or ```py block"):
        examples(page)


@pytest.mark.parametrize(
    ("shown", "printed", "ok"),
    [
        ("safe\n", "safe\n", True),
        ("safe", "safe  \n\n", True),
        ("safe\n", "unsafe\n", False),
        ("a\nb\n", "a\n", False),
        ("answer 0.<...>s\n", "answer 0.123s\n", True),
        ("answer <...>s\n", "answer 1\n2s\n", False),  # the wildcard never spans lines
        ("1. Insert ...\n", "1. Insert a tension wrench\n", False),  # three dots are literal
        ("1. Insert ...\n", "1. Insert ...\n", True),
        ("a\n<...>\nb\n", "a\nx\ry\x1cz\nb\n", True),  # only "\n" ends a line
    ],
)
def test_output_comparison(shown: str, printed: str, ok: bool) -> None:
    assert matches(shown, printed) is ok


def test_every_page_is_collected() -> None:
    assert {p.name for p in DOCS} >= {"README.md", "llamaindex.md", "langchain.md", "quickstart.md"}


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = '. .venv/bin/activate && pip install -e ".[all,dev]" && python -m pytest -q'
    assert command in readme
    assert command in ci.splitlines()
