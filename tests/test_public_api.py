"""The package's public surface: ``__all__`` pinned, nothing else public, and ``fingerprint``
both the submodule and the function users call."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

import cachebench
import cachebench.fingerprint
from cachebench.fingerprint import fingerprint as fingerprint_function

PUBLIC = [
    "CachePolicy",
    "CacheWarmer",
    "CacheTracker",
    "CallMetrics",
    "Finding",
    "Plan",
    "PrefixDiff",
    "Provider",
    "Regression",
    "Traffic",
    "advise",
    "apply",
    "explain",
    "fingerprint",
    "flow",
    "lint",
    "plan",
    "simulate",
]
# The planner's and the economics' names, imported when first asked for: ``import cachebench`` stays light.
LAZY = {"Finding", "Plan", "Traffic", "apply", "lint", "plan", "CacheWarmer", "advise", "simulate"}

SYSTEM = [{"type": "text", "text": "Stable", "cache_control": {"type": "ephemeral"}}]
MESSAGES = [{"role": "user", "content": "hello"}]


def _submodules(package: types.ModuleType) -> set[str]:
    """Names the import system set on the package: its own submodules, imported so far."""
    return {
        name
        for name, value in vars(package).items()
        if isinstance(value, types.ModuleType) and value.__name__ == f"{package.__name__}.{name}"
    }


def test_all_is_pinned() -> None:
    """``cachebench.__all__`` is exactly what users call or receive; the tracker's inner value
    types stay in ``cachebench.types``."""
    assert cachebench.__all__ == sorted(PUBLIC)
    for name in ("Cost", "PrefixKey", "Usage"):
        assert not hasattr(cachebench, name)
        assert hasattr(cachebench.types, name)
    assert isinstance(cachebench.__version__, str)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_exported_name_imports(name: str) -> None:
    """``from cachebench import <name>`` works for every name in ``__all__``."""
    namespace: dict[str, object] = {}
    exec(f"from cachebench import {name}", namespace)
    assert namespace[name] is getattr(cachebench, name)


def test_nothing_private_leaks() -> None:
    """The package's public names are ``__all__`` and the submodules Python sets as attributes
    when they are imported: no helper, no ``typing`` or ``__future__`` name. (Names that are
    not identifiers, such as ``@py_builtins``, are pytest's: it rewrites the plugin's package.)"""
    public = {name for name in dir(cachebench) if not name.startswith("_") and name.isidentifier()}
    assert public - _submodules(cachebench) == set(PUBLIC) - {"fingerprint"}
    assert set(PUBLIC) <= public


def test_a_fresh_import_exposes_only_the_public_names() -> None:
    """The same check in a new interpreter, where only what ``import cachebench`` itself
    imports is there: no other test's imports can hide a leak."""
    code = (
        "import types, cachebench\n"
        "names = sorted(n for n, v in vars(cachebench).items() if not n.startswith('_')\n"
        "    and not (isinstance(v, types.ModuleType) and v.__name__ == 'cachebench.' + n))\n"
        "print(','.join(names))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == sorted(set(PUBLIC) - {"fingerprint"} - LAZY)


def test_planner_names_are_lazy_and_listed() -> None:
    """The planner's names are listed by ``dir()`` before use, and a fresh ``import cachebench``
    does not import the planner until one is asked for."""
    assert set(dir(cachebench)) >= LAZY
    code = (
        "import sys, cachebench\n"
        "before = 'cachebench.planner' in sys.modules, 'cachebench.economics' in sys.modules\n"
        "cachebench.lint\n"
        "cachebench.simulate\n"
        "print(*before, 'cachebench.planner' in sys.modules, 'cachebench.economics' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True", "True"]


def test_fingerprint_is_the_module_and_callable() -> None:
    """``import cachebench.fingerprint`` gives the module (its helpers reachable), and the
    module is callable: ``cachebench.fingerprint(...)``, the name imported from the package,
    and the function imported from the module all give the same prefix id."""
    module = sys.modules["cachebench.fingerprint"]
    assert cachebench.fingerprint is module
    assert isinstance(cachebench.fingerprint, types.ModuleType)
    assert callable(cachebench.fingerprint.key)
    assert isinstance(fingerprint_function, types.FunctionType)
    assert fingerprint_function is module.fingerprint  # type: ignore[attr-defined]

    from cachebench import fingerprint

    fid = fingerprint_function(messages=MESSAGES, system=SYSTEM, model="claude-sonnet-5")
    assert fid is not None and len(fid) == 16
    assert cachebench.fingerprint(messages=MESSAGES, system=SYSTEM, model="claude-sonnet-5") == fid
    assert fingerprint(MESSAGES, SYSTEM, None, provider="anthropic", model="claude-sonnet-5") == fid
    assert fingerprint(messages=MESSAGES, system="no markers") is None


def test_calling_the_module_refuses_what_the_function_refuses() -> None:
    """Through the module or the function, a bad model or provider raises the same error."""
    for call in (cachebench.fingerprint, fingerprint_function):
        with pytest.raises(TypeError, match=r"^model must be a model name \(str\) or None, got int$"):
            call(messages=MESSAGES, system=SYSTEM, model=5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown provider 'azure'"):
            call(messages=MESSAGES, system=SYSTEM, provider="azure")
