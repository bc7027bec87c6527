"""A real spamd for the documentation's spam example (imported there as a
fixture; not a conftest.py, whose module name the test suite's own
``from conftest import ...`` would collide with)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The spamd launcher and the external-parts rule are the test suite's own.
sys.path.insert(0, str(Path(__file__).parents[2] / "tests"))

from spamd import running_spamd

from pytest_smtpsink._spam import use_spamd


@pytest.fixture(scope="session")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real spamd, used by spam_report() as --smtpsink-spamd would set it."""
    with running_spamd(tmp_path_factory.mktemp("spamd")) as address:
        previous = use_spamd(address)
        yield address
        use_spamd(previous)
