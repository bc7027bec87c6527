"""The package's layout rules (docs/architecture.rst), checked on the source.

Imports are read from the syntax tree; those under ``if TYPE_CHECKING:`` are
for annotations only and do not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_smtpsink"


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Package modules a module imports when it runs (at any depth)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for orelse in child.orelse:
                    visit(orelse)
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 1:
                if child.module:
                    found.add(child.module)
                else:
                    found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith(
                "pytest_smtpsink."
            ):
                found.add((child.module or "").split(".")[1])
            visit(child)

    visit(tree)
    return found


def graph() -> dict[str, set[str]]:
    return {
        path.stem: _runtime_imports(ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(PACKAGE.glob("*.py"))
    }


def test_fault_rules_import_nothing_of_the_package() -> None:
    imports = graph()["_faults"]
    assert imports == set(), (
        "_faults decides and must stay a leaf; it imports " + ", ".join(imports)
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's node list, found by depth-first search."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def test_the_only_import_cycle_is_the_sink_and_its_mailbox() -> None:
    # SMTPSink is a Mailbox (on itself) and a Mailbox hands out its sink's
    # settings and TLS details: the one intended circle.
    allowed = {("_mailbox", "_server", "_mailbox")}
    found = {tuple(cycle) for cycle in cycles(graph())}
    assert found <= allowed, sorted(found - allowed)


@pytest.mark.parametrize("front_end", ["plugin", "_cli"])
def test_front_ends_touch_no_private_member_of_another_object(
    front_end: str,
) -> None:
    tree = ast.parse((PACKAGE / f"{front_end}.py").read_text(encoding="utf-8"))
    reaches = sorted(
        f"line {node.lineno}: {ast.unparse(node)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        and not (isinstance(node.value, ast.Name) and node.value.id.startswith("_"))
    )
    assert reaches == [], f"{front_end}.py reaches into other objects: {reaches}"


def test_every_server_connection_reads_into_a_buffer() -> None:
    """asyncio reads a plain Protocol's packets with ``recv(256 KiB)``, a
    memory mapping per packet (see ``_reading``); a buffered protocol reads
    into a buffer it reuses. A server protocol that loses the mixin gets
    slower without failing any other test."""
    import asyncio

    from pytest_smtpsink import _imap, _pop3, _smtp

    for protocol in (_smtp.RecordingSMTP, _pop3._Connection, _imap._Connection):
        assert issubclass(protocol, asyncio.BufferedProtocol), protocol


def test_header_addresses_are_read_the_lax_way_everywhere() -> None:
    """Python 3.13's getaddresses and parseaddr are strict by default: a
    module that calls them directly reads malformed headers differently from
    the rest of the package on that version. ``_mime`` has the lax ones."""
    direct = re.compile(
        r"utils\.(?:getaddresses|parseaddr)\b"
        r"|from email\.utils import [^\n]*\b(?:getaddresses|parseaddr)\b"
    )
    found = sorted(
        f"{path.stem}: {match.group()}"
        for path in PACKAGE.glob("*.py")
        if path.stem != "_mime"
        for match in direct.finditer(path.read_text(encoding="utf-8"))
    )
    assert found == [], f"use _mime.getaddresses and _mime.parseaddr: {found}"
