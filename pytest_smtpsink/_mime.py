"""Where the standard library's email package reads captured mail in a way
the sink works around: the compat32 parse, made to survive a parameter list
the standard library cannot decode; and addresses, read the same way on
every Python version (`getaddresses`, `parseaddr`).

A parameter given both whole and in numbered sections (``name*=x;
name*0=a``, RFC 2231) makes ``email.utils.decode_params`` compare None with
an int (TypeError, CPython gh-134151, fixed only in later releases), on
every read of that header's parameters: the boundary, the charset, a file
name. The MIME parse gave up when it was a boundary's, and the text and
lint's MIME checks when it was a charset's. Here the whole form is dropped
in favour of the sections, and the part says so in its ``defects``.

mail-parser builds its own header views of each part, so it still gives up
on such a message (`Message.defects` says so): `Message.attachments` is
then empty.
"""

from __future__ import annotations

import email
import email.errors
import email.message
import email.utils
import functools
import inspect
import re
from collections.abc import Callable, Iterable
from email.message import Message as Compat32Message
from typing import Any, cast


class ConflictingContinuationsDefect(email.errors.HeaderDefect):
    """A parameter both whole (name*=) and in sections (name*0=); sections kept"""


#: ``name*=`` (not ``name*0=``), with its value up to the next ``;`` or the
#: end, a quoted value whole; names as the stdlib's ``rfc2231_continuation``
#: takes them.
_WHOLE = re.compile(r';\s*(\w+)\*\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;]*))?(?=;|$)')
_SECTION = re.compile(r";\s*(\w+)\*[0-9]+\*?\s*(?:=|;|$)")


def _without_whole_forms(value: str) -> str:
    sectioned = {name.lower() for name in _SECTION.findall(value)}
    return _WHOLE.sub(
        lambda match: "" if match.group(1).lower() in sectioned else match.group(0),
        value,
    )


class Compat32(Compat32Message):
    """compat32's message, whose parameter reads survive conflicting RFC
    2231 sections (see the module docstring)."""

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        try:
            return super()._get_params_preserve(failobj, header)  # type: ignore[misc]
        except TypeError:
            value = self.get(header)
            if value is None:
                raise
            cleaned = _without_whole_forms(str(value))
            shadow = Compat32Message()
            shadow[header] = cleaned
            params = shadow._get_params_preserve(failobj, header)  # type: ignore[attr-defined]
            if not any(
                isinstance(d, ConflictingContinuationsDefect) for d in self.defects
            ):
                self.defects.append(ConflictingContinuationsDefect())
            return params


def parse_compat32(raw: bytes) -> Compat32:
    """``raw`` parsed with compat32, every part a `Compat32`."""
    linear_params()
    message = email.message_from_bytes(raw, _class=Compat32)
    assert isinstance(message, Compat32)
    return message


# Python 3.13 (and later patch releases of 3.11 and 3.12) made getaddresses
# and parseaddr strict by default: they give up, with ("", ""), on forms
# the older ones read, such as a domain literal holding a space
# (j@[192.0.2.1 ]) or a stray ">" after an address. The sink reads every
# header address the lax (older) way, so a test, a lint verdict or a
# deliver()'s recipients are the same in a tox matrix.
_LAX: dict[str, bool] = (
    {"strict": False}
    if "strict" in inspect.signature(email.utils.getaddresses).parameters
    else {}
)


def getaddresses(values: Iterable[str]) -> list[tuple[str, str]]:
    """`email.utils.getaddresses`, the lax way on every Python version."""
    found: list[tuple[str, str]] = cast("Any", email.utils.getaddresses)(
        [str(value) for value in values], **_LAX
    )
    return found


def parseaddr(value: str) -> tuple[str, str]:
    """`email.utils.parseaddr`, the lax way on every Python version."""
    found: tuple[str, str] = cast("Any", email.utils.parseaddr)(value, **_LAX)
    return found


def encoded_words(line: str) -> list[tuple[int, int, str, str]]:
    """The RFC 2047 encoded words in one line, as `email.header.ecre` finds
    them: ``(start, end, charset, encoding)`` each, in order.

    That pattern's lazy parts make a search try every ``=?`` left in the
    line, each scanning to its end when no ``?=`` follows: quadratic. Here
    each step looks only ahead of the last: the first ``?`` after ``=?``
    ends the charset (it holds none), the first ``?=`` after the encoding
    ends the word; with none, no later ``=?`` can end a word either.
    """
    found: list[tuple[int, int, str, str]] = []
    position = 0
    while (start := line.find("=?", position)) >= 0:
        mark = line.find("?", start + 2)
        if mark < 0:
            break
        encoding = line[mark + 1 : mark + 2]
        if encoding not in ("q", "Q", "b", "B") or line[mark + 2 : mark + 3] != "?":
            position = start + 1
            continue
        end = line.find("?=", mark + 3)
        if end < 0:
            break
        found.append((start, end + 2, line[start + 2 : mark], encoding))
        position = end + 2
    return found


#: A quoted string, or a comment, as RFC 5322 writes them; or, from an
#: opening that nothing closes, as far as the text goes the same way
#: (group 1 empty). Matched so, no later opening is tried again: each
#: would end alike, and a search of the closed forms alone tried from every
#: escaped '"' of '"\\"\\"\\"...' to the end, time growing with the square
#: of the text (a 20 kB address header took 5 s to lint).
QUOTED = re.compile(r'"(?:[^"\\]|\\.)*("?)')
COMMENT = re.compile(r"\((?:[^()\\]|\\.)*(\)?)")


def replace_closed(
    pattern: re.Pattern[str], replacement: str | Callable[[str], str], text: str
) -> str:
    """``text`` with each closed quoted string (or comment) that ``pattern``
    (`QUOTED`, `COMMENT`) finds replaced by ``replacement`` (or what it
    gives for it), as a search for the closed form alone replaces them;
    what is not closed stays as it is."""

    def replaced(match: re.Match[str]) -> str:
        if not match.group(1):
            return match.group()
        return (
            replacement if isinstance(replacement, str) else replacement(match.group())
        )

    return pattern.sub(replaced, text)


#: The standard library's, as it was on import: what `parse_params` equals.
STDLIB_PARSEPARAM: Callable[[str], list[str]] = email.message._parseparam  # type: ignore[attr-defined]


def parse_params(s: str) -> list[str]:
    """`email.message._parseparam`, with the same result, in time linear in
    the value's length.

    The standard library's slices the rest of the value off after every
    ";", and counts the quotes again from the parameter's start at every
    ";" inside an open quote: a 50 kB ``a=";;;...`` took 10.6 s to read a
    message's text, 800 kB of ``;a=x`` parameters 14 s. Here an index moves
    on and the quote count is carried over (a ``\\"`` pair never spans a
    ";", so counting the pieces adds up to counting the whole).
    """
    s = ";" + str(s)
    params: list[str] = []
    position, length = 0, len(s)
    while position < length and s[position] == ";":
        start = position + 1
        end = s.find(";", start)
        counted, quotes = start, 0
        while end > start:
            quotes += s.count('"', counted, end) - s.count('\\"', counted, end)
            counted = end
            if quotes % 2 == 0:
                break
            end = s.find(";", end + 1)
        if end < 0:
            end = length
        field = s[start:end]
        if "=" in field:
            at = field.index("=")
            field = field[:at].strip().lower() + "=" + field[at + 1 :].strip()
        params.append(field.strip())
        position = end
    return params


@functools.cache  # once per process
def linear_params() -> None:
    """Have the email package split MIME parameters with `parse_params`:
    the same result, in linear time, for the sink's parses and mail-parser's
    alike; for any other user in the process nothing changes but the time."""
    if getattr(email.message, "_parseparam", None) is STDLIB_PARSEPARAM:
        email.message._parseparam = parse_params  # type: ignore[attr-defined]
