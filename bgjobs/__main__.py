"""``python -m bgjobs``: the command line, see :mod:`bgjobs.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
