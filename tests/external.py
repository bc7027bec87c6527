"""Real external parts (Dovecot, SpamAssassin, Chromium, swaks, ...) in tests.

A test that needs a program the project does not ship calls `require` first.
Locally, a missing part skips the test with a reason that says how to get it.
Under CI (``.ci/run`` sets ``SMTPSINK_REQUIRE_EXTERNAL=1``) a missing part is a
failure instead: CI installs every part, so a skip there would hide a broken
install step and let the test prove nothing.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

#: Set by ``.ci/run``: a missing external part fails instead of skipping.
REQUIRE_ENV = "SMTPSINK_REQUIRE_EXTERNAL"


def required() -> bool:
    """Whether missing parts fail (CI) rather than skip (a local run)."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing(what: str, how: str) -> NoReturn:
    """Skip (locally) or fail (under CI) because *what* is not available.

    *how* tells a person how to get it, e.g. ``"apt-get install swaks"``.
    """
    reason = f"{what} is not available ({how})"
    if required():
        pytest.fail(f"{reason}; {REQUIRE_ENV} is set, so this is a failure")
    pytest.skip(reason)


def require(program: str, how: str) -> str:
    """The path of *program* on PATH, or skip/fail as `missing` does."""
    path = shutil.which(program)
    if path is None:
        missing(f"{program!r} (not on PATH)", how)
    return path
