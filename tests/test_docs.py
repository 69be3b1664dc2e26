"""Every Python example in the documentation runs, as a user would run it, and checks itself.

Sources: each fenced ```` ```python ```` block of ``README.md`` and ``docs/*.md``, and the
example in :mod:`cachebench.testing`'s docstring (the plugin's own documentation). Every
block is a complete program with at least one ``assert``; a fragment that cannot run is not
written as a Python block.

- A block that defines ``test_*`` functions is a test file a user copies: it is written to a
  temporary directory and run with ``python -m pytest`` there, where the ``cache_emulator``
  fixture comes from the installed plugin; every test in it must pass.
- Any other block is a script: it runs with ``python`` in a fresh process against the
  emulator this session serves on 127.0.0.1, found the way the SDKs find a provider without
  ``base_url=`` in the code (``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL`` and test keys). It
  must exit 0 and write nothing to stderr: no warning, no traceback.

Both run with warnings as errors and ``CACHEBENCH_STRICT=1``, so an internal error of the
tracker fails the example instead of being logged.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import cachebench.testing
from cachebench.testing import CacheEmulator

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[^`\n]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# Fences the docs may use: Python (run here), shell commands, and plain text (trees, output).
LANGUAGES = {"python", "bash", ""}
TIMEOUT_S = 120


@dataclass(frozen=True)
class Example:
    """One Python example: where it is written (``path:line``) and its source."""

    where: str
    source: str

    @property
    def tests(self) -> list[str]:
        """The names of the test functions it defines (none for a script)."""
        tree = ast.parse(self.source)
        return [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        ]


def fences(path: Path) -> list[tuple[str, int, str]]:
    """(language, line of the opening fence, body) of each fenced block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(m["lang"].strip(), text.count("\n", 0, m.start()) + 1, m["body"]) for m in FENCE.finditer(text)]


def docstring_example() -> Example:
    """The literal block after ``fixture::`` in :mod:`cachebench.testing`'s docstring."""
    doc = cachebench.testing.__doc__ or ""
    after = doc.split("fixture::\n", 1)[1]
    lines: list[str] = []
    for line in after.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line)
    return Example(
        "src/cachebench/testing.py (module docstring)", textwrap.dedent("\n".join(lines)).strip() + "\n"
    )


def examples() -> list[Example]:
    found = [
        Example(f"{path.relative_to(ROOT)}:{line}", body)
        for path in DOCUMENTS
        for lang, line, body in fences(path)
        if lang == "python"
    ]
    return [*found, docstring_example()]


EXAMPLES = examples()


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    env.update(CACHEBENCH_STRICT="1", PYTHONWARNINGS="error", **extra)
    return env


def test_the_docs_have_their_examples() -> None:
    """The extraction finds the README's examples (the Quickstart, recording a response, the
    regression walk-through and the fixture test) and the plugin's; every fence names a
    language this test knows, so a ```` ```py ```` block cannot slip past it."""
    readme = [e for e in EXAMPLES if e.where.startswith("README.md:")]
    assert len(readme) >= 4
    assert sum(1 for e in EXAMPLES if e.tests) >= 2
    for path in DOCUMENTS:
        for lang, line, _ in fences(path):
            assert lang in LANGUAGES, f"{path.relative_to(ROOT)}:{line}: fence language {lang!r}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.where)
def test_example_checks_something(example: Example) -> None:
    """Each example asserts what it shows (a test file does so in its tests)."""
    tree = ast.parse(example.source)
    assert any(isinstance(node, ast.Assert) for node in ast.walk(tree)), f"{example.where}: no assert"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if not e.tests], ids=lambda e: e.where)
def test_script_example_runs_against_the_emulator(
    example: Example, cache_emulator: CacheEmulator, tmp_path: Path
) -> None:
    """The script exits 0 with nothing on stderr, its SDK clients pointed at the emulator
    through the environment only."""
    script = tmp_path / "example.py"
    script.write_text(example.source, encoding="utf-8")
    env = child_env(
        ANTHROPIC_BASE_URL=cache_emulator.anthropic_base_url,
        ANTHROPIC_API_KEY="sk-docs",
        OPENAI_BASE_URL=cache_emulator.openai_base_url,
        OPENAI_API_KEY="sk-docs",
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, ""), f"{example.where}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.tests], ids=lambda e: e.where)
def test_test_file_example_passes_under_pytest(example: Example, tmp_path: Path) -> None:
    """The test file passes as it is under pytest, with the installed plugin's fixture: every
    test it defines is collected and passes."""
    (tmp_path / "test_example.py").write_text(example.source, encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "test_example.py",
        ],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    passed = f"{len(example.tests)} passed"
    assert done.returncode == 0 and passed in done.stdout, f"{example.where}\n{done.stdout}\n{done.stderr}"
