"""Every Python example in README.md and docs/ runs; README's commands match CI's.

Blocks fenced as ```python are executed; ```py marks an example that needs a GPU or a network (shown, not run).
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_python_examples_run(page: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("transformers")
    monkeypatch.chdir(ROOT)
    blocks = BLOCK.findall(page.read_text())
    # A real module, so that type hints of classes defined in examples resolve (LangGraph reads them).
    module = types.ModuleType(f"docs_{page.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, code in enumerate(blocks, start=1):
        exec(compile(code, f"{page.name}[python block {number}]", "exec"), module.__dict__)  # noqa: S102


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = '. .venv/bin/activate && pip install -e ".[all,dev]" && python -m pytest -q'
    assert command in readme
    assert command in ci.splitlines()
