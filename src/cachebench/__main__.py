"""``python -m cachebench``: the ``cachebench`` command."""

from .cli import run

if __name__ == "__main__":
    run()
