"""``python -m pytest_smtpsink`` and the ``smtpsink`` command (`main`)."""

from __future__ import annotations

import sys


def main() -> int:
    """Run the ``smtpsink`` command (`pytest_smtpsink._cli.main`).

    Its modules are imported here, inside the ``try``: a Ctrl-C in the
    first fraction of a second, before the command handles SIGINT itself,
    came during the imports and printed a traceback. It now ends the
    command with one line, and status 130 as a shell's interrupted command.
    """
    try:
        from ._cli import main as run

        return run()
    except KeyboardInterrupt:
        print("smtpsink: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
