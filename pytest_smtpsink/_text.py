"""Text helpers for everything the sink shows to people: escaping, shortening
and counting.

Plain functions without state, used on any thread (the test thread for
reports and failure messages, the standalone CLI's main thread for its
output). They change only what is displayed: stored data (raw bytes,
transcript lines as values) always stays as received.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

# What could break a printed line or fool a reader: C0 and C1 controls (ESC
# starts terminal escape sequences, VT/FF/FS/GS/RS/NEL split lines for
# str.splitlines), DEL, the Unicode line and paragraph separators, the bidi
# embeddings, overrides and isolates (they reorder what a terminal shows),
# and lone surrogates (what the stdlib makes of undecodable bytes; they
# cannot even be written to a UTF-8 stream).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)


#: The SMTP transcript's escapes of C0 controls and DEL, ``\\x01`` (for
#: ``str.translate``): every such character written the same way, tab and
#: newline included, as the bytes a client sent.
C0_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}


def printable(text: str) -> str:
    """``text`` with every control, line-separator, bidi and surrogate
    character written as a Python escape (``\\x1b``, ``\\u2028``), so that
    one value is always one line and shows as it was sent."""
    return _UNSAFE.sub(_escape, text)


#: What may come before a line's first word and not be seen: white space
#: and Unicode's default-ignorable characters (a byte order mark, a soft
#: hyphen, a zero-width space, bidi marks, variation selectors), as an
#: editor or a copied script puts them.
INVISIBLE_START = re.compile(
    r"[\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    r"\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]+"
)


def visible_start(line: str) -> str:
    """A client's line as the transcript shows it (masked and printable
    already) with the invisible characters before its first word written
    as escapes: ``\\ufeffNOOP``, a byte order mark an editor put there,
    was shown as ``NOOP`` refused with a 500."""
    if line.isascii():
        return line
    lead = INVISIBLE_START.match(line)
    if lead is None or lead.group().isascii():
        return line
    escaped = "".join(c if c.isascii() else f"\\u{ord(c):04x}" for c in lead.group())
    return escaped + line[lead.end() :]


def _escape(match: re.Match[str]) -> str:
    # repr() picks the shortest escape (\n, \x1b, \u2028) for a character.
    return repr(match.group())[1:-1]


# The surrogate escapes of undecodable bytes (``surrogateescape``).
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def printable_sent(text: str) -> str:
    """`printable` for a line as a client sent it, decoded with
    ``surrogateescape``: its bytes that are not UTF-8 written as bytes,
    ``\\xfc``, as the SMTP transcript writes them, not as the surrogates
    that stand for them (``\\udcfc``)."""
    if not text.isascii():
        text = _UNDECODABLE.sub(_byte_escape, text)
    return printable(text)


def _byte_escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()) - 0xDC00:02x}"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters]"


def argument_error(excinfo: Any) -> bool:
    """A ``__tracebackhide__`` for a helper that does real work after
    checking its arguments: its frame is hidden for a TypeError or
    ValueError (about the caller's arguments: pytest points at the
    caller's line) and shown for any other error, a bug to be seen."""
    return bool(excinfo.errisinstance((TypeError, ValueError)))


def join_shortened(items: Sequence[str], most: int = 3) -> str:
    """``items`` joined with ``", "``; past ``most`` items, the first ones
    and a count: ``"ann@example.com, bob@example.com, ... (+9,998 more)"``."""
    if len(items) <= most:
        return ", ".join(items)
    shown = max(most - 1, 1)
    return f"{', '.join(items[:shown])}, ... (+{len(items) - shown:,} more)"


def clock(moment: datetime.datetime) -> str:
    """``"14:03:07.215"``: a stored (UTC) time as the local clock reads it,
    the same in every line people read, so that it lines up with the
    application's own logs."""
    return moment.astimezone().strftime("%H:%M:%S.%f")[:-3]


def plural(count: int, noun: str) -> str:
    """``"1 message"``, ``"2 messages"``: for reports and failure text."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets as URLs write it."""
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


def shown_number(value: object) -> str:
    """``value`` for a "must be a number" error: a string of digits reads
    as a number unless its type is said ("got the str '5'")."""
    if value is None or (
        isinstance(value, (int, float)) and not isinstance(value, bool)
    ):
        return repr(value)
    shown = shown_argument(value)
    return shown if shown.startswith("a ") else f"the {type(value).__name__} {shown}"


def shown_argument(value: object, depth: int = 0) -> str:
    """A value a test passed by mistake, for an error message: its repr,
    shortened, but never a mapping's contents, which may be an ``auth``
    table given without ``auth=`` (its passwords would reach the terminal,
    junitxml and the saved report), at any depth of lists and tuples
    (``match=[USERS]``). Reprs that raise are named by type."""
    from collections.abc import Mapping, MappingView

    kind = type(value).__name__
    if isinstance(value, (Mapping, MappingView)):  # dict.items() too
        return f"{an(kind)} of {plural(len(value), 'item')} (not shown)"
    if isinstance(value, _CONTAINERS) and _holds_mapping(value, depth):
        if depth >= _DEPTH_SHOWN:
            return f"{an(kind)} of {plural(len(value), 'item')} (not shown)"
        # hide(*names) given the table: the tuple of arguments holds it.
        items = list(value)
        inner = ", ".join(shown_argument(v, depth + 1) for v in items[:_ITEMS_SHOWN])
        if len(items) > _ITEMS_SHOWN:
            inner += f", ... (+{len(items) - _ITEMS_SHOWN} more)"
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, str):
        # A URL with a password (a relay URL given without relay=): masked.
        value = _URL_PASSWORD.sub(r"\1****\2", value)
    try:
        return shorten(repr(value), 80)
    except Exception:  # a repr that raises: the type says enough
        return an(kind)


#: The password of a ``scheme://user:password@host`` URL.
_URL_PASSWORD = re.compile(r"(://[^/?#@\s]*?:)[^/?#\s]*(@)")

#: What `shown_argument` looks into, and how deep it shows them.
_CONTAINERS = (tuple, list, set, frozenset)
_DEPTH_SHOWN = 3
_ITEMS_SHOWN = 5


def _holds_mapping(value: object, depth: int) -> bool:
    from collections.abc import Mapping, MappingView

    if isinstance(value, (Mapping, MappingView)):
        return True
    if not isinstance(value, _CONTAINERS):
        return False
    # Past a few levels a container is taken to hold one: never shown.
    return depth >= 8 or any(_holds_mapping(v, depth + 1) for v in value)


def running_test() -> str:
    """The running test's node id, from the variable pytest sets (its
    ``" (call)"`` stage cut off), or "" outside a test."""
    return os.environ.get("PYTEST_CURRENT_TEST", "").rpartition(" (")[0]


def meant(value: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'starttls'?)`` for a string close to one of
    ``choices`` (a typo), else nothing."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, choices, 1, 0.75) or (
        difflib.get_close_matches(value.lower(), choices, 1, 0.75)
    )
    return f" (did you mean {close[0]!r}?)" if close else ""


def close_names(given: Iterable[str], choices: Sequence[str]) -> dict[str, str]:
    """For each of ``given`` close to one of ``choices`` (a slip of a letter
    or two), the one meant: for unknown settings and options."""
    meant = {}
    for name in given:
        close = difflib.get_close_matches(name, choices, 1, 0.75)
        # Two letters swapped in a short name ("tsl") fall below the cutoff
        # (difflib's ratio of tsl and tls is 0.67): the same letters, once
        # each, name it.
        swapped = [
            choice
            for choice in choices
            if len(choice) == len(name) and sorted(choice) == sorted(name)
        ]
        if close or len(swapped) == 1:
            meant[name] = close[0] if close else swapped[0]
    return meant


def meant_choice(value: object, choices: Sequence[str]) -> str:
    """`` (did you mean 'warning'?)`` for a slip in one of ``choices``
    (``"warnings"``, ``"eror"``), else ``""``."""
    if not isinstance(value, str):
        return ""
    meant = close_names([value.strip().lower()], choices)
    return f" (did you mean {next(iter(meant.values()))!r}?)" if meant else ""


def an(noun: str) -> str:
    """``noun`` with its article: "an int", "a dict", "an OrderedDict"."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def unescape_8bit(text: str) -> str:
    """Undo the stdlib's surrogate escapes of raw 8-bit header bytes.

    RFC 6532 (SMTPUTF8) headers are UTF-8; anything else undecodable shows
    as U+FFFD, so every value is printable. `Message.raw` keeps the bytes.
    """
    if text.isascii() or not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def unicode_domain(domain: str) -> str:
    """A lower-case domain with its A-labels read as Unicode
    (``xn--strae-oqa.de`` is ``straße.de``): what makes both spellings of
    one domain compare equal. Decoded with Punycode alone, which every IDNA
    version agrees on (they differ in how Unicode is mapped before it is
    encoded, not in decoding). A label that does not decode, or decodes to
    plain ASCII (no A-label), stays as it is."""
    if "xn--" not in domain:
        return domain
    return ".".join(map(_u_label, domain.split(".")))


def _u_label(label: str) -> str:
    if not label.startswith("xn--"):
        return label
    try:
        decoded = label[4:].encode("ascii").decode("punycode")
    except (UnicodeError, ValueError):
        return label
    return label if decoded.isascii() else decoded.lower()


#: Where a marked section (``<![CDATA[...]]>``, ``<![endif]>``) may end.
_MARKED_SECTION_END = re.compile(r"\]\s*>")


def without_unclosed_tags(markup: str) -> str:
    """``markup`` with what `html.parser` would rescan to the end of the text
    from each occurrence written as text (``&lt;``): a "<" after the last
    ">", a ``<!--`` after the last ``-->``, a ``<![`` after the last ``]>``.
    No tag, comment or section can end there, and the parser looked for an
    end from each of them again (time growing with the square of the text:
    50 kB of ``<a x `` took 15 s on Python 3.11.7, 240 kB of ``<!--x>``
    14 s). Everything before is left as it is, so a page's tags, comments
    and attributes read as before (``alt="<3"`` included)."""
    if "<" not in markup:
        return markup
    last = markup.rfind(">")
    head, tail = markup[: last + 1], markup[last + 1 :].replace("<", "&lt;")
    comment_end = head.rfind("-->")
    if head.find("<!--", comment_end + 1) >= 0:
        start = comment_end + 1 if comment_end >= 0 else 0
        head = head[:start] + head[start:].replace("<!--", "&lt;!--")
    section_ends = [m.end() for m in _MARKED_SECTION_END.finditer(head)]
    section_end = section_ends[-1] if section_ends else 0
    if head.find("<![", section_end) >= 0:
        head = head[:section_end] + head[section_end:].replace("<![", "&lt;![")
    return head + tail


#: A URL's scheme ("https:", "mailto:", "cid:"): a URL without one is
#: relative, to the document's <base href> when it has one.
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def html_base(attrs: Sequence[tuple[str, str | None]]) -> str | None:
    """The address a ``<base>`` tag's attributes set for relative URLs: its
    first ``href``, when that is an absolute http(s) URL; else None (a
    <base> with only a target sets none)."""
    href = next((value for name, value in attrs if name == "href"), None)
    href = (href or "").strip()
    return href if href.lower().startswith(("http://", "https://")) else None


def has_href(attrs: Sequence[tuple[str, str | None]]) -> bool:
    """Whether a ``<base>`` tag sets the document's base (it has an href:
    the first such tag does, whatever its value, as browsers take it)."""
    return any(name == "href" and value is not None for name, value in attrs)


def resolved(url: str, base: str | None) -> str:
    """``url`` as a mail client follows it: a relative one ("/confirm")
    joined to the HTML's ``<base href>`` (`html_base`), others as they are."""
    if base is None or not url or _SCHEME.match(url):
        return url
    return urllib.parse.urljoin(base, url)


_T = TypeVar("_T")


class Undisplayed(Generic[_T]):
    """A value kept out of tracebacks' variables (a password, an auth
    table): its repr shows nothing of it, so pytest's ``--showlocals
    --full-trace`` does not either."""

    __slots__ = ("value",)

    def __init__(self, value: _T) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<not shown>"


def normalize_user(address: str, delimiter: str | None = None) -> str:
    """The mailbox key of an address: without ``<>`` and surrounding space,
    case-insensitive as a whole (``Ann@Example.COM`` is ``ann@example.com``),
    and, with a ``delimiter`` such as ``"+"``, without the ``+detail`` part
    of the local part. A domain's A-labels are read as Unicode
    (``ann@xn--strae-oqa.de`` is ``ann@straße.de``)."""
    user = address.strip()
    if user.startswith("<") and user.endswith(">"):
        user = user[1:-1].strip()
    # lower(), not casefold(): that one also makes straße strasse, two
    # addresses, and so two recipients, of one mailbox.
    user = user.lower()
    local, at, domain = user.rpartition("@")
    if not at:
        return _without_detail(user, delimiter)
    local = _needed_quotes(local)
    return f"{_without_detail(local, delimiter)}@{unicode_domain(domain)}"


#: What a local part cannot hold unquoted but for dots (Python's email
#: parser, which reads the sink's SMTP addresses, quotes it for these).
_NEEDS_QUOTES = frozenset('()<>@,:;\\"[] \t')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _needed_quotes(local: str) -> str:
    """``local`` without quotes that it does not need: ``"ann"`` is
    ``ann``, as over SMTP (RFC 5322 3.4.1: the same local part), where
    ``"ann smith"`` keeps them. Quotes it needs are written as SMTP's
    envelope writes them, escaping only a quote and a backslash:
    ``"a\\ b"`` is ``"a b"``."""
    if len(local) < 2 or not (local.startswith('"') and local.endswith('"')):
        return local
    inner = _QUOTED_PAIR.sub(r"\1", local[1:-1])
    if not inner:
        return local
    if _NEEDS_QUOTES.intersection(inner):
        return '"' + inner.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return inner


def _without_detail(local: str, delimiter: str | None) -> str:
    """``local`` without its ``+detail``: not when nothing would be left
    (``+ann`` and ``+bob`` would share a mailbox; nor does Postfix cut it),
    and not a quoted local part (``"ann+x y"``: cut inside its quotes it was
    no address; kept whole, where Postfix cuts its unquoted form)."""
    if not delimiter or local.startswith('"'):
        return local
    base = local.split(delimiter, 1)[0]
    return base if base else local
