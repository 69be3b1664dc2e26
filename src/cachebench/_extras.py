"""How to install one of cachebench's optional extras, in the words every missing-extra error
uses: cachebench installs from its repository (the package index's ``cachebench`` is another
project, without these extras)."""

from __future__ import annotations

__all__ = ["install_hint"]


def install_hint(extra: str) -> str:
    """``pip install`` of the ``extra`` from a clone, or from the repository's URL."""
    return (
        f"pip install -e '.[{extra}]' in a clone of cachebench, or "
        f"pip install 'cachebench[{extra}] @ git+<repository URL>' (the package index's "
        "'cachebench' is another project)"
    )
