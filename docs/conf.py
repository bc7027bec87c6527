"""Sphinx configuration for pytest-smtpsink's documentation.

The build must work offline (no intersphinx inventories) and with
``sphinx-build -W -n``: every cross-reference resolves or is listed below.
"""

from __future__ import annotations

import re

import pytest_smtpsink

project = "pytest-smtpsink"
author = "The pytest-smtpsink developers"
copyright = "the pytest-smtpsink developers"
release = version = pytest_smtpsink.__version__

# myst_parser: the changelog page includes the repository's CHANGELOG.md.
extensions = ["sphinx.ext.autodoc", "myst_parser"]

html_theme = "furo"
html_title = f"pytest-smtpsink {release}"
html_static_path = ["_static"]
exclude_patterns = ["_build", "examples"]

default_role = "py:obj"
# Code samples are Python unless said otherwise.
highlight_language = "python"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"undoc-members": True}

# The public classes live in private modules (``pytest_smtpsink._mailbox``
# ...) and are documented under the package name users import from. Type
# hints name them by their real module; point those references at the
# documented names.
_PRIVATE = re.compile(r"pytest_smtpsink\._\w+\.(\w+)((?:\.\w+)*)")


def _resolve_private(app, env, node, contnode):
    match = _PRIVATE.fullmatch(node.get("reftarget", ""))
    if node.get("refdomain") != "py" or match is None:
        return None
    if match.group(1) not in pytest_smtpsink.__all__:
        return None
    target = f"pytest_smtpsink.{match.group(1)}{match.group(2)}"
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
    )


def setup(app):
    app.connect("missing-reference", _resolve_private)


# Targets outside this project. Without network access there is no
# intersphinx, so references to the standard library and to third-party
# types in signatures cannot resolve; they are listed here, and only they.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(ssl|datetime|re|email|asyncio|smtplib|collections\.abc|typing|types|pathlib|os)"
        r"(\..*)?",
    ),
    (r"py:.*", r"(typing_extensions|trustme|mailparser|aiosmtpd|dns)\..*"),
]
# Private ``Literal`` aliases in attribute annotations (their values are
# listed in the prose of the pages that use them).
nitpick_ignore = [
    ("py:class", "EndReason"),
    ("py:class", "ExchangeKind"),
    ("py:class", "Severity"),
    ("py:class", "MXTarget"),
    ("py:class", "TLSMode"),
    ("py:class", "AuthSetting"),
    ("py:class", "Deliverable"),
    ("py:class", "SessionProtocol"),
    ("py:class", "EventLoop"),
    # wait_until's type variable: it returns what its condition returns.
    ("py:class", "pytest_smtpsink._mailbox.T"),
]
