"""Captured mail as HTML: the save directory's ``index.html`` and pytest-html extras.

Captured mail is hostile input. Every field is HTML-escaped; the HTML part
is shown only inside an ``<iframe sandbox srcdoc=...>`` whose ``sandbox``
lacks ``allow-scripts`` (and ``allow-same-origin``, so the frame cannot reach
the page), and whose content starts with a Content-Security-Policy that
forbids every remote load; its ``<link>`` tags are made inert, as resource
hints (``dns-prefetch``, ``preconnect``) escape any CSP. The index page
itself carries a CSP without any script source: it needs no JavaScript
(``<details>`` does the folding).

How the index comes about, with or without xdist: in the test's thread, right
after `_report.save` wrote a test's files, `record_test` adds the
attachments beside them and a ``smtpsink.json`` with everything the page
shows, and marks the teardown report with that directory. The report reaches
the controller (xdist carries report attributes over), where `IndexWriter`
collects the directories and writes one ``index.html`` for the run at the
end of the session. The live view (`_live`) renders its pages with the same
functions, on its request threads. Nothing here runs on the sink's thread.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime
import html
import html.parser
import json
import re
import urllib.parse
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

from ._files import write_whole
from ._text import (
    has_href,
    html_base,
    printable,
    resolved,
    without_unclosed_tags,
)

if TYPE_CHECKING:
    import pytest

    from ._mailbox import Mailbox
    from ._message import Attachment, Message
    from ._report import Captured
    from ._session import Session

#: The file beside each test's saved mail that the index is built from.
RECORD_NAME = "smtpsink.json"
INDEX_NAME = "index.html"
#: In every page's head: how the plugin knows an index.html is its own.
GENERATOR = "pytest-smtpsink"


def foreign_index(root: Path) -> bool:
    """Whether ``root`` holds an ``index.html`` the plugin did not write,
    which writing the run's index would replace. (Its pages of before the
    generator tag had the title "Captured email".)"""
    try:
        with (root / INDEX_NAME).open("rb") as file:
            head = file.read(4096)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return (
        bool(head)  # an empty file holds nothing to lose
        and f'<meta name="generator" content="{GENERATOR}">'.encode() not in head
        and b"<title>Captured email</title>" not in head
    )


#: The attribute of a teardown report naming the test's saved directory
#: (relative to the save root). xdist serialises report attributes, so it
#: reaches the controller; pytest-html's ``extras`` travel the same way.
REPORT_ATTRIBUTE = "smtpsink_saved"
#: Raw source shown in the page; the .eml beside it keeps every byte.
RAW_LIMIT = 256 * 1024
#: Characters of the HTML part and of the text part shown; the .eml keeps
#: the rest. Gmail clips a message at 102 KB; a 20 MB HTML part took
#: minutes to render (the remote-load scan parses every tag) and made a
#: page the browser could hardly open.
PART_LIMIT = 512 * 1024
#: Remote addresses listed in the "blocked" note before "and N more".
_LISTED_REMOTE = 5

#: For the mail's own HTML: nothing remote, no scripts, no forms, no frames;
#: inline styles and data: images (and cid: parts we cannot resolve) only.
MAIL_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "font-src data:; form-action 'none'; base-uri 'none'"
)
#: For the page around it: no scripts at all. A srcdoc frame inherits this
#: policy too, so the mail's HTML is held by both.
PAGE_CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "frame-src 'self'; form-action 'none'; base-uri 'none'"
)


class AttachmentRecord(TypedDict):
    filename: str
    content_type: str
    size: int
    href: str | None


class _SavedOnly(TypedDict, total=False):
    #: True for the test's mail from before its mailbox was made (saved as
    #: ``early-NNNN-...``, not among the test's messages); only in a saved
    #: run's smtpsink.json, and only there for such mail.
    early: bool


class MessageRecord(_SavedOnly):
    number: int
    summary: str
    subject: str | None
    received_at: str
    mail_from: str
    rcpt_to: list[str]
    headers: list[tuple[str, str]]
    html: str | None
    text: str | None
    #: Characters of the HTML and the text part left out of ``html`` and
    #: ``text``: smtpsink.json keeps what the page shows (`PART_LIMIT`),
    #: the .eml every byte; the live view's API keeps the parts whole, 0
    #: (both absent from an older smtpsink.json, whose parts are whole:
    #: read them with get()).
    html_truncated: int
    text_truncated: int
    attachments: list[AttachmentRecord]
    raw: str
    raw_truncated: int
    eml_href: str | None
    defects: list[str]
    #: `Message.lint` problems, one line each: "error missing-date (header
    #: Date): no Date header".
    lint: list[str]
    #: How mail put in without SMTP came ("deliver()", "IMAP APPEND"); None
    #: for mail sent over SMTP (absent from an older smtpsink.json: get()).
    put_in: str | None
    #: The message's own images for the HTML part's ``cid:`` references, as
    #: ``data:`` URLs by Content-ID (`inline_images`; absent from an older
    #: smtpsink.json: get()).
    inline_images: dict[str, str]


class SessionRecord(TypedDict):
    title: str
    transcript: str
    href: str | None
    #: "SMTP", "POP3" or "IMAP" (absent from an older smtpsink.json, whose
    #: sessions were all SMTP: read it with get()).
    protocol: str
    #: The URL of the sink it was on, when the test had more than one (each
    #: numbers its own messages from #1, and "queued as #1" said whose
    #: only by guess); None otherwise, or absent from an older record.
    sink: str | None


class TestRecord(TypedDict):
    nodeid: str
    outcome: str
    #: Why it failed, as pytest's short test summary says it (one line,
    #: secrets masked: `_report.failure_reason`); None for a passed test.
    reason: str | None
    directory: str
    messages: list[MessageRecord]
    sessions: list[SessionRecord]
    #: Which run of the test, from 1, when a plugin reran it (absent from an
    #: older smtpsink.json: read it with get()).
    attempt: int
    #: False for the line index.html adds for a rerun test's last run that
    #: saved nothing (absent from every smtpsink.json: read it with get()).
    saved: bool


_T = TypeVar("_T")


def read_field(
    read: Callable[[], _T], default: _T, what: str, problems: list[str]
) -> _T:
    """Read one field of captured mail; a surprise becomes a noted problem.

    Message promises that no field raises; this page must appear even if a
    parser finds a way, so the reason is shown instead of the field.
    """
    try:
        return read()
    except Exception as error:
        problems.append(f"could not read the {what}: {error!r}")
        return default


# -- records: plain data from messages and sessions ----------------------------------


def attachments_of(message: Message, problems: list[str]) -> tuple[Attachment, ...]:
    found: tuple[Attachment, ...] = ()
    return read_field(lambda: message.attachments, found, "attachments", problems)


def put_in_how(message: Message) -> str | None:
    """How ``message`` came without SMTP, or None if it came over SMTP."""
    protocol = message.session.protocol
    if protocol == "SMTP":
        return None
    return "IMAP APPEND" if protocol == "IMAP" else "deliver()"


def message_record(
    message: Message,
    *,
    eml_href: str | None = None,
    attachment_hrefs: Sequence[str | None] = (),
    whole_parts: bool = False,
) -> MessageRecord:
    """What the page shows of one message, as JSON-ready data: the parts
    cut at `PART_LIMIT` as the page shows them (a saved smtpsink.json was
    as big again as the .eml beside it for large mail), unless
    ``whole_parts``."""
    problems: list[str] = []
    attachments = attachments_of(message, problems)
    hrefs = list(attachment_hrefs) + [None] * len(attachments)
    no_headers: list[tuple[str, str]] = []
    headers = read_field(
        lambda: message.headers.items_all(),  # noqa: PLW0108 (headers may raise)
        no_headers,
        "headers",
        problems,
    )
    no_text: str | None = None
    markup = read_field(lambda: message.html, no_text, "HTML part", problems)
    text = read_field(lambda: message.text, no_text, "text part", problems)
    subject = read_field(lambda: message.subject, no_text, "subject", problems)
    summary = read_field(message.summary, f"#{message.number}", "summary", problems)
    defects = read_field(
        lambda: list(message.defects), list(problems), "defects", problems
    )
    limit = None if whole_parts else PART_LIMIT
    no_lint: list[str] = []
    lint = read_field(
        # str(): the line the terminal shows, control characters escaped.
        lambda: [str(p) for p in message.lint()],
        no_lint,
        "lint",
        problems,
    )
    return MessageRecord(
        number=message.number,
        summary=summary,
        subject=subject,
        received_at=message.received_at.astimezone().isoformat(),
        mail_from=message.envelope.mail_from,
        rcpt_to=list(message.envelope.rcpt_to),
        headers=headers,
        html=None if markup is None else markup[:limit],
        text=None if text is None else text[:limit],
        html_truncated=_beyond(markup, limit),
        text_truncated=_beyond(text, limit),
        attachments=[
            AttachmentRecord(
                filename=item.filename or unnamed_attachment(index, item.content_type),
                content_type=item.content_type,
                size=item.size,
                href=hrefs[index - 1],
            )
            for index, item in enumerate(attachments, 1)
        ],
        raw=message.raw[:RAW_LIMIT].decode("utf-8", "replace"),
        raw_truncated=max(0, len(message.raw) - RAW_LIMIT),
        eml_href=eml_href,
        defects=list(dict.fromkeys(problems + defects)),
        lint=lint,
        put_in=put_in_how(message),
        inline_images=inline_images(attachments) if markup else {},
    )


def _beyond(part: str | None, limit: int | None) -> int:
    """Characters of ``part`` after the first ``limit``."""
    return 0 if part is None or limit is None else max(0, len(part) - limit)


#: Raster images only: an SVG cannot run a script as an <img>, but nothing
#: is lost by leaving it out.
_INLINE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/avif"}
)
#: Bounds on what a page carries inline, in bytes of the image (base64
#: adds a third): a logo is tens of KiB. The whole is also what the frame
#: may take in ``data:`` URLs, however often the part uses them.
_INLINE_IMAGE_MAX = 256 << 10
_INLINE_TOTAL_MAX = 1 << 20


def inline_images(attachments: Sequence[Attachment]) -> dict[str, str]:
    """The parts an HTML part shows with ``cid:`` (RFC 2392: a logo in a
    multipart/related), by Content-ID without its ``<>``, as ``data:``
    URLs, which the frame's policy lets it show and which load nothing
    from the network. Each at most 256 KiB, 1 MiB in all."""
    found: dict[str, str] = {}
    total = 0
    for item in attachments:
        content_id = (item.content_id or "").strip().removeprefix("<").removesuffix(">")
        kind = item.content_type.partition(";")[0].strip().lower()
        if not content_id or kind not in _INLINE_TYPES or content_id in found:
            continue
        if item.size > _INLINE_IMAGE_MAX or total + item.size > _INLINE_TOTAL_MAX:
            continue
        total += item.size
        found[content_id] = (
            f"data:{kind};base64,{base64.b64encode(item.content).decode('ascii')}"
        )
    return found


#: A ``cid:`` URL where a URL goes: an attribute's value (``src=cid:``,
#: quoted or not) or a CSS ``url(``; up to what ends the value. Not in the
#: mail's text ("see cid:logo@x").
_CID_URL = re.compile(r"""((?:=|url\()\s*["']?\s*)cid:([^\s"'()<>]+)""", re.IGNORECASE)


def _with_inline_images(markup: str, images: Mapping[str, str]) -> str:
    """``markup`` with its ``cid:`` URLs of ``images`` made ``data:`` URLs,
    as long as what is put in stays within `_INLINE_TOTAL_MAX` (base64): a
    part may use one image thousands of times."""
    if not images or "cid:" not in markup.lower():
        return markup
    budget = _INLINE_TOTAL_MAX * 4 // 3 + 4

    def image(match: re.Match[str]) -> str:
        nonlocal budget
        found = images.get(urllib.parse.unquote(match[2]))
        if found is None or len(found) > budget:
            return match[0]
        budget -= len(found)
        return match[1] + found

    return _CID_URL.sub(image, markup)


def session_record(
    session: Session, href: str | None = None, sink: str | None = None
) -> SessionRecord:
    # summary(), not a title of our own: it is the line every other report
    # shows, it suits each protocol (a POP3 or IMAP session has no EHLO
    # name), and it never waits for a TLS handshake under way, as
    # `Session.tls` would.
    title, transcript = session._summary_and_transcript()
    return SessionRecord(
        title=title,
        transcript=transcript,
        href=href,
        protocol=session.protocol,
        sink=sink,
    )


_MAX_NAME = 100
#: In UTF-8 bytes: most file systems allow 255 per name, and 100 letters
#: of a script outside ASCII can take 300 or 400. Room is left for the
#: ``N-`` of a repeated name and the ``.txt`` of `_inert_name`.
_MAX_NAME_BYTES = 200
#: Extensions a browser shows or downloads without running anything, when
#: index.html is opened from disk (file://, where Chromium ignores the
#: links' ``download``): all in Chromium's own type table, so that it
#: never sniffs the content. Any other attachment is saved with ``.txt``
#: added: a mailed ``invoice.html``, ``logo.svg``, ``feed.xml`` or a name
#: with no extension would otherwise open as a page and run its script.
_INERT_EXTENSIONS = frozenset(
    {
        *("txt", "csv", "json", "pdf", "rtf", "ics"),
        *("png", "jpg", "jpeg", "gif", "webp", "bmp", "ico", "tif", "tiff", "avif"),
        *("mp3", "m4a", "wav", "ogg", "flac", "mp4", "webm"),
        *("zip", "gz", "tgz"),
        *("doc", "docx", "xls", "xlsx", "ppt", "pptx"),
    }
)
#: Windows opens a device, not a file, for these names, whatever their
#: extension (``nul.txt``, ``COM1.pdf``); ``\w`` keeps the superscript
#: digits that Windows counts as well (``COM¹``).
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789¹²³"}
)


def safe_name(filename: str | None, index: int) -> str:
    """A file name that stays inside its directory on any OS, at most
    `_MAX_NAME` characters and `_MAX_NAME_BYTES` bytes of UTF-8; a long
    one keeps its extension, which says what opens it. A Windows device
    name gets a ``_`` in front."""
    name = re.sub(r"[^\w.\-]+", "_", filename or "").strip("._")
    stem, dot, extension = (filename or "").partition(".")
    if (
        dot
        and name
        and not re.sub(r"[^\w.\-]+", "_", stem).strip("._")
        # A path ("../../etc/passwd") is no extension.
        and not re.search(r"[/\\]", extension)
    ):
        # A stem of symbols alone ("\U0001f600.pdf"): its extension, which
        # says what opens it, kept after a stand-in ("pdf" was saved as text).
        name = f"attachment-{index}.{name}"
    if name.partition(".")[0].upper() in _WINDOWS_DEVICES:
        name = f"_{name}"
    if len(name) > _MAX_NAME or len(name.encode()) > _MAX_NAME_BYTES:
        stem, dot, extension = name.rpartition(".")
        if not dot or not stem or len(extension) > 16:
            stem, extension = name, ""
        suffix = f".{extension}" if extension else ""
        room = _MAX_NAME_BYTES - len(suffix.encode())
        # Cut in bytes, then drop a character cut in two.
        stem = stem[: _MAX_NAME - len(suffix)].encode()[:room].decode(errors="ignore")
        name = stem.rstrip("._") + suffix
    return name or f"attachment-{index}"


#: The extension of each kind `_INERT_EXTENSIONS` lets be saved as it is,
#: by content type: a table of its own, as the standard library's differs
#: between Python versions (no WebP before 3.13) and reads the system's.
_EXTENSIONS = {
    "application/pdf": "pdf",
    "application/json": "json",
    "application/rtf": "rtf",
    "text/plain": "txt",
    "text/csv": "csv",
    "text/calendar": "ics",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "image/bmp": "bmp",
    "image/avif": "avif",
    "image/tiff": "tif",
    "image/x-icon": "ico",
    "image/vnd.microsoft.icon": "ico",
    "audio/mpeg": "mp3",
    "audio/mp4": "m4a",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/ogg": "ogg",
    "audio/flac": "flac",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "application/zip": "zip",
    "application/gzip": "gz",
    "application/msword": "doc",
    "application/vnd.ms-excel": "xls",
    "application/vnd.ms-powerpoint": "ppt",
    **{
        f"application/vnd.openxmlformats-officedocument.{kind}": extension
        for kind, extension in (
            ("wordprocessingml.document", "docx"),
            ("spreadsheetml.sheet", "xlsx"),
            ("presentationml.presentation", "pptx"),
        )
    },
}


def unnamed_attachment(number: int, content_type: str) -> str:
    """The name of attachment ``number`` that has none (an inline image):
    ``attachment-1.png``, with its type's extension where a browser opens
    that as nothing worse than the type says (`_INERT_EXTENSIONS`); it was
    ``attachment-1.txt`` for a PNG, which showed as binary text."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "message/rfc822":
        # A forwarded message: "attachment-2" said nothing of what it is.
        # Saved as .eml.txt (`_inert_name`), downloaded from the live view
        # as .eml.
        return f"attachment-{number}.eml"
    extension = _EXTENSIONS.get(kind)
    return f"attachment-{number}.{extension}" if extension else f"attachment-{number}"


def _inert_name(name: str) -> str:
    """``name``, or ``name.txt`` when a browser could open the file as a
    page (see `_INERT_EXTENSIONS`)."""
    extension = name.rpartition(".")[2] if "." in name else ""
    return name if extension.lower() in _INERT_EXTENSIONS else f"{name}.txt"


def _href(path: Path, root: Path) -> str:
    return urllib.parse.quote(path.relative_to(root).as_posix())


def record_test(
    views: Sequence[Mailbox],
    *,
    nodeid: str,
    outcome: str,
    directory: Path,
    written: Sequence[Path],
    root: Path,
    reason: str | None = None,
    captured: Captured | None = None,
    attempt: int = 1,
) -> Path | None:
    """Beside the files `_report.save` wrote: each message's attachments in
    ``NNNN-attachments/`` and ``smtpsink.json`` for the index.

    Returns the record's path, or None when nothing was saved. A failed
    test that captured nothing gets a record too: "expected mail, none came"
    is the failure the index most needs to show.
    """
    if not written:
        if outcome not in FAILED_OUTCOMES:
            return None
        directory.mkdir(parents=True, exist_ok=True)
    from ._report import capture

    if captured is None:
        captured = capture(views)
    # The messages sent, then those put in without SMTP, then the test's
    # mail from before its mailbox was made: the order save() writes them.
    # With two sinks in a test, each numbers its own messages from #1: say
    # whose each one is.
    messages: list[Message] = []
    sink_of: list[str] = []
    early_from = 0  # the index of the first early message
    sent = [held.messages for held in captured]
    put_in = [held.put_in for held in captured]
    early = [held.early for held in captured]
    for group in (sent, put_in, early):
        if group is early:
            early_from = len(messages) + 1
        for view, mail in zip(views, group, strict=True):
            messages.extend(mail)
            sink_of.extend(view.url for _ in mail)
    if len(views) < 2:
        sink_of = []
    from ._report import captured_sessions

    # Each view's sessions, then those of its mail from before it.
    listed = captured_sessions(captured)
    sessions = [session for session, _ in listed]
    session_sinks = [
        views[index].url if len(views) > 1 else None for _, index in listed
    ]
    # save() names the files; take its names rather than guess them again.
    emls = [p for p in written if p.suffix == ".eml"]
    texts = [p for p in written if p.suffix == ".txt"]
    if len(emls) != len(messages):
        emls = []
    if len(texts) != len(sessions):
        texts = []
    message_records = []
    for index, message in enumerate(messages, 1):
        hrefs: list[str | None] = []
        attachments = attachments_of(message, [])
        if attachments:
            folder = directory / f"{index:04d}-attachments"
            folder.mkdir(exist_ok=True)
            used: set[str] = set()
            for number, item in enumerate(attachments, 1):
                # The fallback: a name this file system refuses after all.
                # One attachment must not cost the test its place in the
                # index (the .eml file holds every byte of it anyway).
                wanted = _inert_name(
                    safe_name(item.filename, number)
                    if item.filename
                    else unnamed_attachment(number, item.content_type)
                )
                href = None
                for candidate in (wanted, f"attachment-{number}.txt"):
                    name = candidate
                    # A name taken already gets the attachment's number,
                    # then more: "3-a.txt" may be an attachment's own name,
                    # and the third "a.txt" was written over it.
                    prefix = f"{number}-"
                    while name.lower() in used:
                        name, prefix = prefix + candidate, prefix + f"{number}-"
                    used.add(name.lower())
                    try:
                        write_whole(folder / name, item.content)
                    except OSError:
                        continue
                    href = _href(folder / name, root)
                    break
                hrefs.append(href)
        shown = message_record(
            message,
            eml_href=_href(emls[index - 1], root) if emls else None,
            attachment_hrefs=hrefs,
        )
        if sink_of:
            shown["summary"] = f"{sink_of[index - 1]} {shown['summary']}"
        if index >= early_from:
            shown["early"] = True
        message_records.append(shown)
    record = TestRecord(
        nodeid=nodeid,
        outcome=outcome,
        reason=reason,
        directory=directory.relative_to(root).as_posix(),
        messages=message_records,
        sessions=[
            session_record(
                session,
                _href(texts[index], root) if texts else None,
                session_sinks[index],
            )
            for index, session in enumerate(sessions)
        ],
        attempt=attempt,
        saved=True,
    )
    path = directory / RECORD_NAME
    # ASCII JSON: a stray surrogate in a parsed field cannot fail the write.
    path.write_text(json.dumps(record), encoding="ascii")
    return path


# -- rendering ----------------------------------------------------------------------


def escape(value: object) -> str:
    """HTML-escaped text, quotes included (safe in attribute values), a NUL
    written as U+FFFD (as a browser shows it): one in a page, from a mail's
    raw source, made grep and CI artifact previews take index.html for a
    binary file."""
    return html.escape(str(value), quote=True).replace("\x00", "\ufffd")


#: How an address that loads from the network begins.
_REMOTE = ("http://", "https://", "//")


class _AddressFinder(html.parser.HTMLParser):
    """In one pass over the mail's HTML: the remote addresses it would load
    (which the CSP blocks) and its links (``<a href>``, ``<area href>``):
    `addresses`."""

    _URL_ATTRIBUTES = frozenset({"src", "background", "poster", "srcset", "data"})
    # The blanks after a quote only after one: "\s*['"]?\s*" tried every
    # split of a run of blanks between its two "\s*" (20,000 blanks took 8 s).
    _CSS_URL = re.compile(r"""url\(\s*(?:['"]\s*)?([^'")\s]+)""", re.I)

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # Addresses as written: resolved at the end, against the document's
        # <base href> wherever it stands (as in browsers, for a link before
        # it too).
        self._sources: list[str] = []
        self._anchors: list[str] = []
        self._in_style = False
        # The first <base href>: relative addresses go there in a mail
        # client (the frame's policy refuses the mail's <base>).
        self._base: str | None = None
        self._base_seen = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "base" and not self._base_seen and has_href(attrs):
            self._base_seen = True  # the first with an href, as in browsers
            self._base = html_base(attrs)
        for name, value in attrs:
            if not value:
                continue
            if name == "srcset":
                self._sources += (c.split()[0] for c in value.split(",") if c.split())
            elif name in self._URL_ATTRIBUTES:
                self._sources.append(value)
            elif name == "style":
                self._sources += self._css_urls(value)
        if tag == "link":
            self._sources.append(dict(attrs).get("href") or "")
        elif tag in ("a", "area"):
            # The first of a name, as browsers take it (dict() keeps the last).
            link = next((value for name, value in attrs if name == "href"), None)
            if link and link.strip():
                self._anchors.append(link.strip())
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self._sources += self._css_urls(data)

    def _css_urls(self, css: str) -> list[str]:
        """The addresses of the ``url()``\\ s in ``css``, but a fragment
        alone: in CSS that is the document's own element (an SVG filter's
        ``url(#f)``), where an ``<img src="#x">`` goes to the base."""
        return [url for url in self._CSS_URL.findall(css) if not url.startswith("#")]

    def addresses(self) -> tuple[list[str], list[str]]:
        """The remote addresses and the links of what was read, as a mail
        client resolves them."""
        found = (resolved(url.strip(), self._base) for url in self._sources)
        return (
            [url for url in found if url.lower().startswith(_REMOTE)],
            [resolved(link, self._base) for link in self._anchors],
        )


def _openable(url: str) -> bool:
    """Whether the list under a mail's frame may make ``url`` a link: a web
    address that goes where it reads, never ``javascript:``, ``data:`` or
    ``file:``. ASCII only, with no blank or control character (nor a
    zero-width one, a soft hyphen, a bidi control: none is ASCII), and no
    backslash, which a browser reads as ``/`` in a web address
    (``http://evil.example\\@good.example/`` goes to evil.example); nor
    a user name before the host (``http://good.example@evil.example/``
    goes to evil.example)."""
    authority = re.split(r"[/?#]", url.partition("://")[2], maxsplit=1)[0]
    return (
        url.lower().startswith(("http://", "https://"))
        and url.isascii()
        and url.isprintable()
        and " " not in url
        and "\\" not in url
        and "@" not in authority
    )


def _links_list(links: Sequence[str], whole: bool = True) -> str:
    """Under a mail's frame: its ``links``, web addresses as links that
    open in a new tab outside the frame (the frame itself opens none).
    ``whole``: False when they are those of the first part of a longer one."""
    if not links:
        return ""
    items = "".join(
        "<li>"
        + (
            f'<a href="{escape(url)}" target="_blank" rel="noopener noreferrer">'
            f"{escape(url)}</a>"
            if _openable(url)
            else f"<code>{escape(printable(url))}</code>"
        )
        + "</li>"
        for url in links[:_LISTED_LINKS]
    )
    more = len(links) - _LISTED_LINKS
    return (
        f'<details class="links"><summary>{len(links)} link(s) in the HTML part'
        f"{'' if whole else ' shown'} (the frame above opens none: open them "
        "from here)</summary>"
        f"<ul>{items}</ul>"
        + (f'<p class="note">and {more} more</p>' if more > 0 else "")
        + "</details>"
    )


#: Links listed under a mail's frame (a newsletter may have hundreds).
_LISTED_LINKS = 100


def _addresses(markup: str) -> tuple[list[str], list[str]]:
    """The remote resources and the links of an HTML part, in order, each
    once: one parse for both (a part may be 512 Ki characters)."""
    finder = _AddressFinder()
    # html.parser is lenient, but this is hostile input: a note is not worth
    # losing the page over.
    with contextlib.suppress(Exception):
        finder.feed(without_unclosed_tags(markup))
        finder.close()
    found, links = finder.addresses()
    return list(dict.fromkeys(found)), list(dict.fromkeys(links))


def remote_resources(markup: str) -> list[str]:
    """Remote images, styles and media the HTML part refers to, in order."""
    return _addresses(markup)[0]


#: The start of a <link> tag as a browser's tokenizer reads it: "<", the
#: name in any ASCII case (entities are not decoded in a tag name), then
#: what ends a tag name. re.I also folds a few non-ASCII letters (the
#: Kelvin sign): rewriting those too costs nothing.
_LINK_TAG = re.compile(r"<link(?=[\s/>])", re.I)


#: A ``srcdoc`` attribute as the tokenizer reads one: its name in any ASCII
#: case after what may end the tag name or the attribute before it (a
#: quoted value needs no space after it), then what ends an attribute name.
_SRCDOC_ATTRIBUTE = re.compile(r"""(?<=[\s/"'])srcdoc(?=[\s/>=]|\Z)""", re.I)


#: The start of an <iframe> or <frame> tag, as `_LINK_TAG` reads one.
_FRAME_TAG = re.compile(r"<(i?frame)(?=[\s/>])", re.I)

#: The start of an <a> or <area> tag, as `_LINK_TAG` reads one.
_ANCHOR_TAG = re.compile(r"<(a|area)(?=[\s/>])", re.I)


def inert_links(markup: str) -> str:
    """``markup`` with every ``<link`` tag made a ``<wbr>``, which loads,
    resolves and renders nothing. No CSP directive covers the
    ``dns-prefetch`` and ``preconnect`` hints (Chromium resolves the name,
    and connects, under ``default-src 'none'``; X-DNS-Prefetch-Control
    does not stop them either), so a mail's ``<link rel=dns-prefetch
    href=//tracker.example>`` told the tracker the mail was opened. Under
    the frame's CSP a link can do nothing else, so nothing shown is lost.

    A frame's ``srcdoc`` is a document of its own, its markup entity-encoded
    in the attribute (``&lt;link ...``), where no rewrite of the text can
    see it: a mail's frames keep no ``srcdoc``, and stay empty.

    A link's ``href`` is another: Chromium connects to the host as the
    mouse is pressed on it. Each ``<a>`` and ``<area>`` gets
    ``href=#mail-link`` first, so the mail's own does not count (the
    links are listed under the frame).

    A frame's ``src`` is no load CSP can stop early enough: Chromium
    resolves the name and connects (TLS, the name in its hello) before
    ``frame-src`` refuses the navigation. Every frame gets
    ``src=about:blank`` as its first attribute, and a tag's first
    attribute of a name is the one that counts: the mail's own is dropped
    by the tokenizer, whatever its quoting."""
    markup = _SRCDOC_ATTRIBUTE.sub("data-was-srcdoc", markup)
    # Unquoted, then a space: inside an attribute's quoted value, where the
    # text "<iframe" is no tag, it changes nothing else.
    markup = _FRAME_TAG.sub(r"<\1 src=about:blank ", markup)
    # So too a link's target: <base target=_blank> is only the default, and
    # a link of the mail's own target=_self navigated the frame, which the
    # page's frame-src refuses (the mail gave way to an error page).
    # And its href: Chromium connects to a link's host (TLS, the name in
    # its hello) as the mouse is pressed on it, before any click and
    # whatever the CSP and sandbox say; a sender's link host made for each
    # reader learnt who read the mail. The links are listed under the frame.
    markup = _ANCHOR_TAG.sub(r"<\1 target=_blank href=#mail-link ", markup)
    return _LINK_TAG.sub("<wbr data-was-link", markup)


def _left_out(text: str, what: str, cut_before: int) -> str:
    """The note under a part shown cut at `PART_LIMIT`, or "".
    ``cut_before``: characters the record had left out already."""
    more = max(0, len(text) - PART_LIMIT) + cut_before
    if more <= 0:
        return ""
    return (
        f'<p class="note">... {more} more characters of the {what} in the .eml file</p>'
    )


def mail_frame(
    markup: str,
    title: str = "HTML part",
    images: Mapping[str, str] | None = None,
    cut_before: int = 0,
) -> str:
    """The HTML part (its first `PART_LIMIT` characters) in a sandboxed
    frame, plus a note when remote loads were blocked. Cut anywhere, the
    markup is still all inside the frame's escaped ``srcdoc``. ``images``:
    `inline_images`, put in after the cut (they do not count towards it).
    ``cut_before``: characters the record left out (``html_truncated``)."""
    cut = _left_out(markup, "HTML part", cut_before)
    markup = markup[:PART_LIMIT]
    shown = _with_inline_images(markup, images or {})
    document = (
        f'<meta http-equiv="Content-Security-Policy" content="{MAIL_CSP}">'
        # A link clicked in the frame navigated the frame itself, which the
        # page's policy (frame-src) refuses: the mail gave way to the
        # browser's error page. Aimed at a new window instead, it is a popup
        # the sandbox refuses, and the mail stays. The first <base> with a
        # target counts: the mail's own come after.
        '<base target="_blank">' + inert_links(shown)
    )
    blocked, links = _addresses(markup)
    note = ""
    images = images or {}
    left = [found[2] for found in _CID_URL.finditer(shown)]
    if any(urllib.parse.unquote(cid) in images for cid in left):
        note = (
            '<p class="blocked">Some uses of the inline images are not shown: '
            "a page shows at most 1 MiB of them</p>"
        )
    missing = list(
        dict.fromkeys(
            f"cid:{cid}" for cid in left if urllib.parse.unquote(cid) not in images
        )
    )
    if missing:
        # A broken image alone did not say why: a template whose cid: and
        # Content-ID differ (one with <>, one without) is a classic bug.
        note += (
            f'<p class="blocked">{len(missing)} cid: image(s) not shown: '
            f"{_listed(missing)}: no part of the message has that Content-ID, "
            "or its part is not a PNG, JPEG, GIF, WebP, BMP or AVIF image of at "
            "most 256 KiB (1 MiB for all; see the attachments)</p>"
        )
    if blocked:
        note += (
            f'<p class="blocked">{len(blocked)} remote resource(s) blocked '
            "(images and styles from the network are never loaded here): "
            f"{_listed(blocked)}</p>"
        )
    # No allow-scripts: the mail's scripts never run. No allow-same-origin:
    # the frame has an opaque origin and cannot touch this page.
    return (
        f'{note}<iframe class="mail" sandbox="" referrerpolicy="no-referrer" '
        'style="width:100%;height:24rem;border:1px solid #bbb;background:#fff" '
        f'title="{escape(title)}" srcdoc="{escape(document)}"></iframe>{cut}'
        + _links_list(links, whole=not cut)
    )


def _listed(addresses: Sequence[str]) -> str:
    """The first `_LISTED_REMOTE` of ``addresses``, escaped, and how many
    more there are."""
    more = len(addresses) - _LISTED_REMOTE
    return ", ".join(escape(a) for a in addresses[:_LISTED_REMOTE]) + (
        f" and {more} more" if more > 0 else ""
    )


def text_block(text: str, cut_before: int = 0) -> str:
    """The text part (its first `PART_LIMIT` characters), preformatted.
    ``cut_before``: characters the record left out (``text_truncated``)."""
    return f"<pre>{escape(text[:PART_LIMIT])}</pre>" + _left_out(
        text, "text part", cut_before
    )


def _size(size: int) -> str:
    for unit, factor in (("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


#: A summary line's header fields (`Message.summary`): the To header and the
#: subject, a Python literal whose quotes and backslashes are escaped inside
#: it, followed by the size. Greedy before " | Subject": a display name that
#: reads like one is then part of To.
_SUMMARY_FIELDS = re.compile(
    r"""(?P<head>.* \| To: )(?P<to>.*)(?P<mid> \| Subject: )"""
    r"""(?P<subject>None|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    r"""(?P<tail> \| [0-9]+ bytes.*)""",
    re.DOTALL,
)


def summary_html(summary: str) -> str:
    """A summary line in HTML, the To header and the subject each isolated
    (``<bdi>``): a right-to-left subject otherwise pulled the closing quote,
    the "|" and the size into its run, scrambling the line. A line of
    another shape is escaped as it is."""
    # Bounded: a summary is a few hundred characters; the regular
    # expression backtracks over a long line of another shape.
    fields = _SUMMARY_FIELDS.fullmatch(summary) if len(summary) <= 4000 else None
    if fields is None:
        return escape(summary)
    return (
        f"{escape(fields['head'])}<bdi>{escape(fields['to'])}</bdi>"
        f"{escape(fields['mid'])}<bdi>{escape(fields['subject'])}</bdi>"
        f"{escape(fields['tail'])}"
    )


#: The HTML parts index.html shows in frames; each later message gets a
#: page of its own, linked. Every sandboxed frame is a document (and in
#: Chromium a process) of its own: a run with 500 failed tests that sent
#: HTML mail made a page that took 52 s to open, frozen meanwhile.
FRAMES_IN_INDEX = 40
#: The outcomes of a test that failed, as pytest names them: in its call,
#: or only at set-up or teardown.
FAILED_OUTCOMES = ("failed", "error")


def render_message(
    record: MessageRecord,
    *,
    open_: bool = False,
    page_href: str | None = None,
    anchor: str | None = None,
    raw_downloads: bool = False,
) -> str:
    """One message: summary, headers, HTML, text, attachments, raw, defects.
    ``page_href``: its HTML part is not framed here but on that page.
    ``anchor``: its id, for a link to name it. ``raw_downloads``: its
    ``eml_href`` is served as a download (the live view's), so it is
    linked; a saved page names its .eml file instead, as a browser opens a
    .eml linked from a page on disk as MHTML, whose HTML part's
    ``<link rel=preconnect>`` reaches the sender."""
    id_ = f' id="{escape(anchor)}"' if anchor is not None else ""
    parts = [
        f'<details class="message"{id_}{" open" if open_ else ""}>'
        f"<summary>{summary_html(record['summary'])}</summary>",
        '<dl class="envelope">'
        # printable: a U+202E in an address ("\u202emoc.elpmaxe@nna") showed
        # it reversed, as ann@example.com.
        f"<dt>Envelope from</dt><dd>{escape(printable(record['mail_from'] or '<>'))}</dd>"
        "<dt>Envelope to</dt>"
        f"<dd>{escape(printable(', '.join(record['rcpt_to'])))}</dd>"
        f"<dt>Received</dt><dd>{escape(record['received_at'])}</dd>"
        + (
            f"<dt>Put in</dt><dd>with {escape(how)}, not over SMTP</dd>"
            if (how := record.get("put_in"))  # absent from an older smtpsink.json
            else ""
        )
        + (
            "<dt>Arrived</dt><dd>in the test before its mailbox was made (from "
            "a fixture set up before smtpsink): not among the test&#x27;s "
            "messages</dd>"
            if record.get("early")
            else ""
        )
        + "</dl>",
    ]
    if record["defects"]:
        parts.append(
            '<div class="defects"><b>Problems found while parsing</b><ul>'
            + "".join(f"<li>{escape(d)}</li>" for d in record["defects"])
            + "</ul></div>"
        )
    lint = record.get("lint") or []  # absent from an older smtpsink.json
    if lint:
        parts.append(
            '<details class="lint"><summary>How the message is built: '
            f"{len(lint)} lint problem{'s' if len(lint) != 1 else ''}</summary><ul>"
            + "".join(f"<li>{escape(line)}</li>" for line in lint)
            + "</ul></details>"
        )
    if record["html"] is not None and page_href is not None:
        parts.append(
            '<details class="part html" open><summary>HTML part</summary>'
            f'<p class="note">Rendered on <a href="{escape(page_href)}">a page of '
            f"its own</a>: index.html renders the first {FRAMES_IN_INDEX} HTML "
            "parts of a run (each is a document the browser loads).</p></details>"
        )
    elif record["html"] is not None:
        parts.append(
            '<details class="part html" open><summary>HTML part</summary>'
            + mail_frame(
                record["html"],
                f"HTML part of message {record['number']}",
                record.get("inline_images"),
                record.get("html_truncated", 0),
            )
            + "</details>"
        )
    if record["text"] is not None:
        parts.append(
            '<details class="part text" open><summary>Text part</summary>'
            + text_block(record["text"], record.get("text_truncated", 0))
            + "</details>"
        )
    if record["attachments"]:
        items = []
        for item in record["attachments"]:
            # printable: a mail's U+202E in a name ("invoice\u202egpj.exe")
            # would show an .exe as a .jpg, and reverse the text after it.
            label = (
                f"{escape(printable(item['filename']))} "
                f"({escape(printable(item['content_type']))}, "
                f"{_size(item['size'])})"
            )
            # download: never open a hostile .html or .svg attachment as a page.
            items.append(
                f'<li><a href="{escape(item["href"])}" download>{label}</a></li>'
                if item["href"]
                else f"<li>{label}</li>"
            )
        parts.append(
            '<details class="part attachments" open><summary>Attachments</summary>'
            f"<ul>{''.join(items)}</ul></details>"
        )
    parts.append(
        '<details class="part headers"><summary>Headers</summary><table>'
        + "".join(
            f"<tr><th>{escape(printable(name))}</th>"
            # A folded header's tab (every Received an MTA writes) is
            # white space, not a control character to show as "\t".
            f"<td>{escape(printable(value.replace(chr(9), ' ')))}</td></tr>"
            for name, value in record["headers"]
        )
        + "</table></details>"
    )
    cut = (
        f'<p class="note">... {record["raw_truncated"]} more bytes in the .eml file</p>'
        if record["raw_truncated"]
        else ""
    )
    eml = record["eml_href"]
    if not eml:
        link = ""
    elif raw_downloads:
        link = f' <a href="{escape(eml)}" download>(.eml)</a>'
    else:
        # Its path from this page, as text to copy.
        path = urllib.parse.unquote(eml)
        link = (
            f" (every byte in <code>{escape(printable(path))}</code>, for a mail "
            "client)"
        )
    parts.append(
        f'<details class="part raw"><summary>Raw source{link}</summary>'
        f"<pre>{escape(record['raw'])}</pre>{cut}</details>"
    )
    parts.append("</details>")
    return "".join(parts)


def render_session(record: SessionRecord, number: int | None) -> str:
    link = (
        f' <a href="{escape(record["href"])}" download>(.txt)</a>'
        if record["href"]
        else ""
    )
    protocol = record.get("protocol", "SMTP")
    # A read-side summary starts with its protocol, which the heading says.
    title = record["title"].removeprefix(f"{protocol} ")
    sink = record.get("sink")
    return (
        f'<details class="session"><summary>{escape(sink) + " " if sink else ""}'
        f"{escape(protocol)} session{'' if number is None else f' {number}'}: "
        f"{escape(title)}{link}</summary>"
        f"<pre>{escape(record['transcript'])}</pre></details>"
    )


# overflow-wrap:anywhere: captured names need not have a space in them (a
# 300-character attachment name); they wrap rather than widen the page.
STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem;
color:#1b1b1b;background:#fff;overflow-wrap:anywhere}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin:0;word-break:break-all}
section.test{border:1px solid #ccc;border-radius:6px;margin:1rem 0;padding:.6rem .8rem}
section.failed,section.error{border-left:6px solid #c62828}
section.passed{border-left:6px solid #2e7d32}
.outcome{font-weight:600;text-transform:uppercase;font-size:.8rem;margin-right:.5rem}
.failed .outcome,.error .outcome{color:#c62828}.passed .outcome{color:#2e7d32}
.rerun .outcome{color:#e65100}.attempt{font-weight:400}
p.reason{color:#c62828;font-family:ui-monospace,monospace;font-size:.9rem;margin:.3rem 0}
.skipped p.reason,.xfailed p.reason,.xpassed p.reason{color:#555}
details{margin:.4rem 0}summary{cursor:pointer}
details.message>summary{font-family:ui-monospace,monospace;font-size:.9rem}
details.part,details.session{margin-left:1rem}
dl.envelope{display:grid;grid-template-columns:max-content 1fr;gap:0 1rem;margin:.3rem 1rem}
dt{color:#555}dd{margin:0;word-break:break-all}
pre{background:#f6f6f6;padding:.5rem;overflow:auto;white-space:pre-wrap;
word-break:break-all;max-height:30rem}
table{border-collapse:collapse;font-size:.9rem}
th,td{border-bottom:1px solid #eee;padding:.15rem .5rem;text-align:left;vertical-align:top}
td{word-break:break-all}
iframe.mail{width:100%;height:24rem;border:1px solid #bbb;background:#fff;resize:vertical}
.blocked{background:#fff8e1;border:1px solid #ffcc80;padding:.3rem .5rem;margin:.3rem 0;
word-break:break-all}
.defects{background:#fdecea;padding:.3rem .6rem;margin:.3rem 1rem}
.note{color:#555}
"""


def page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta name="generator" content="{GENERATOR}">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(PAGE_CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def _reason(test: TestRecord) -> str:
    reason = test.get("reason")  # absent from an older smtpsink.json
    return f'<p class="reason">{escape(reason)}</p>' if reason else ""


def _sent(test: TestRecord) -> list[MessageRecord]:
    """The test's messages that came over SMTP (not `put_in`), to its
    mailbox (not ``early``)."""
    return [m for m in test["messages"] if not m.get("put_in") and not m.get("early")]


def _early_count(test: TestRecord) -> int:
    return sum(1 for m in test["messages"] if m.get("early"))


def _put_in_count(test: TestRecord) -> str:
    """The counts after the test's messages: put in, and from before its
    mailbox."""
    early = _early_count(test)
    count = len(test["messages"]) - len(_sent(test)) - early
    return (f"{count} put in without SMTP, " if count else "") + (
        f"{early} from before its mailbox, " if early else ""
    )


def _first_run(test: TestRecord) -> str:
    """The directory of the first run of ``test``'s test: its own, without
    the ``+attemptN`` of a rerun."""
    from ._report import split_attempt

    return split_attempt(test["directory"])[0]


def _worker(test: TestRecord) -> str:
    """Whose run of the test a record is under ``--dist each`` (every xdist
    worker runs every test): the ``@gw0`` of its directory's name, shown as
    ``--smtpsink-summary`` shows it, `` [gw0]``."""
    from ._report import split_attempt

    worker = split_attempt(test["directory"])[0].partition("@")[2]
    return f" [{escape(worker)}]" if worker else ""


def _attempt(test: TestRecord) -> str:
    """Which run of the test a record is, when a plugin reran it."""
    attempt = test.get("attempt", 1)
    if attempt == 1 and test["outcome"] != "rerun":
        return ""
    return f' <span class="attempt">(attempt {attempt})</span>'


def _message_page_href(test: TestRecord, message: MessageRecord) -> str:
    """Where a message's own page goes: beside its .eml, in its test's
    directory."""
    eml = message["eml_href"]
    if eml and eml.endswith(".eml"):
        return eml[: -len(".eml")] + ".html"
    return urllib.parse.quote(f"{test['directory']}/message-{message['number']}.html")


def _seen_from(message: MessageRecord, up: str) -> MessageRecord:
    """``message`` with its links (relative to the save directory) made
    relative to a page ``up`` ("../") below it."""
    seen = message.copy()
    if seen["eml_href"]:
        seen["eml_href"] = up + seen["eml_href"]
    attachments = []
    for item in message["attachments"]:
        moved = item.copy()
        if moved["href"]:
            moved["href"] = up + moved["href"]
        attachments.append(moved)
    seen["attachments"] = attachments
    return seen


def _natural(text: str) -> list[tuple[int, str]]:
    """A sort key that takes numbers as numbers: ``test[7]`` before
    ``test[14]``, as parametrized tests run."""
    return [
        (int(part), "") if part.isdecimal() else (-1, part)
        for part in re.split(r"(\d+)", text)
    ]


#: The id of index.html's contents, which each test's section links back to.
CONTENTS_ID = "contents"


def _anchors(tests: Sequence[TestRecord]) -> list[str]:
    """The ids of the tests' sections: each directory's name (each run of a
    test has its own), an id a link can name from one run to the next; a
    last run listed without a directory of its own gets a number after."""
    return _unique([test["directory"] for test in tests], taken={CONTENTS_ID})


def _message_anchors(section: str, messages: Sequence[MessageRecord]) -> list[str]:
    """The ids of a test's messages: its section's, a slash (which no
    directory's name holds) and the message's number, ``test_x/14``; a
    number after when two sinks of the test numbered theirs alike."""
    return _unique([f"{section}/{message['number']}" for message in messages])


def _unique(names: Sequence[str], taken: Collection[str] = ()) -> list[str]:
    """``names``, each made unique with a number after it: ``x``, ``x-2``."""
    seen = set(taken)
    unique = []
    for name in names:
        candidate, number = name, 1
        while candidate in seen:
            number += 1
            candidate = f"{name}-{number}"
        seen.add(candidate)
        unique.append(candidate)
    return unique


def _fragment(anchor: str) -> str:
    """``#anchor`` for an href: percent-encoded (a test id's ``[``), its
    slashes kept."""
    return "#" + urllib.parse.quote(anchor, safe="/")


def render_index(
    tests: Sequence[TestRecord],
    when: datetime.datetime,
    pages: dict[str, str] | None = None,
) -> str:
    """The whole ``index.html``: every saved test, failed ones first.
    ``pages``: given, the messages after the first `FRAMES_IN_INDEX` with
    an HTML part are rendered in it instead (href -> page), for the caller
    to write."""
    # A test's runs together (a test rerun lists each), in order; under
    # --dist each, each worker's (its directory's name says whose).
    failed = {t["nodeid"] for t in tests if t["outcome"] in FAILED_OUTCOMES}
    ordered = sorted(
        tests,
        key=lambda t: (
            t["nodeid"] not in failed,
            _natural(t["nodeid"]),
            t["nodeid"],
            _first_run(t),
            t.get("attempt", 1),
        ),
    )
    runs = len(tests)
    names = len({(t["nodeid"], _first_run(t)) for t in tests})
    messages = sum(len(_sent(t)) for t in tests)
    early = sum(_early_count(t) for t in tests)
    put_in = sum(len(t["messages"]) - len(_sent(t)) for t in tests) - early
    protocols = collections.Counter(
        s.get("protocol", "SMTP") for t in tests for s in t["sessions"]
    )
    # SMTP always (its count says whether any client connected at all); the
    # read side where there was some.
    sessions = ", ".join(
        f"{protocols[name]} {escape(name)} session(s)"
        for name in ["SMTP", *sorted(protocols.keys() - {"SMTP"})]
    )
    body = [
        "<h1>Captured email</h1>",
        f'<p class="note">{names} test(s)'
        + (f" in {runs} attempts" if runs != names else "")
        + f", {messages} message(s), "
        + (f"{put_in} put in without SMTP, " if put_in else "")
        + (f"{early} from before a test's mailbox, " if early else "")
        + f"{sessions}; saved {escape(f'{when:%Y-%m-%d %H:%M:%S %Z}')}"
        " by pytest-smtpsink.</p>",
    ]
    anchors = _anchors(ordered)
    if not tests:
        body.append("<p>No test saved any mail, and none failed, in this run.</p>")
    else:
        # Where each is, and an id per test to link to (a CI log, a
        # colleague): its directory's name, unique in the run.
        body.append(
            f'<details class="contents" id="{CONTENTS_ID}" open><summary>'
            f"{len(ordered)} test(s)</summary><ul>"
            + "".join(
                f'<li class="{escape(test["outcome"])}">'
                f'<a href="{escape(_fragment(anchor))}">'
                f'<span class="outcome">{escape(test["outcome"])}</span> '
                f"{escape(test['nodeid'])}{_worker(test)}{_attempt(test)}</a>"
                + (
                    f" ({len(test['messages'])} message(s))</li>"
                    # Not "0 message(s)": a passing rerun not saved sent
                    # mail all the same.
                    if test.get("saved", True)
                    else " (mail not saved)</li>"
                )
                for test, anchor in zip(ordered, anchors, strict=True)
            )
            + "</ul></details>"
        )
    frames = 0
    for test, anchor in zip(ordered, anchors, strict=True):
        body.append(
            f'<section class="test {escape(test["outcome"])}" '
            f'id="{escape(anchor)}"><h2>'
            f'<span class="outcome">{escape(test["outcome"])}</span>'
            f" {escape(test['nodeid'])}{_worker(test)}{_attempt(test)}</h2>"
            + _reason(test)
            + (
                f'<p class="note">{len(_sent(test))} message(s), '
                + _put_in_count(test)
                + f"{len(test['sessions'])} session(s), files in "
                f'<a href="{escape(urllib.parse.quote(test["directory"]))}/">'
                f"{escape(test['directory'])}/</a></p>"
                if test["messages"] or test["sessions"]
                else '<p class="note">No mail was captured.</p>'
                if test.get("saved", True)
                else '<p class="note">Its mail was not saved: '
                "--smtpsink-save=all saves passing runs too.</p>"
            )
        )
        mail = test["messages"]
        for message, message_anchor in zip(
            mail, _message_anchors(anchor, mail), strict=True
        ):
            page_href = None
            if pages is not None and message["html"] is not None:
                if frames < FRAMES_IN_INDEX:
                    frames += 1
                else:
                    page_href = _message_page_href(test, message)
                    up = "../" * page_href.count("/")
                    back = f"{up}index.html{_fragment(message_anchor)}"
                    pages[page_href] = page(
                        f"{test['nodeid']}: message {message['number']}",
                        f"<h1>{escape(test['nodeid'])}</h1>"
                        f'<p class="note"><a href="{escape(back)}">Back to '
                        "index.html</a></p>"
                        + render_message(_seen_from(message, up), open_=True),
                    )
            body.append(
                render_message(
                    message,
                    open_=len(mail) == 1,
                    page_href=page_href,
                    anchor=message_anchor,
                )
            )
        body.extend(
            render_session(session, number)
            for number, session in enumerate(test["sessions"], 1)
        )
        if mail or test["sessions"]:
            # Past its mail, which may be long: the way back up.
            body.append(
                f'<p class="note"><a href="#{CONTENTS_ID}">Back to the contents</a></p>'
            )
        body.append("</section>")
    # One main landmark: a screen reader's "skip to content" lands there.
    return page("Captured email", "<main>" + "".join(body) + "</main>")


def write_index(
    root: Path,
    directories: Sequence[str],
    reruns: Collection[str] = (),
    last_runs: Mapping[str, tuple[str, int]] | None = None,
) -> Path:
    """Read each directory's record and write ``root/index.html``.

    ``reruns``: the directories of failed runs of a test that a plugin ran
    again (pytest-rerunfailures), listed as "rerun". ``last_runs``: the
    outcome and number of such a test's last run, by test id: listed too
    when it saved nothing (it passed), or the page could not say how the
    test ended.

    A directory whose record is missing or unreadable (a full disk, a
    newer format) is listed with the reason instead of failing the run.
    """
    tests: list[TestRecord] = []
    for directory in dict.fromkeys(directories):
        path = root / directory / RECORD_NAME
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
            tests.append(data)
        except (OSError, ValueError) as error:
            tests.append(
                TestRecord(
                    nodeid=f"{directory} (unreadable record: {error})",
                    outcome="unknown",
                    reason=None,
                    directory=directory,
                    messages=[],
                    sessions=[],
                    attempt=1,
                    saved=True,
                )
            )
        else:
            if directory in reruns:
                # Failed, and run again: its outcome is the last run's.
                data["outcome"] = "rerun"
    for nodeid, (outcome, attempt) in (last_runs or {}).items():
        runs = [t for t in tests if t["nodeid"] == nodeid]
        if runs and all(t["outcome"] == "rerun" for t in runs):
            tests.append(
                TestRecord(
                    nodeid=nodeid,
                    outcome=outcome,
                    reason=None,
                    # Its first run's: listed with the test's other runs.
                    directory=runs[0]["directory"],
                    messages=[],
                    sessions=[],
                    attempt=attempt,
                    saved=False,
                )
            )
    index = root / INDEX_NAME
    # Whole or not at all (a half-written page would read as someone else's,
    # see foreign_index), and never through a link at that name.
    partial = root / f".{INDEX_NAME}.partial"
    pages: dict[str, str] = {}
    markup = render_index(tests, datetime.datetime.now().astimezone(), pages)
    for href, content in pages.items():
        path = root / urllib.parse.unquote(href)
        # Only into a test's own directory of this root (a record names it).
        if path.parent.is_dir() and path.resolve().is_relative_to(root.resolve()):
            with contextlib.suppress(OSError):  # the index still says what it can
                path.write_text(content, encoding="utf-8", errors="replace")
    partial.write_text(markup, encoding="utf-8", errors="replace")
    partial.replace(index)
    return index


# -- pytest glue (called from plugin.py) --------------------------------------------------


class IndexWriter:
    """On the controller (or a run without xdist): collect the directories
    tests saved and write the index at the end of the session."""

    def __init__(self, root: Path, each: bool = False, started: float = 0.0) -> None:
        self.root = root
        #: When the run began: a directory written since is this run's.
        self.started = started
        #: --dist each: every worker runs every test, in a directory of its own.
        self.each = each
        self.directories: list[str] = []
        #: Directories of failed runs that pytest-rerunfailures ran again.
        self.reruns: set[str] = set()
        #: The outcome of each test's run so far, and of the last run of a
        #: test that was run again (its number too), by test id.
        self._outcomes: dict[str, str] = {}
        self.last_runs: dict[str, tuple[str, int]] = {}
        self.outcome = ""
        self.ran = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On the teardown's report, and on all of a run's reports when a
        # plugin logs them after the run (pytest-rerunfailures): it logs
        # only the failed one of a run it reruns (before 16.0).
        saved = getattr(report, REPORT_ATTRIBUTE, None)
        if isinstance(saved, str):
            self.ran = True
            if saved not in self.directories:
                self.directories.append(saved)
            if str(report.outcome) == "rerun":  # pytest-rerunfailures's own
                self.reruns.add(saved)
        if report.when == "teardown":
            self.ran = True
        if not self.each:
            self._note_last_run(report)
        if str(report.when) == "???" and (
            report.failed or str(report.outcome) == "rerun"
        ):  # "???": not in pytest's types
            # pytest-xdist's report of a test whose worker crashed (os._exit,
            # a segfault): no teardown comes, and the worker's mail went with
            # it, but the index lists every failed test.
            self.ran = True
            self._record_crashed(report)

    def _note_last_run(self, report: pytest.TestReport) -> None:
        """Keep how a test that pytest-rerunfailures ran again ended (its
        last run: passed, failed, skipped), which that run may not save."""
        outcome = str(report.outcome)
        if report.when == "setup":  # a run begins (before 16.0,
            # pytest-rerunfailures logs no teardown of a run it reruns)
            self._outcomes.pop(report.nodeid, None)
        if outcome == "rerun":  # the run's outcome is no test's last
            self._outcomes[report.nodeid] = outcome
        elif report.when == "call" or outcome != "passed":
            self._outcomes.setdefault(report.nodeid, outcome)
        if report.when == "teardown":
            ran = self._outcomes.pop(report.nodeid, "passed")
            # pytest-rerunfailures's count of earlier runs, on every report.
            earlier = getattr(report, "rerun", 0)
            if ran != "rerun" and isinstance(earlier, int) and earlier > 0:
                self.last_runs[report.nodeid] = (ran, earlier + 1)

    def _record_crashed(self, report: pytest.TestReport) -> None:
        from . import _report

        # Named as the worker would have named it (under --dist each, with
        # its id), so that a later run's passing test forgets it.
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        worker = str(getattr(gateway, "id", "worker")) if self.each else None
        first = _report.test_directory(self.root, report.nodeid, worker, False, 1)
        # After this run's runs of the test that saved, never over one (a
        # plugin that reruns tests may have run it before the crash).
        attempts = [
            attempt
            for name, attempt in map(_report.split_attempt, self.directories)
            if name == first.name
        ]
        directory, attempt = _report.free_run_directory(
            self.root,
            report.nodeid,
            worker,
            False,
            attempt=max(attempts, default=0) + 1,
            started=self.started,
        )
        with contextlib.suppress(OSError):  # never an INTERNALERROR
            _report.forget_saved(directory)  # an earlier run's, if any
            reason = _report.failure_reason(report, [])
            if reason is not None:
                reason = reason.removeprefix("at ???: ")  # no phase of pytest's
            record_test(
                [],
                nodeid=report.nodeid,
                outcome="failed",
                directory=directory,
                written=[],
                root=self.root,
                reason=(reason or "its xdist worker crashed")
                + " (the mail it captured was lost with the worker)",
                attempt=attempt,
            )
            saved = directory.relative_to(self.root).as_posix()
            self.directories.append(saved)
            if str(report.outcome) == "rerun":  # pytest-rerunfailures runs it again
                self.reruns.add(saved)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Also rewritten when nothing was saved, if an older index is there:
        # a stale page must not pass for this run's. Not when no test ran
        # (--collect-only, --fixtures): the page and the files it lists are
        # still the last run's.
        if not self.directories and (
            not self.ran or not (self.root / INDEX_NAME).exists()
        ):
            return
        try:
            index = write_index(
                self.root, sorted(self.directories), self.reruns, self.last_runs
            )
        except OSError as error:
            self.outcome = f"could not write {self.root / INDEX_NAME}: {error}"
        else:
            # Said when the page was rewritten without mail too: an open tab
            # of the last run's page changes on reload, and says why.
            self.outcome = (
                f"captured mail of this run: {index}"
                if self.directories
                else f"no mail saved in this run: {index} says so"
            )

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> None:
        # A separator line, like the count at the end of the run: a plain
        # line after -rA's PASSES section read as the last test's output.
        if self.outcome:
            terminalreporter.write_sep("=", f"smtpsink: {self.outcome}")


def pytest_html_extras(
    views: Sequence[Mailbox], frames_left: list[int]
) -> list[dict[str, str | None]]:
    """pytest-html extras for a failed test: each message's summary and its
    rendered HTML (or text). ``frames_left``: the run's budget of frames,
    `FRAMES_IN_INDEX` at first, spent here (a report with 1,000 of them
    took Chromium 72 s to open, as index.html did); past it, an HTML
    part is shown as its text part, with a note. Imports pytest-html, so
    call it only when pytest-html is active."""
    from pytest_html import extras

    found: list[dict[str, str | None]] = []
    for view in views:
        messages, _ = view.captured()
        for message in (*messages, *view._put_in()):
            record = message_record(message)
            how = record["put_in"]
            title = f"Put in with {how}" if how else "Captured email"
            if record["html"] is not None and frames_left[0] > 0:
                frames_left[0] -= 1
                shown = mail_frame(
                    record["html"],
                    images=record["inline_images"],
                    cut_before=record["html_truncated"],
                )
            elif record["html"] is not None:
                shown = (
                    '<p class="note">HTML part not rendered: a report renders '
                    f"the first {FRAMES_IN_INDEX} of a run, of each xdist worker (the index.html of "
                    "--smtpsink-save-dir shows every one)"
                    + (
                        ". Its text part:</p>"
                        + text_block(record["text"], record["text_truncated"])
                        if record["text"] is not None
                        else "; it has no text part.</p>"
                    )
                )
            else:
                shown = text_block(record["text"] or "", record["text_truncated"])
            found.append(
                extras.html(
                    '<div class="smtpsink-mail">'
                    f"<p><b>{escape(title)}</b> {escape(record['summary'])}</p>"
                    + shown
                    + "</div>"
                )
            )
    return found
