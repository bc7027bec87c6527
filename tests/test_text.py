"""The display helpers: escaping, shortening, counting."""

from __future__ import annotations

import pytest

from pytest_smtpsink import _text
from pytest_smtpsink._text import (
    join_shortened,
    plural,
    printable,
    printable_sent,
    shorten,
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, ünïcödé, 日本語 ✓", "plain text, ünïcödé, 日本語 ✓"),
        ("a\u2028S: 250 ok", "a\\u2028S: 250 ok"),
        ("a\u2029b", "a\\u2029b"),
        ("\x1b[2J", "\\x1b[2J"),
        ("nel\x85x", "nel\\x85x"),
        ("cr\rlf\ntab\tnul\x00del\x7f", "cr\\rlf\\ntab\\tnul\\x00del\\x7f"),
        ("vt\x0bff\x0cfs\x1c", "vt\\x0bff\\x0cfs\\x1c"),
        ("rtl\u202eevil\u2066", "rtl\\u202eevil\\u2066"),
        ("lone \udce9 surrogate", "lone \\udce9 surrogate"),
    ],
)
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert len(printable(text).splitlines()) == 1
    printable(text).encode("utf-8")


def test_printable_sent_writes_undecodable_bytes_as_bytes() -> None:
    sent = b"caf\xc3\xa9 \xfc\x1b\xe2\x80\xa8".decode("utf-8", "surrogateescape")
    assert printable_sent(sent) == "caf\u00e9 \\xfc\\x1b\\u2028"
    assert printable_sent("plain") == "plain"


def test_join_shortened() -> None:
    assert join_shortened([]) == ""
    assert join_shortened(["a", "b", "c"]) == "a, b, c"
    many = [f"u{i}@example.com" for i in range(10_000)]
    assert join_shortened(many) == "u0@example.com, u1@example.com, ... (+9,998 more)"
    assert join_shortened(["a", "b", "c", "d"], most=1) == "a, ... (+3 more)"


def test_shorten_and_plural() -> None:
    assert shorten("abc", 3) == "abc"
    assert shorten("abcdef", 3) == "abc... [3 more characters]"
    assert plural(1, "message") == "1 message"
    assert plural(0, "session") == "0 sessions"


def test_shown_argument_hides_a_table_in_a_dict_view_and_stays_short() -> None:
    # dict.items() at depth held the passwords; a long list was shown whole.
    users = {"ann": "Zq9SecretPw7781"}
    shown = _text.shown_argument([users.items(), users.values()])
    assert "Zq9SecretPw7781" not in shown
    assert (
        shown
        == "[a dict_items of 1 item (not shown), a dict_values of 1 item (not shown)]"
    )
    many = _text.shown_argument([users] * 40)
    assert many.endswith(", ... (+35 more)]")
    assert _text.shown_argument(5.0) == "5.0"
    assert _text.an("int") == "an int"


def test_the_index_sorts_numbers_of_any_script_without_failing() -> None:
    from pytest_smtpsink._html import _natural

    # "²" is a digit to str.isdigit() but no number to int(): the end of
    # the run failed writing the index (with id escaping turned off).
    assert sorted(["t[2\u00b23]", "t[10]", "t[7]"], key=_natural) == [
        "t[2\u00b23]",
        "t[7]",
        "t[10]",
    ]
