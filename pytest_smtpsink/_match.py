"""Criteria: what a test asks of a message, and why a message is not it.

A criterion value is a `str` (equality for addresses, subjects and header
values; "contains" for bodies), a compiled regex (search), or a callable
(a predicate on the field's value). A predicate that raises becomes a
`CriterionError` naming the criterion and the message.
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Union

from ._message import (
    Address,
    Attachment,
    Message,
    message_label,
    normalize_address,
    raw_header_values,
    summary_or_raw,
)
from ._mime import getaddresses
from ._text import join_shortened, printable, shorten

if TYPE_CHECKING:
    from typing_extensions import Unpack  # noqa: F401  (re-exported for signatures)

Matcher = Union[str, "re.Pattern[str]", Callable[[Any], bool]]
AttachmentMatcher = Union[str, bytes, "re.Pattern[str]", Callable[[Attachment], bool]]


class Criteria(TypedDict, total=False):
    """Keyword criteria accepted by every query and assertion."""

    from_: Matcher
    to: Matcher
    cc: Matcher
    reply_to: Matcher
    subject: Matcher
    header: Mapping[str, Matcher]
    text: Matcher
    html: Matcher
    body: Matcher
    attachment: AttachmentMatcher
    mail_from: Matcher
    rcpt_to: Matcher


CRITERIA_NAMES: tuple[str, ...] = tuple(Criteria.__annotations__)


class CriterionError(Exception):
    """A predicate given as a criterion raised. The message names the
    criterion, the message it was asked about and the value it was given;
    the predicate's own exception is the ``__cause__``."""

    # Tracebacks name it as users import it, not by this private module.
    __module__ = "pytest_smtpsink"


#: Names people reach for, and the criteria they mean (spelling slips are
#: left to difflib).
_MEANT = {
    "form": "from_=",
    "sender": "from_= or mail_from=",
    "recipient": "to= or rcpt_to=",
    "recipients": "to= or rcpt_to=",
    "bcc": "rcpt_to= (Bcc recipients are only in the envelope)",
}


def check_names(
    criteria: Mapping[str, object], own: Sequence[str] = (), *, in_query: bool = False
) -> None:
    """Raise TypeError for an unknown criterion, or a value of a type no
    criterion takes, saying what it takes. ``own``: the calling method's
    own keyword arguments (``count``, ``timeout``), which a misspelt one
    (``tiemout=``) is compared with too. ``in_query``: the criteria came in
    a URL's query (the live view's ``/api/wait``), whose client can pass no
    callable: the advice leaves it out."""
    __tracebackhide__ = True
    unknown = [name for name in criteria if name not in CRITERIA_NAMES]
    if unknown:
        hint = ""
        first = unknown[0].lower()  # Subject=, From= as the headers are spelt
        if "from" in (name.lower() for name in unknown):
            hint = " ('from' is a keyword in Python: use from_=)"
        elif first in _MEANT:
            hint = f" (did you mean {_MEANT[first]}?)"
        else:
            close = difflib.get_close_matches(first, [*CRITERIA_NAMES, *own], 1, 0.75)
            if close:
                hint = f" (did you mean {close[0]}=?)"
        raise TypeError(
            f"unknown criteria {', '.join(map(repr, unknown))}{hint}; "
            f"valid criteria are: {', '.join(CRITERIA_NAMES)}"
        )
    for name, value in criteria.items():
        if name == "header":
            _check_header_criterion(value)
        else:
            _check_value(name, value, in_query=in_query)


def _check_value(
    name: str, value: object, where: str = "", *, in_query: bool = False
) -> None:
    """A criterion's value is a str, a regex of str or a callable (bytes
    too for ``attachment``): anything else would fail deep in matching, or
    never match and say nothing."""
    __tracebackhide__ = True
    what = where or f"{name}="
    if isinstance(value, re.Pattern):
        if isinstance(value.pattern, str):
            return
        problem = "a regex of bytes; compile a str pattern"
    elif isinstance(value, str):
        if name in _ADDRESS_FIELDS and ("," in value or ";" in value):
            _check_one_address(name, value, in_query)
        local, at, domain = value.strip().strip("<>").rpartition("@")
        if name in _ADDRESS_FIELDS and at and not (local and domain):
            # "ann@" (a template's empty domain) matched nothing, silently.
            raise TypeError(
                f"{what} takes an address; {value!r} has nothing "
                f"{'after' if local else 'before'} its @"
            )
        return
    elif (name == "attachment" and isinstance(value, bytes)) or callable(value):
        return
    elif isinstance(value, (list, tuple, set, frozenset)) and name in _ADDRESS_FIELDS:
        several = _as_found(name, value)
        if name in _SENDERS:
            advice = (
                f"a message has one sender; give it ({name}='a@example.com'), "
                f"or for any of several pass a callable ({name}=lambda found: "
                f"found in {several!r})"
            )
        else:
            advice = (
                f"an address matches when it is among the message's; for "
                f"several, assert each ({name}='a@example.com'), or pass a "
                f"callable ({name}=lambda found: all(a in found for a in "
                f"{several!r}))"
            )
        problem = f"a {type(value).__name__}: {advice}{_EXACT.get(name, '')}"
    elif isinstance(value, bytes):
        problem = "bytes; give text (decode it)"
    elif value is None:
        problem = (
            f"None; to match a message without one, pass a callable "
            f"({name}=lambda value: not value)"
        )
    else:
        problem = f"{type(value).__name__} {shorten(repr(value), 60)}"
    accepted = "a str, bytes" if name == "attachment" else "a str"
    raise TypeError(
        f"{what} takes {accepted}, a compiled regex or a callable; got {problem}"
    )


#: The criteria of a message's one sender (a From of several authors is
#: matched by any of them, as the list criteria are).
_SENDERS = ("from_", "mail_from")
#: What the advice of a callable adds for the envelope's addresses, which
#: a predicate gets as the client sent them.
_EXACT = dict.fromkeys(
    ("mail_from", "rcpt_to"),
    " (its predicate gets the addresses as the client sent them, compared "
    "exactly: give them as sent)",
)


def _as_found(name: str, values: Iterable[object]) -> list[object]:
    """``values`` as a predicate of ``name`` finds them: the envelope holds
    bare addresses, so a display name (``"Ann <ann@example.com>"``) would
    never be among them; nor would ``"<>"``, the null sender, found as
    ``""``."""
    if name not in _EXACT:
        return list(values)
    bare: list[object] = []
    for value in values:
        if name == "mail_from" and value == "<>":
            # The null sender, which a predicate gets as "".
            bare.append("")
            continue
        parsed = getaddresses([value]) if isinstance(value, str) else []
        bare.append(parsed[0][1] if len(parsed) == 1 and parsed[0][1] else value)
    return bare


def _check_one_address(name: str, value: str, in_query: bool = False) -> None:
    """An address criterion names one address. A string of several
    (``to="ann@example.com, bob@example.com"``) would be compared by its
    first address only, and pass without the others; a display name with
    an unquoted comma (``"Doe, John <john@example.com>"``) would be compared
    as ``Doe``, and never match."""
    __tracebackhide__ = True
    found = [address for _, address in getaddresses([value]) if address]
    if len(found) < 2:
        return
    listed = ", ".join(repr(address) for address in found)
    if all("@" in address for address in found) and in_query:
        advice = (
            f"a message has one sender: give it ({name}={found[0]})"
            if name in _SENDERS
            # An address matches when it is among the message's.
            else f"give one ({name}={found[0]}): a message matches when that "
            "address is among its recipients"
        )
    elif all("@" in address for address in found) and name in _SENDERS:
        advice = (
            f"a message has one sender; give it ({name}={found[0]!r}), or for "
            f"any of several pass a callable ({name}=lambda found: found in "
            f"{found!r}){_EXACT.get(name, '')}"
        )
    elif all("@" in address for address in found):
        advice = (
            f"for several, assert each ({name}={found[0]!r}), or pass a callable "
            f"({name}=lambda found: all(a in found for a in {found!r}))"
            f"{_EXACT.get(name, '')}"
        )
    else:
        advice = (
            "a display name with a comma needs quotes, as in a header "
            """('"Doe, John" <john@example.com>')"""
        )
    raise TypeError(
        f"{name}= takes one address; {shorten(value, 200)!r} names "
        f"{len(found)}: {shorten(listed, 300)}; {advice}"
    )


def _check_header_criterion(value: object) -> None:
    __tracebackhide__ = True
    if not isinstance(value, Mapping):
        raise TypeError(
            "header= takes a dict of header names and values "
            f"(header={{'X-Mailer': 'app'}}); got {type(value).__name__} "
            f"{shorten(repr(value), 60)}"
        )
    if not value:
        # It matched every message: assert_sent(header={}) always passed.
        raise TypeError(
            "header= takes at least one header (header={'X-Mailer': 'app'}); got {}"
        )
    for header, wanted in value.items():
        if not isinstance(header, str):
            raise TypeError(f"header= names headers with str keys; got {header!r}")
        _check_value("header", wanted, f"header={{{header!r}: ...}}")


def describe(criteria: Mapping[str, object]) -> str:
    """``to='ann@example.com', subject=re.compile('Wel')``"""
    return ", ".join(f"{name}={_show(value)}" for name, value in criteria.items())


#: Characters of a wanted text a failure shows: a test comparing with a
#: whole fixture file (text=expected_body) printed it twice, whole.
_WANTED_SHOWN = 200


def _show(value: object) -> str:
    if isinstance(value, re.Pattern):
        return f"re.compile({_shortened_repr(value.pattern)})"
    if callable(value) and not isinstance(value, str):
        return getattr(value, "__name__", repr(value))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_show(v)}" for k, v in value.items()) + "}"
    return _shortened_repr(value)


def _shortened_repr(value: object) -> str:
    """``repr(value)``; a long text's first characters and a count."""
    if isinstance(value, (str, bytes)) and len(value) > _WANTED_SHOWN:
        rest = len(value) - _WANTED_SHOWN
        return f"{value[:_WANTED_SHOWN]!r}... [{rest} more characters]"
    return repr(value)


# -- evaluation ------------------------------------------------------------------


def matches(message: Message, criteria: Mapping[str, Any]) -> bool:
    __tracebackhide__ = True  # a predicate's error shows the test's frames
    return not mismatches(message, criteria, stop_at_first=True)


def select(messages: Iterable[Message], criteria: Mapping[str, Any]) -> list[Message]:
    """The ``messages`` that match every criterion, in order."""
    __tracebackhide__ = True
    # A loop: before Python 3.12 a comprehension runs in a frame of its own,
    # which no __tracebackhide__ covers.
    found = []
    for message in messages:
        if matches(message, criteria):
            found.append(message)
    return found


def mismatches(
    message: Message, criteria: Mapping[str, Any], stop_at_first: bool = False
) -> list[str]:
    """The names of the criteria ``message`` fails, in the given order."""
    __tracebackhide__ = True
    failed = []
    for name, wanted in criteria.items():
        if not _check(message, name, wanted):
            failed.append(name)
            if stop_at_first:
                break
    return failed


_ADDRESS_FIELDS: dict[str, Callable[[Message], tuple[str, ...]]] = {
    # Every author: RFC 5322 allows several in From (with a Sender).
    "from_": lambda m: m._addresses("From"),
    "to": lambda m: m.to,
    "cc": lambda m: m.cc,
    "reply_to": lambda m: m.reply_to,
    # The envelope's as the client sent them: plain strings, not Address.
    # Address hashes by its normalized form, so a predicate's set or dict of
    # the exact strings ({"app@Example.COM"}) missed it; and the str and
    # regex criteria normalize these themselves.
    "mail_from": lambda m: (m.envelope.mail_from,),
    "rcpt_to": lambda m: m.envelope.rcpt_to,
}


def likeness(message: Message, criteria: Mapping[str, Any]) -> float:
    """How near ``message``'s subject and addresses come to the strings
    ``criteria`` ask for (0 to 1 each, summed): what tells "closest" apart
    among messages that miss as many criteria (one criterion, and every
    message misses it). Bodies are left out: "contains" has no nearness
    worth its cost."""
    total = 0.0
    values: tuple[str, ...]
    for name, asked in criteria.items():
        if not isinstance(asked, str) or not asked:
            continue
        if name == "subject":
            wanted, values = asked, (str(field_value(message, name) or ""),)
        elif name in _ADDRESS_FIELDS:
            wanted = normalize_address(asked)
            values = tuple(
                normalize_address(str(v)) for v in _ADDRESS_FIELDS[name](message)
            )
        else:
            continue
        total += max(
            (
                difflib.SequenceMatcher(None, wanted, value[:200]).ratio()
                for value in values
            ),
            default=0.0,
        )
    return total


def field_value(message: Message, name: str) -> Any:
    """What a criterion is compared against, for predicates and reports."""
    if name in _ADDRESS_FIELDS:
        found = _ADDRESS_FIELDS[name](message)
        if name in ("from_", "mail_from"):
            # One sender; None when the message has no From (as documented).
            return found[0] if found else None
        return found
    if name == "header":
        return message.headers
    if name == "attachment":
        return message.attachments
    return getattr(message, name)


def _check(message: Message, name: str, wanted: Any) -> bool:
    __tracebackhide__ = True
    if name in _ADDRESS_FIELDS:
        return _check_addresses(message, name, wanted)
    if name == "header":
        return all(
            _check_header(message, header, matcher)
            for header, matcher in wanted.items()
        )
    if name == "attachment":
        return _check_attachments(message, wanted)
    if name == "body" and not (
        callable(wanted) and not isinstance(wanted, (str, re.Pattern))
    ):
        # Either part: the test should not care how the app built the message.
        return any(_check(message, part, wanted) for part in ("text", "html"))
    value = getattr(message, name)
    if callable(wanted) and not isinstance(wanted, (str, re.Pattern)):
        return _ask(wanted, value, message, f"{name}={_show(wanted)}")
    if value is None:
        return False
    if isinstance(wanted, re.Pattern):
        return wanted.search(value) is not None
    if name == "subject":
        return bool(value == wanted)
    return wanted in value  # bodies: contains


def _check_addresses(message: Message, name: str, wanted: Any) -> bool:
    __tracebackhide__ = True
    if callable(wanted) and not isinstance(wanted, (str, re.Pattern)):
        value = field_value(message, name)
        return _ask(wanted, value, message, f"{name}={_show(wanted)}")
    # Regexes too see the normalized form (domain in lower case), so that
    # r"@example\.com$" matches "Ann@Example.COM" as a mail system would.
    values = [normalize_address(str(v)) for v in _ADDRESS_FIELDS[name](message)]
    if isinstance(wanted, re.Pattern):
        return any(wanted.search(v) for v in values)
    return normalize_address(wanted) in values


def _check_header(message: Message, header: str, wanted: Any) -> bool:
    __tracebackhide__ = True
    values = message.headers.get_all(header)
    if callable(wanted) and not isinstance(wanted, (str, re.Pattern)):
        value = values[0] if len(values) == 1 else values or None
        return _ask(wanted, value, message, f"header={{{header!r}: {_show(wanted)}}}")
    if isinstance(wanted, re.Pattern):
        return any(wanted.search(v) for v in values)
    return any(v.strip() == wanted for v in values)


def _check_attachments(message: Message, wanted: Any) -> bool:
    __tracebackhide__ = True
    for item in message.attachments:
        if isinstance(wanted, re.Pattern):
            ok = item.filename is not None and wanted.search(item.filename) is not None
        elif isinstance(wanted, bytes):
            ok = item.content == wanted
        elif isinstance(wanted, str):
            ok = wanted in (item.filename, item.content_type) or (
                # The name as the application wrote it: mail-parser gives
                # it composed (NFC), and macOS file systems give names
                # decomposed (NFD), "a" and a combining diaeresis for "ä".
                item.filename is not None
                and unicodedata.normalize("NFC", wanted)
                == unicodedata.normalize("NFC", item.filename)
            )
        else:
            ok = _ask(wanted, item, message, f"attachment={_show(wanted)}")
        if ok:
            return True
    return False


def _ask(
    predicate: Callable[[Any], object], value: object, message: Message, criterion: str
) -> bool:
    """``predicate(value)`` as a bool. If it raises, a `CriterionError`
    says which criterion, on which message and with what value (None, most
    often: a field the message lacks), with the exception chained: a bare
    ``AttributeError`` from a lambda names none of them."""
    __tracebackhide__ = True
    try:
        return bool(predicate(value))
    except Exception as error:
        raise CriterionError(
            _predicate_failure(criterion, value, message, error)
        ) from error


def _predicate_failure(
    criterion: str, value: object, message: Message, error: Exception
) -> str:
    given = shorten(printable(repr(value)), 200)
    if value is None:
        given += " (the message has no such field)"
    return (
        f"the criterion {criterion} raised {type(error).__name__}: "
        f"{shorten(printable(str(error)), 300)}\n"
        f"  on message {summary_or_raw(message)}\n"
        f"  called with {given}"
    )


# -- explaining a mismatch -----------------------------------------------------------


def explain(message: Message, name: str, wanted: object = None) -> str:
    """What ``message`` has in the field of a failed criterion (``wanted``:
    the criterion's value, which for ``header=`` names the headers to show)."""
    if name in _ADDRESS_FIELDS:
        values = _ADDRESS_FIELDS[name](message)
        if isinstance(wanted, re.Pattern):
            # What the regex searched: the bare addresses, normalized. "Ann
            # <ann@example.com>" seemed to match re.compile("^Ann").
            shown = [normalize_address(str(v)) for v in values]
        else:
            shown = [v.formatted if isinstance(v, Address) else str(v) for v in values]
        if name in ("from_", "mail_from") and len(shown) <= 1:
            return repr(shown[0]) if shown else "none"
        return _listed(shown, wanted)
    if name == "header":
        return _explain_headers(message, wanted)
    if name == "attachment":
        attachments = [repr(a) for a in message.attachments]
        return _listed(attachments, quoted=False) if attachments else "no attachments"
    value = getattr(message, name)
    if value is None:
        return f"no {name} part" if name in ("text", "html") else "none"
    if name == "subject" and isinstance(value, str) and isinstance(wanted, str):
        return _shown_where_it_differs(value, wanted)  # subject= means equal
    return repr(shorten(value, 200))


#: At most this many items of a list in a "differs in" line: 300 recipients
#: made one line of 6,000 characters.
_LISTED_ITEMS = 10


def _listed(items: list[str], wanted: object = None, *, quoted: bool = True) -> str:
    """``items`` as a list (each one's repr when ``quoted``), the first
    `_LISTED_ITEMS` of a longer one and a count; with the item closest to
    a ``wanted`` string if it is not among those shown (a near miss in the
    250th recipient)."""
    shown = [repr(item) if quoted else item for item in items[:_LISTED_ITEMS]]
    more = len(items) - len(shown)
    text = f"[{', '.join(shown)}{f', ... (+{more:,} more)' if more else ''}]"
    if more and isinstance(wanted, str):
        import difflib

        close = difflib.get_close_matches(wanted, items, n=1, cutoff=0.6)
        if close and close[0] not in items[:_LISTED_ITEMS]:
            text += f"; the closest: {close[0]!r}"
    return text


def _as_written_in_html(wanted: str, markup: str) -> str:
    """How ``markup`` writes ``wanted`` with character references
    (``Jerry&#39;s`` for ``Jerry's``, ``&amp;``, ``&#x27;``, ``&apos;``):
    the spelling a test can match; "" if not found (or too long to look:
    a wanted text of one letter repeated took seconds on 1 MB of HTML, in
    a report a wait may build at each try)."""
    if len(wanted) > 500 or len(markup) > 100_000:
        return ""
    names = _entity_names()
    pattern = "".join(
        "(?:"
        + "|".join(
            [
                re.escape(char),
                f"&#0*{ord(char)};",
                f"(?i:&#x0*{ord(char):x};)",
                *names.get(char, []),
            ]
        )
        + ")"
        for char in wanted
    )
    found = re.search(pattern, markup)
    return found.group() if found is not None else ""


@functools.cache
def _entity_names() -> dict[str, list[str]]:
    """Each character's named references (``'`` -> ``&apos;``), as patterns:
    built once (2,000 names), not at each hint."""
    import html.entities

    names: dict[str, list[str]] = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";") and len(char) == 1:
            names.setdefault(char, []).append(re.escape(f"&{name}"))
    return names


def wanted_shown(message: Message, name: str, wanted: object) -> str:
    """A failed criterion's value beside what ``message`` has (`explain`):
    a long subject cut where the two differ, as that side is."""
    value = getattr(message, name) if name == "subject" else None
    if isinstance(value, str) and isinstance(wanted, str):
        return _shown_where_it_differs(wanted, value, other="received")
    return _show(wanted)


def _shown_where_it_differs(
    value: str, wanted: str, limit: int = 200, other: str = "wanted"
) -> str:
    """``value``, cut to about ``limit`` characters around where it first
    differs from ``wanted``: cut from its start, a long subject that
    differs at its end would never show the difference. ``other`` names
    ``wanted`` in the text."""
    at = next(
        (
            i
            for i, (got, want) in enumerate(zip(value, wanted, strict=False))
            if got != want
        ),
        min(len(value), len(wanted)),
    )
    if len(value) <= limit or at < limit - 50:
        return repr(shorten(value, limit))
    start = at - 50
    window = value[start : start + limit]
    rest = len(value) - start - len(window)
    return f"[{start} characters as {other}, then] {window!r}" + (
        f"... [{rest} more characters]" if rest > 0 else ""
    )


def _explain_headers(message: Message, wanted: object) -> str:
    """The values of the headers a failed ``header=`` criterion asked for
    (``X-Mailer: 'app 1.0'``), not only their names: the value is what the
    test got wrong. Headers it did not find add the names the message has."""
    names = join_shortened([printable(name) for name in message.headers], 30)
    if not isinstance(wanted, Mapping) or not names:
        return f"headers {names}" if names else "no headers"
    shown, missing = [], False
    for header, matcher in wanted.items():
        if _check_header(message, header, matcher):
            continue
        values = message.headers.get_all(header)
        if values:
            found = ", ".join(repr(shorten(v, 200)) for v in values)
            shown.append(f"{printable(header)}: {found}")
        else:
            shown.append(f"no {printable(header)} header")
            missing = True
    text = "; ".join(shown) if shown else f"headers {names}"
    return f"{text} (headers: {names})" if missing else text


#: A message's label in a hint, as `_named` marks it (``\x03#12\x03``): not a
#: "#12" of a subject or a criterion's value.
_LABEL = re.compile("\x03(#\\d+)\x03")
#: Distinct hints a report gives at most.
_MOST_HINTS = 8
#: What a hint says of its message alone (`_detail`), which hints giving the
#: same advice for several messages leave out of the comparison.
_DETAIL = re.compile("\x01(.*?)\x02", re.DOTALL)


def _detail(text: str) -> str:
    """``text`` marked as what a hint says of its message alone: personal
    subjects ("Welcome, user 7") made the same advice one hint each."""
    return f"\x01{text}\x02"


def hints(messages: tuple[Message, ...], criteria: Mapping[str, Any]) -> list[str]:
    """Likely mistakes, phrased as advice: one per mistake, naming every
    message it is about (25 messages with one subject gave 25 hints that
    differed only in the number, past the 20 the report lists), and at
    most `_MOST_HINTS` of them."""
    # By the advice: the hint without its message's label and details.
    groups: dict[str, tuple[str, list[str]]] = {}
    for text in _hints_each(messages, criteria):
        label = _LABEL.search(text)
        if label is None:  # a deliver() message: named by no number
            groups.setdefault(text, (text, []))
            continue
        key = f"{text[: label.start()]}\x00{text[label.end() :]}"
        _, labels = groups.setdefault(_DETAIL.sub("\x01\x02", key), (text, []))
        labels.append(label.group(1))
    found = []
    for first, labels in groups.values():
        others = list(dict.fromkeys(labels[1:]))
        found.append(
            _LABEL.sub(r"\1", _DETAIL.sub(r"\1", first))
            + (f" (so do {join_shortened(others)})" if others else "")
        )
    if len(found) > _MOST_HINTS:
        left = len(found) - (_MOST_HINTS - 1)
        found[_MOST_HINTS - 1 :] = [f"... and {left} more hints"]
    return found


def _hints_each(
    messages: tuple[Message, ...], criteria: Mapping[str, Any]
) -> list[str]:
    """`hints`, one per message it is about."""
    found = []
    for name in ("to", "cc"):
        wanted = criteria.get(name)
        if not isinstance(wanted, str):
            continue
        target = normalize_address(wanted)
        for message in messages:
            in_envelope = any(
                normalize_address(a) == target for a in message.envelope.rcpt_to
            )
            if not in_envelope and _check_addresses(message, "reply_to", wanted):
                # Where a reply goes, written where a recipient would be.
                found.append(
                    f"{wanted} is {_named(message)}'s Reply-To, not a recipient: "
                    f"use reply_to={wanted!r}"
                )
            if not in_envelope or _check_addresses(message, name, wanted):
                continue
            # The header it is in, if one is: a Cc given as to=.
            other = "cc" if name == "to" else "to"
            if _check_addresses(message, other, wanted):
                found.append(
                    f"{wanted} is in {_named(message)}'s {other!r} header, "
                    f"not its {name!r} one: use {other}={wanted!r}"
                )
            else:
                found.append(
                    f"{wanted} received {_named(message)} but is not in its {name!r} "
                    "header (a Bcc, or a different header): match envelope "
                    f"recipients with rcpt_to={wanted!r}"
                )
    # The envelope's sender for the header's, or the other way round: a
    # bounce address (MAIL FROM) is rarely the From a reader sees.
    for name, other in (("from_", "mail_from"), ("mail_from", "from_")):
        wanted = criteria.get(name)
        if not isinstance(wanted, str):
            continue
        for message in messages:
            if not _check_addresses(message, name, wanted) and _check_addresses(
                message, other, wanted
            ):
                what = "envelope sender (MAIL FROM)" if other == "mail_from" else "From"
                found.append(
                    f"{wanted} is {_named(message)}'s {what}: use {other}={wanted!r}"
                )
    for name, addresses_of in _ADDRESS_FIELDS.items():
        wanted = criteria.get(name)
        if not isinstance(wanted, str):
            continue
        if "@" not in wanted:
            found.extend(_display_name_hints(messages, name, wanted))
        target = normalize_address(wanted)
        for message in messages:
            values = [normalize_address(str(a)) for a in addresses_of(message)]
            other_case = [
                v for v in values if v != target and v.lower() == target.lower()
            ]
            if other_case:
                pattern = repr(f"^{re.escape(target)}$")
                found.append(
                    f"{name}= compares the part before @ case-sensitively (RFC "
                    f"5321): {_named(message)} has {other_case[0]!r}; use "
                    f"re.compile({pattern}, re.IGNORECASE)"
                )
                continue
            subaddressed = [v for v in values if _base_address(v) == target]
            if subaddressed and target not in values:
                local, _, domain = target.rpartition("@")
                pattern = repr(f"^{re.escape(local)}(\\+[^@]*)?@{re.escape(domain)}$")
                found.append(
                    f"{_named(message)} has {_detail(repr(subaddressed[0]))}, a "
                    f"subaddress of {target} (the part after + names a "
                    f"folder or a list); for either, use {name}=re.compile({pattern})"
                )
    for name, other in (("text", "html"), ("html", "text")):
        wanted = criteria.get(name)
        if not isinstance(wanted, (str, re.Pattern)):
            continue
        for message in messages:
            if _check(message, other, wanted) and not _check(message, name, wanted):
                found.append(
                    f"{_named(message)} has it in its {other} part, not its {name} "
                    "part: use body= to match either"
                )
    wanted = criteria.get("subject")
    if isinstance(wanted, str) and wanted:  # "" is in every subject
        pattern = repr(re.escape(wanted))
        for message in messages:
            subject = message.subject or ""
            if subject == wanted:
                continue
            if wanted in subject:
                found.append(
                    f"subject= means equal: {_named(message)}'s subject "
                    f"{_detail(repr(subject))} only contains it; use "
                    f"re.compile({pattern})"
                )
            elif wanted.lower() in subject.lower():
                which = (
                    "is the same text"
                    if wanted.lower() == subject.lower()
                    else "contains it"
                )
                found.append(
                    f"subject= is case-sensitive: {_named(message)}'s subject "
                    f"{_detail(repr(subject))} {which} in another case; use "
                    f"re.compile({pattern}, re.IGNORECASE)"
                )
            elif _spaced(subject) == _spaced(wanted):
                folded = " (a folded header keeps its tab)" if "\t" in subject else ""
                found.append(
                    f"{_named(message)}'s subject {_detail(repr(subject))} differs "
                    f"from it only in spaces, tabs or line breaks{folded}; use "
                    f"re.compile({_spaced_pattern(wanted)!r})"
                )
            elif unicodedata.normalize("NFC", subject) == unicodedata.normalize(
                "NFC", wanted
            ):
                # The two look the same when printed: ascii() shows how.
                found.append(
                    f"{_named(message)}'s subject differs from it only in how "
                    "accented letters are written (Unicode normalization): "
                    f"{subject!a} against {wanted!a}; compare "
                    "unicodedata.normalize('NFC', ...) of each"
                )
    if isinstance(wanted, str) and "=?" in wanted:
        found.extend(_encoded_subject_hints(messages, wanted))
    headers = criteria.get("header")
    for name, wanted in headers.items() if isinstance(headers, Mapping) else ():
        if not isinstance(wanted, str) or not wanted.strip():
            continue
        for message in messages:
            values = message.headers.get_all(name)
            if any(v.strip() == wanted.strip() for v in values):
                continue
            spaced = next((v for v in values if _spaced(v) == _spaced(wanted)), None)
            if spaced is not None:
                folded = " (a folded header keeps its tab)" if "\t" in spaced else ""
                found.append(
                    f"{_named(message)}'s {name} header is {spaced!r}, which "
                    f"differs from it only in spaces, tabs or line breaks{folded}; "
                    f"use re.compile({_spaced_pattern(wanted)!r})"
                )
    found.extend(_body_hints(messages, criteria))
    found.extend(_undecodable_header_hints(messages, criteria))
    found.extend(_line_end_hints(messages, criteria))
    found.extend(_attachment_case_hints(messages, criteria))
    return found


#: The header field each header criterion reads.
_HEADER_OF = {
    "subject": "Subject",
    "from_": "From",
    "to": "To",
    "cc": "Cc",
    "reply_to": "Reply-To",
}


def _undecodable_header_hints(
    messages: tuple[Message, ...], criteria: Mapping[str, Any]
) -> Iterable[str]:
    """A header the test asks about whose bytes are not UTF-8 (a raw
    Latin-1 ``Grüße``): it reads as U+FFFD, and the report alone hid that
    the application, not the test, is wrong, and which bytes it sent."""
    # Each field with the check that reads it; a predicate is left out
    # (a hint never runs the test's own code), and so is an ASCII value:
    # undecodable bytes cannot be why "Hello" was not found.
    checks = [
        (field, name, criteria[name])
        for name, field in _HEADER_OF.items()
        if _not_ascii(criteria.get(name))
    ]
    headers = criteria.get("header")
    if isinstance(headers, Mapping):
        checks.extend(
            (field, "header", {field: wanted})
            for field, wanted in headers.items()
            if isinstance(field, str) and _not_ascii(wanted)
        )
    for message in messages:
        for name, criterion, wanted in checks:
            values = message.headers.get_all(name)
            if not any("\ufffd" in v for v in values) or _check(
                message, criterion, wanted
            ):
                continue
            for value in raw_header_values(message.raw, name):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    sent = value.decode("utf-8", "backslashreplace")
                    yield (
                        f"{_named(message)}'s {name} header has bytes that are "
                        f"not UTF-8, read as '\ufffd': '{_detail(shorten(printable(sent), 80))}' "
                        "as sent. Non-ASCII header text must be RFC 2047 "
                        "encoded (or UTF-8, with SMTPUTF8): the application "
                        "wrote it raw in another charset"
                    )
                    break


def _not_ascii(wanted: object) -> bool:
    """Whether raw 8-bit header bytes could have kept ``wanted`` from
    matching: text with a character past ASCII, or any pattern (whose
    ``\\xf6`` or ``\\w`` may be meant for one)."""
    if isinstance(wanted, re.Pattern):
        return True
    return isinstance(wanted, str) and not wanted.isascii()


def _attachment_case_hints(
    messages: tuple[Message, ...], criteria: Mapping[str, Any]
) -> Iterable[str]:
    """``attachment=`` a file name that an attachment has in another case
    (``terms.PDF`` for ``terms.pdf``), as ``subject=`` says it."""
    wanted = criteria.get("attachment")
    if not isinstance(wanted, str) or not wanted:
        return
    for message in messages:
        for item in message.attachments:
            name = item.filename
            if name is not None and name != wanted and name.lower() == wanted.lower():
                pattern = repr(f"^{re.escape(wanted)}$")
                yield (
                    f"attachment= is case-sensitive: {_named(message)} has "
                    f"{name!r}; use re.compile({pattern}, re.IGNORECASE)"
                )
                break


def _line_end_hints(
    messages: tuple[Message, ...], criteria: Mapping[str, Any]
) -> Iterable[str]:
    """``attachment=`` bytes that a text attachment has with CRLF line ends:
    text parts travel over SMTP with CRLF, so a file attached with LF ends
    arrives with CRLF ones, and the bytes differ."""
    wanted = criteria.get("attachment")
    if not isinstance(wanted, bytes) or b"\n" not in wanted:
        return
    lf = wanted.replace(b"\r\n", b"\n")
    for message in messages:
        for item in message.attachments:
            if item.content != wanted and item.content.replace(b"\r\n", b"\n") == lf:
                yield (
                    f"{_named(message)}'s attachment {item.filename!r} "
                    f"({printable(item.content_type)}) has it with CRLF line "
                    "ends, as text parts travel over SMTP: compare with "
                    "wanted.replace(b'\\n', b'\\r\\n'), or the "
                    "content with .replace(b'\\r\\n', b'\\n')"
                )
                break


def _base_address(address: str) -> str:
    """``ann+news@example.com`` without its subaddress: ``ann@example.com``
    (``+`` as Gmail, Postfix's recipient_delimiter and Sieve's subaddress
    extension take it; the address itself when it has none)."""
    local, at, domain = address.rpartition("@")
    base, plus, _ = local.partition("+")
    return f"{base}{at}{domain}" if plus and base else address


def _encoded_subject_hints(messages: tuple[Message, ...], wanted: str) -> list[str]:
    """For ``subject=`` given as the header's RFC 2047 encoded words
    (``=?utf-8?q?Gr=C3=BC=C3=9Fe?=``, copied from the raw message): the
    messages whose Subject is written so, and what it reads."""
    found = []
    for message in messages:
        subject = message.subject
        if subject is None or subject == wanted:
            continue
        written = [
            value.decode("ascii", "replace").strip()
            for value in raw_header_values(message.raw, "Subject")
        ]
        if " ".join(wanted.split()) in (" ".join(value.split()) for value in written):
            found.append(
                f"subject= compares the decoded subject: {_named(message)}'s "
                "Subject header is written with those RFC 2047 encoded words, "
                f"which read {_detail(repr(subject))}; use subject={subject!r}"
            )
    return found


def _display_name_hints(
    messages: tuple[Message, ...], name: str, wanted: str
) -> list[str]:
    """For an address criterion given a display name (``to="Ann Smith"``,
    ``from_="Example App"``): the messages whose addresses carry it."""
    asked = " ".join(wanted.split()).casefold()
    found = []
    for message in messages:
        carrying = [
            address
            for address in _ADDRESS_FIELDS[name](message)
            if isinstance(address, Address)
            and address.name
            and " ".join(address.name.split()).casefold() == asked
        ]
        if not carrying:
            continue
        address = carrying[0]
        test = (
            # None for a message without a From: found.name raised there.
            f"found is not None and found.name == {address.name!r}"
            if name in _SENDERS
            else f"any(a.name == {address.name!r} for a in found)"
        )
        found.append(
            f"{wanted!r} is a display name ({_named(message)} has "
            f"{_detail(repr(address.formatted))}): {name}= compares addresses; "
            f"use {name}={str(address)!r}, or match the name with "
            f"{name}=lambda found: {test}"
        )
    return found


def _named(message: Message) -> str:
    """A message as hints name it: ``#3``, or ``the deliver() message`` for
    one that never crossed SMTP (numbered 0)."""
    label = message_label(message)
    # Marked for `hints`, which groups by the rest and takes the marks off.
    return f"\x03{label}\x03" if message.number else f"the {label} message"


def _spaced(text: str) -> str:
    """``text`` with each run of spaces, tabs and line breaks made one space."""
    return " ".join(text.split())


def _body_hints(
    messages: tuple[Message, ...], criteria: Mapping[str, Any]
) -> Iterable[str]:
    """A body's text that is there but written otherwise: wrapped or spaced
    differently (an app that wraps at 72 columns), or, in HTML, escaped
    (``&amp;`` for ``&``, as every template engine writes it)."""
    import html

    for name in ("text", "html", "body"):
        wanted = criteria.get(name)
        if not isinstance(wanted, str) or not wanted.strip():
            continue
        # text= too looks in the HTML: words there only escaped got no hint.
        parts = ("html",) if name == "html" else ("text", "html")
        for message in messages:
            if _check(message, name, wanted):
                continue
            for part in parts:
                value = getattr(message, part)
                if not value:
                    continue
                if (
                    part == "html"
                    and wanted not in value
                    and wanted in html.unescape(value)
                ):
                    written = _as_written_in_html(wanted, value)
                    how = (
                        f"escaped, as {written!r}"
                        if written
                        else "with HTML character references (such as &#39; for ')"
                    )
                    as_written = f" (html={written!r})" if written else ""
                    # text= only where the text part has it: the advice
                    # failed again where it has not.
                    or_text = (
                        ", or use text="
                        if name != "text" and _check(message, "text", wanted)
                        else ""
                    )
                    where = ", not its text part" if name == "text" else ""
                    yield (
                        f"{_named(message)}'s html part has it {how}{where}: "
                        f"match the HTML as written{as_written}{or_text}"
                    )
                elif name in (part, "body") and _spaced(wanted) in _spaced(value):
                    yield (
                        f"{_named(message)}'s {part} part has it with other "
                        "spaces or line breaks; use re.compile("
                        f"{_spaced_pattern(wanted)!r})"
                    )
                else:
                    continue
                break


def _spaced_pattern(text: str) -> str:
    """A regex for ``text`` whatever its runs of spaces and line breaks."""
    return r"\s+".join(re.escape(word) for word in text.split())
