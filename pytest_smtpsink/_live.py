"""``smtpsink --http PORT``: the captured mail in a browser, live, and a JSON API.

The standard library's threaded HTTP server is enough here: one local user,
a handful of requests, and one long-lived response per open page (the
server-sent event stream that tells the page to refresh its list). Each
request runs on its own thread from ``http.server``; they share the `Inbox`,
which the CLI's main thread fills (`_cli._Reporter`) as the sink's store
reports new mail. Nothing here runs on the sink's thread.

Pages are rendered on the server by `_html`, so the escaping and the
sandboxed, network-less frame for the HTML part are the same as in the
saved ``index.html``. The page's one script only fetches those fragments,
listens to ``/events`` and sends "delete all".

The server is for the machine it runs on: it binds the sink's host (loopback
unless ``--allow-remote``), and then answers only requests whose ``Host``
it can trust (`HostCheck`: a web page cannot reach it by DNS rebinding), and
changes nothing on a request from another origin (no cross-site "delete").

JSON API:

- ``GET /api/messages``: every kept message, oldest first (a summary each);
- ``GET /api/messages/ID``: one message, with headers, parts and defects;
- ``GET /api/messages/ID/raw``: the bytes as received (``message/rfc822``);
- ``DELETE /api/messages``: forget every message and session (and, with
  ``--pop3`` or ``--imap``, empty the recipients' mailboxes);
- ``GET /api/wait?subject=...&to=...&since=ID&timeout=S``: the first message
  after ``since`` that matches, waiting up to ``timeout`` seconds (default
  10) for it; 408 when none came, 503 when the sink stopped first. The
  criteria are those of ``wait_for``, as strings.

Each event stream and each ``/api/wait`` holds a thread while it waits, so
both are capped (`MAX_STREAMS`, `MAX_WAITS`). A page cannot cope with a
refused stream (EventSource gives up on a 503 for good, and the page left
open is the one the user looks at), so a new stream beyond the cap releases
the oldest instead: that page hears a ``released`` event, stops listening
and offers to resume. A wait beyond the cap is refused (503 with
``Retry-After``): its client is a script, which can say so and retry,
whereas releasing an older wait would fail a test that did nothing wrong.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import http
import http.server
import ipaddress
import json
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import _html
from ._files import saved_name
from ._listening import readable_now
from ._session import said_nothing
from ._text import clock, format_address, printable, shorten
from ._tls import standalone_spelling

if TYPE_CHECKING:
    from ._message import Message
    from ._session import Session

#: Messages (and sessions) kept; the oldest go first. The sink's own store
#: forgets mail once the CLI has printed it; this is the live view's memory.
KEEP = 1000
#: And at most this many bytes of mail (the newest message is always
#: kept): 1000 messages of 25 MB each held 25 GB.
KEEP_BYTES = 100 * 1024 * 1024
#: Seconds between keep-alive comments on an idle event stream: a closed
#: page is noticed by the failed write.
KEEPALIVE = 15.0
#: Longest wait a client may ask of /api/wait.
MAX_WAIT = 300.0
#: Event streams open at once: one per open page (a browser opens at most
#: six connections to one host, so one browser never gets near it).
MAX_STREAMS = 16
#: /api/wait requests waiting at once; the next is refused with a 503.
MAX_WAITS = 32
#: Seconds a refused wait is told to wait before asking again.
WAIT_RETRY_AFTER = 1
#: The option that adds a name to those `HostCheck` accepts, for its errors.
ALLOW_HOST_OPTION = "--http-allow-host"
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


class Inbox:
    """The messages and sessions the live view shows, and a version number
    bumped on every change that event streams and waiters sleep on."""

    def __init__(self, keep: int = KEEP, keep_bytes: int = KEEP_BYTES) -> None:
        self.changed = threading.Condition()
        self.version = 0
        self.closing = False
        self._keep = keep
        self._keep_bytes = keep_bytes
        self._messages: dict[int, Message] = {}
        self._bytes = 0  # of `_messages`' raw mail
        self._sessions: list[Session] = []
        #: The number the terminal and the saved files give each session
        #: (the CLI's count), by id(): the page shows the same one.
        self._numbers: dict[int, int] = {}
        #: Messages up to this number were deleted ("delete all") before
        #: they reached the view: they must not appear in it afterwards.
        self._deleted_up_to = 0
        #: Messages pushed out by newer ones (past ``keep``), since the
        #: last "delete all": the list says so, where they vanished.
        self._dropped = 0

    def add(
        self,
        messages: Sequence[Message],
        sessions: Sequence[Session],
        numbers: Mapping[int, int] | None = None,
    ) -> None:
        """New mail from the sink (the CLI's main thread); ``numbers``: the
        CLI's number of each new session, by ``id()``."""
        if not messages and not sessions:
            return
        with self.changed:
            if numbers:
                self._numbers.update(numbers)
            for message in messages:
                if message.number > self._deleted_up_to:
                    self._messages[message.number] = message
                    self._bytes += len(message.raw)
            while len(self._messages) > self._keep or (
                self._bytes > self._keep_bytes and len(self._messages) > 1
            ):
                oldest = self._messages.pop(next(iter(self._messages)))
                self._bytes -= len(oldest.raw)
                self._dropped += 1
            # Only connections without a message are shown as such (the
            # others show with their mail), and not those that said nothing
            # (a health check's probe every few seconds pushed real failed
            # connections out, as --save-dir leaves them out).
            self._sessions = [
                s
                for s in (*self._sessions, *sessions)
                if not s.message_count and not said_nothing(s)
            ]
            del self._sessions[: max(0, len(self._sessions) - self._keep)]
            if len(self._numbers) > 4 * self._keep:
                # Bounded by what the page can show: the sessions kept here
                # and those of kept messages. Cut by age, a reader polling
                # over POP3 pushed out the numbers of messages still shown.
                shown = {id(s) for s in self._sessions}
                shown.update(id(m.session) for m in self._messages.values())
                self._numbers = {
                    key: number for key, number in self._numbers.items() if key in shown
                }
            self.version += 1
            self.changed.notify_all()

    def touch(self) -> None:
        """Something changed that the page shows (a session ended)."""
        with self.changed:
            self.version += 1
            self.changed.notify_all()

    def clear(self, up_to: int | None = None) -> int:
        """Delete the messages numbered up to ``up_to`` (all by default),
        including those still on their way to the view, and the sessions;
        returns how many messages the view lost."""
        with self.changed:
            if up_to is None:
                up_to = max(self._messages, default=0)
            self._deleted_up_to = max(self._deleted_up_to, up_to)
            gone = [number for number in self._messages if number <= up_to]
            for number in gone:
                self._bytes -= len(self._messages.pop(number).raw)
            count = len(gone)
            self._dropped = 0  # "delete all": none was let go since
            self._sessions.clear()
            self.version += 1
            self.changed.notify_all()
            return count

    def close(self) -> None:
        with self.changed:
            self.closing = True
            self.changed.notify_all()

    def snapshot(self) -> tuple[int, list[Message], list[Session]]:
        with self.changed:
            return self.version, list(self._messages.values()), list(self._sessions)

    @property
    def dropped(self) -> int:
        """How many messages newer ones pushed out of the view."""
        with self.changed:
            return self._dropped

    @property
    def keep(self) -> int:
        """How many messages the view keeps (at most `keep_bytes` of them)."""
        return self._keep

    @property
    def keep_bytes(self) -> int:
        """How many bytes of mail the view keeps (the newest message whole)."""
        return self._keep_bytes

    def session_number(self, session: Session) -> int | None:
        """The number the terminal gave ``session``, if known."""
        with self.changed:
            return self._numbers.get(id(session))

    def get(self, number: int) -> Message | None:
        with self.changed:
            return self._messages.get(number)

    def wait_change(
        self, version: int, timeout: float, released: threading.Event | None = None
    ) -> int:
        """The version once it differs from ``version`` (or after
        ``timeout``, or when closing, or once ``released`` is set: see
        `LiveServer.add_stream`): the caller compares."""
        with self.changed:
            self.changed.wait_for(
                lambda: (
                    self.version != version
                    or self.closing
                    or (released is not None and released.is_set())
                ),
                timeout,
            )
            return self.version

    def wait_for(
        self,
        criteria: dict[str, Any],
        since: int,
        timeout: float,
        gone: Callable[[], bool] = lambda: False,
    ) -> Message | None:
        """The first message numbered above ``since`` matching ``criteria``;
        None after ``timeout``, or once ``gone()`` says the asker left
        (asked every `_GONE_CHECK` seconds)."""
        from ._match import matches

        deadline = time.monotonic() + timeout
        while True:
            version, messages, _ = self.snapshot()
            # Matching parses mail: done outside the lock.
            for message in messages:
                if message.number > since and matches(message, criteria):
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closing or gone():
                return None
            self.wait_change(version, min(remaining, _GONE_CHECK))


# -- pages ---------------------------------------------------------------------------


SCRIPT = """\
"use strict";
const list = document.getElementById("list");
const view = document.getElementById("view");
const count = document.getElementById("count");
let current = null;
let refreshing = false;
let refreshAgain = false;
let shows = 0;

const lost = document.getElementById("lost");
let stream = null;
let sinkRun = null;

// The sink stopped (or the network failed): said on the page, where it
// looked like "no new mail" and clicks did nothing.
async function ask(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    // A request given up (its 30 s bound) is no sign of the sink away.
    if (error.name !== "TimeoutError") lost.hidden = false;
    throw error;
  }
  if (stream !== null && stream.readyState === EventSource.OPEN) {
    lost.hidden = true;  // one request failed, and the sink is there
  }
  return response;
}

function clearView(note) {
  ++shows;
  current = null;
  view.innerHTML = "<p class=note></p>";
  view.firstChild.textContent = note;
  // No message is open: the address no longer names one.
  if (location.hash) history.replaceState(null, "", location.pathname);
}

// The open message is in the address (#ID): a reload, Back and a link
// shared keep it (it was lost on reload).
function named() {
  const id = location.hash.slice(1);
  return /^[1-9][0-9]*$/.test(id) ? id : null;
}

// One list request at a time, and one more after it if anything changed
// meanwhile: each event asked for the whole list, and a burst of 1,000
// mails made 379 requests (56 MB), the list seconds behind and a message
// clicked meanwhile waiting behind them.
async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    do {
      refreshAgain = false;
      try {
        const response = await ask("/fragments/list", bounded());
        draw(await response.text());
      } catch (error) {
        // Given up or failed (the banner says when the sink is away): the
        // next change asks again, and one that came meanwhile at once.
      }
    } while (refreshAgain);
  } finally {
    refreshing = false;
  }
}

// Bounded where the browser can: one request that never ended froze the
// list for good.
function bounded() {
  return typeof AbortSignal.timeout === "function"
    ? { signal: AbortSignal.timeout(30000) } : {};
}

// The first message line in sight of a list scrolled down, and how far
// below the list's top it is: new mail comes in above it.
function inSight() {
  if (list.scrollTop === 0) return null;
  const top = list.getBoundingClientRect().top;
  for (const link of list.querySelectorAll("a[data-id]")) {
    const at = link.getBoundingClientRect();
    if (at.bottom > top) return [link.dataset.id, at.top];
  }
  return null;
}

function draw(text) {
  // The list is drawn anew: a keyboard user's place in it (after Enter,
  // and whenever mail arrived) went back to the page's start; and in a
  // list scrolled down, new mail moved the lines under the reader (a
  // click aimed at #150 opened #250).
  const focused = document.activeElement?.closest?.("#list a[data-id]")?.dataset.id;
  const kept = inSight();
  list.innerHTML = text;
  list.dataset.count = list.querySelectorAll("li.item").length;
  applyFilter();  // before measuring: hidden lines take no room
  if (kept !== null) {
    const link = list.querySelector(`a[data-id="${CSS.escape(kept[0])}"]`);
    if (link) list.scrollTop += link.getBoundingClientRect().top - kept[1];
  }
  if (focused !== undefined) {
    list.querySelector(`a[data-id="${CSS.escape(focused)}"]`)?.focus({ preventScroll: kept !== null });
  }
  for (const link of list.querySelectorAll("a[data-id]")) {
    link.classList.toggle("current", link.dataset.id === current);
  }
  // Deleted (here or in another page), or past the list's last ones: it
  // stayed shown, its links answering 404.
  if (current !== null && !list.querySelector(`a[data-id="${CSS.escape(current)}"]`)) {
    clearView(
      "The message shown is no longer listed: it was deleted, or let go as newer mail came."
    );
  }
}

// The filter: the messages whose line (subject, number, sender,
// recipients, time) holds every word typed, in any case; kept as the list
// is drawn anew when mail arrives.
const filter = document.getElementById("filter");
function applyFilter() {
  const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
  const items = list.querySelectorAll("li.item");
  let shown = 0;
  for (const item of items) {
    const text = item.textContent.toLowerCase();
    const id = item.querySelector("a[data-id]")?.dataset.id;
    // "#14" is message 14, not #140 to #149 too.
    item.hidden = !words.every((word) =>
      /^#[0-9]+$/.test(word) ? word === "#" + id : text.includes(word));
    if (!item.hidden) ++shown;
  }
  // Written only when it changed: a screen reader announces each write.
  const said = words.length ? `${shown} of ${items.length}` : `${items.length}`;
  if (count.textContent !== said) count.textContent = said;
}
filter.addEventListener("input", applyFilter);

async function show(id) {
  const opening = id !== current;
  current = id;
  const mine = ++shows;
  for (const link of list.querySelectorAll("a[data-id]")) {
    link.classList.toggle("current", link.dataset.id === current);
  }
  // A big message takes seconds to render: the click is answered at once,
  // where the previous message stayed with no sign of anything happening.
  // Not at once: a small one comes in a few milliseconds and would flicker.
  const loading = opening ? setTimeout(() => {
    if (mine === shows) {
      view.innerHTML = "<p class=note></p>";
      view.firstChild.textContent = `Opening message #${id}...`;
    }
  }, 150) : null;
  let text;
  try {
    const response = await ask("/fragments/messages/" + encodeURIComponent(id));
    text = await response.text();
  } finally {
    clearTimeout(loading);
  }
  // A message clicked (or a delete) after this one asked: its answer may
  // come first, and this older one must not replace it.
  if (mine !== shows) return;
  view.innerHTML = text;
  refresh();
}

list.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-id]");
  if (link) {
    event.preventDefault();
    if (named() !== link.dataset.id) history.pushState(null, "", "#" + link.dataset.id);
    show(link.dataset.id);
  }
});
window.addEventListener("popstate", () => {
  const id = named();
  if (id === null) clearView("Select a message.");
  else if (id !== current) show(id);
});

document.getElementById("delete").addEventListener("click", async (event) => {
  // Every message, and with them every recipient's mailbox (POP3, IMAP):
  // the page's question says whether the sink serves any.
  if (!confirm(event.currentTarget.dataset.question)) return;
  ++shows;
  await ask("/api/messages", { method: "DELETE" });
  clearView("Select a message.");
});

// The server says when something changed: no polling.
const paused = document.getElementById("paused");
function listen() {
  const events = stream = new EventSource("/events");
  // The browser tries again by itself while the sink is away.
  events.onerror = () => {
    lost.hidden = false;
  };
  // The stream tells of changes after it began: a change between the
  // list shown and that (on loading, resuming, or the browser's own
  // reconnecting) is shown once it is open.
  events.onopen = () => {
    lost.hidden = true;
    refresh();
  };
  // Which run of the sink this is: another after reconnecting is a sink
  // started again, numbering from 1, whose message of the shown one's
  // number is another mail (its links too).
  events.addEventListener("hello", (event) => {
    if (sinkRun !== null && event.data !== sinkRun && current !== null) {
      clearView("The sink was started again: select a message.");
    }
    sinkRun = event.data;
  });
  // The open message too while its relay outcome is still to come.
  events.onmessage = () => {
    if (current !== null && view.querySelector("[data-relay-pending]")) {
      show(current);
    } else {
      refresh();
    }
  };
  // Too many pages listen at once: the server let this one go (the
  // oldest). Reconnecting by itself would push out another page, so it
  // waits for the user.
  events.addEventListener("released", () => {
    events.close();
    paused.hidden = false;
  });
}
document.getElementById("resume").addEventListener("click", () => {
  paused.hidden = true;
  listen();
  refresh();
});
listen();
// The page came with the list (the stream's opening asks again, for what
// came between): only what draw() adds to it.
list.dataset.count = list.querySelectorAll("li.item").length;
applyFilter();
if (named() !== null) show(named());
"""

LIVE_STYLE = """
body{max-width:none;margin:0;padding:0;display:grid;grid-template-rows:auto 1fr;height:100vh}
header{display:flex;gap:1rem;align-items:center;padding:.5rem 1rem;background:#1a237e;color:#fff}
header h1{margin:0;font-size:1.1rem;flex:1}
#filter{width:14rem;max-width:30vw}
main{display:grid;grid-template-columns:minmax(18rem,28rem) 1fr;min-height:0}
#list{overflow:auto;border-right:1px solid #ccc;padding:.5rem}
#list ul{list-style:none;margin:0;padding:0}
#list li a{display:block;padding:.35rem .5rem;border-bottom:1px solid #eee;color:inherit;
text-decoration:none}
#list li a.current{background:#e8eaf6}
#list .subject{font-weight:600;display:block;word-break:break-all}
#list .meta{font-size:.8rem;color:#555;word-break:break-all}
#view{overflow:auto;padding:.5rem 1rem}
@media (max-width:50rem){main{grid-template-columns:1fr;grid-template-rows:minmax(6rem,35vh) 1fr}
#list{border-right:0;border-bottom:1px solid #ccc}}
"""

#: The page's policy in its <meta>: without frame-ancestors, which browsers
#: ignore there (and log as an error on every load).
_META_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src data:; "
    "style-src 'unsafe-inline'; frame-src 'self'; form-action 'none'; "
    "base-uri 'none'"
)
#: The HTTP header's: the same, and no framing of the page by other sites.
CSP = _META_CSP + "; frame-ancestors 'none'"

_e = _html.escape


def _subject(message: Message) -> str | None:
    no_subject: str | None = None
    return _html.read_field(lambda: message.subject, no_subject, "subject", [])


def _spaced(subject: str | None) -> str | None:
    """A subject as a line shows it: a folded header's tab is white space,
    not the control character ``\\t`` (the message's headers keep it)."""
    return subject.replace("\t", " ") if subject else subject


#: Characters of a subject the list shows (the message's page has it all).
_LISTED_SUBJECT = 300


def _mebibytes(size: int) -> str:
    if size % 2**20:
        return f"{size:,} bytes"
    return f"{size // 2**20} MiB"


def list_fragment(
    messages: Sequence[Message],
    sessions: Sequence[Session],
    number_of: Callable[[Session], int | None] = lambda session: None,
    *,
    dropped: int = 0,
    keep: int = KEEP,
    keep_bytes: int = KEEP_BYTES,
) -> str:
    if not messages and not sessions:
        return '<p class="note">No mail yet. Send some to the sink.</p>'
    if dropped:
        # Where the oldest vanished without a word.
        extra_note = (
            f'<p class="note">Only the last {keep} messages, '
            f"{_mebibytes(keep_bytes)} at most, are kept here: "
            f"{dropped} older one(s) were let go (--save-dir DIR keeps every "
            "message).</p>"
        )
    else:
        extra_note = ""
    items = []
    for message in reversed(messages):
        subject = _subject(message)
        sender = message.envelope.mail_from or "<>"
        items.append(
            f'<li class="item"><a href="/messages/{message.number}" '
            f'data-id="{message.number}"><span class="subject">'
            # printable(): a control character shows as its escape, as in
            # the summary line, not as a glyph (or a terminal's ESC).
            # Cut: one 2 MB subject made every drawing of the list 2 MB.
            f"{_e(printable(shorten(_spaced(subject) or '(no subject)', _LISTED_SUBJECT)))}"
            "</span>"
            f'<span class="meta">#{message.number} {_e(printable(sender))} &rarr; '
            # Cut as the subject is: 3,000 recipients made each drawing of
            # the list 187 KB.
            f"{_e(printable(shorten(', '.join(message.envelope.rcpt_to), _LISTED_SUBJECT)))}"
            " · "
            f"{clock(message.received_at)[:-4]}</span></a></li>"
        )
    unfinished = [s for s in sessions if not s.message_count and not said_nothing(s)]
    extra = ""
    if unfinished:
        extra = "<h2>Connections without a message</h2>" + "".join(
            _html.render_session(_listed_session_record(s), number_of(s))
            for s in unfinished
        )
    return f"{extra_note}<ul>{''.join(items)}</ul>{extra}"


def _listed_session_record(session: Session) -> _html.SessionRecord:
    """`_session_record` with a long transcript cut, as a message page cuts
    one: every change draws the list again on every open page, and one
    client that sent 20,000 NOOPs and no message made it 8 MB."""
    record = _session_record(session)
    lines = record["transcript"].split("\n")
    if len(lines) > _SHOWN_LINES:
        end = len(lines) - _EDGE_LINES
        record["transcript"] = _around(lines, end, end)
    return record


def _session_record(session: Session) -> _html.SessionRecord:
    """`_html.session_record` in the smtpsink command's words: its user has
    the ``--tls`` option, not the settings' ``tls=``."""
    record = _html.session_record(session)
    error = session.tls_error
    if error:  # the sink's words only, not what a client sent (its EHLO)
        record["title"] = record["title"].replace(error, standalone_spelling(error))
    return record


def linked_record(message: Message) -> _html.MessageRecord:
    """`_html.message_record` with the links this server serves: the page
    and ``GET /api/messages/ID`` give the same ones."""
    number = message.number
    attachments = len(
        _html.attachments_of(message, [])  # counted only to name the links
    )
    return _html.message_record(
        message,
        eml_href=f"/api/messages/{number}/raw",
        attachment_hrefs=[
            f"/api/messages/{number}/attachments/{index}"
            for index in range(1, attachments + 1)
        ],
        whole_parts=True,  # the API promises them whole
    )


def message_fragment(message: Message, session_number: int | None = None) -> str:
    # A relay outcome still to come: the page shows the message again when
    # the server says something changed (the outcome, among others).
    pending = message.relay is not None and not message.relay.done
    session = _session_record(message.session)
    session["transcript"] = _message_transcript(message, session["transcript"])
    return (
        ("<span data-relay-pending hidden></span>" if pending else "")
        + _html.render_message(linked_record(message), open_=True, raw_downloads=True)
        + _html.render_session(session, session_number)
    )


#: Lines of a message's session shown on its page when there are more: a
#: connection that sent 20,000 messages put every other message's lines on
#: each one's page (4.7 MB). The first lines (greeting, EHLO, AUTH), the
#: message's own (its MAIL to its "queued as"), the last.
_SHOWN_LINES = 200
_EDGE_LINES = 20


def _message_transcript(message: Message, transcript: str) -> str:
    """``transcript`` (the message's session's), or, when long, its first
    and last lines around the message's own exchanges."""
    lines = transcript.split("\n")
    if len(lines) <= _SHOWN_LINES:
        return transcript
    exchanges = message.session.transcript
    sizes = [len(exchange.lines()) for exchange in exchanges]
    if sum(sizes) != len(lines):  # changed since: cut by lines alone
        return _around(lines, len(lines) - _EDGE_LINES, len(lines) - _EDGE_LINES)
    queued = f"queued as #{message.number}"
    end = next(
        (
            index
            for index, exchange in enumerate(exchanges)
            if exchange.kind == "data" and any(queued in r for r in exchange.replies)
        ),
        None,
    )
    if end is None:  # mail put in, a fault's own reply: no "queued as" line
        return _around(lines, len(lines) - _EDGE_LINES, len(lines) - _EDGE_LINES)
    start = end
    while start > 0 and exchanges[start].command != "MAIL":
        start -= 1
    return _around(lines, sum(sizes[:start]), sum(sizes[: end + 1]))


def _around(lines: list[str], first: int, last: int) -> str:
    """The first `_EDGE_LINES` of ``lines``, ``lines[first:last]`` and the
    last `_EDGE_LINES`, each gap said."""

    def gap(count: int) -> list[str]:
        return (
            [
                f"[... {count} lines not shown: --transcripts and --save-dir "
                "have the whole conversation]"
            ]
            if count > 0
            else []
        )

    head_end = min(_EDGE_LINES, first)
    tail_start = max(last, len(lines) - _EDGE_LINES)
    return "\n".join(
        [
            *lines[:head_end],
            *gap(first - head_end),
            *lines[first:last],
            *gap(tail_start - last),
            *lines[tail_start:],
        ]
    )


class RenderedMessages:
    """The last few message fragments rendered, for a message opened again.

    Rendering a big message (its parts, lint, inline images) takes seconds:
    4.7 s for a 36 MB one, measured; a page asks again on every click.
    Only a fragment that can no longer change is kept: its relay outcome
    settled and its session ended. Request threads share it."""

    def __init__(self, size: int = 4) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._kept: collections.OrderedDict[int, tuple[Message, int | None, str]] = (
            collections.OrderedDict()
        )

    def fragment(self, message: Message, session_number: int | None) -> str:
        """`message_fragment`, from what was kept when it cannot differ."""
        relay = message.relay
        settled = (relay is None or relay.done) and message.session.end is not None
        if settled:
            with self._lock:
                kept = self._kept.get(message.number)
                # The same object: a sink started again numbers from 1.
                if (
                    kept is not None
                    and kept[0] is message
                    and kept[1] == session_number
                ):
                    self._kept.move_to_end(message.number)
                    return kept[2]
        text = message_fragment(message, session_number)
        if settled:
            with self._lock:
                self._kept[message.number] = (message, session_number, text)
                self._kept.move_to_end(message.number)
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
        return text

    def clear(self) -> None:
        """Forget them all ("Delete all": no message kept alive here)."""
        with self._lock:
            self._kept.clear()


def live_page(listed: str, count: int, *, mailboxes: bool) -> str:
    """The live view's page, with the list as it is now (`listed`, of
    `count` messages): right at once, and whole without JavaScript (each
    message is a link to its own page); the script keeps it up to date.
    `mailboxes`: POP3 or IMAP serves the recipients' mailboxes, which
    "Delete all" empties too."""
    question = "Delete every message the sink holds" + (
        ", and empty the recipients' mailboxes (POP3, IMAP)?" if mailboxes else "?"
    )
    # The list's times are the sink's clock, which a container's may not
    # share with the browser's: said once, as index.html says its zone.
    zone = time.strftime("%z")
    body = (
        "<header><h1>smtpsink: captured mail</h1>"
        '<input id="filter" type="search" placeholder="Filter" '
        'aria-label="Filter: words of the subject, sender or recipients">'
        # Announced (politely) to a screen reader: new mail is the news.
        f'<span role="status"><span id="count">{count}</span> '
        "message(s)</span>"
        f'<span class="zone">times UTC{zone[:3]}:{zone[3:]}</span>'
        '<span id="paused" hidden>Live updates paused: too many pages open '
        '<button id="resume" type="button">Resume</button></span>'
        '<span id="lost" role="status" hidden>Not connected: the sink may have '
        "stopped. Trying again...</span>"
        f'<button id="delete" type="button" data-question="{_e(question)}">'
        "Delete all</button></header>"
        # Named landmarks: a screen reader lists them by these names.
        f'<main><nav id="list" aria-label="Messages">{listed}</nav>'
        '<section id="view" aria-label="Message shown">'
        '<p class="note">Select a message.</p></section></main>'
        '<script src="/app.js"></script>'
    )
    return (
        _html.page("smtpsink", body)
        # The page's own copy without frame-ancestors, which browsers take
        # only from the header (in a <meta> it logs an error on every load).
        .replace(_e(_html.PAGE_CSP), _e(_META_CSP), 1)
        .replace("</style>", LIVE_STYLE + "</style>", 1)
    )


def message_summary(message: Message) -> dict[str, Any]:
    problems: list[str] = []
    no_addresses: list[str] = []
    return {
        "id": message.number,
        "subject": _subject(message),
        "from": _html.read_field(
            # Every author: a From may name several (RFC 5322).
            lambda: ", ".join(str(a) for a in message._addresses("From")) or None,
            None,
            "From",
            problems,
        ),
        "to": _html.read_field(
            lambda: [str(a) for a in message.to], no_addresses, "To", problems
        ),
        "mail_from": message.envelope.mail_from,
        "rcpt_to": list(message.envelope.rcpt_to),
        "received_at": message.received_at.isoformat(),
        "size": message.size,
    }


# -- which Host is trusted -------------------------------------------------------------


def _name_or_ip(text: str) -> str | None:
    """``text`` as `HostCheck` compares it: an IP address in its usual
    form, or a host name in lower case; without one trailing dot. None if
    it is neither (a port, a scheme, an ``@``, a space...)."""
    name = text.lower()
    name = name[:-1] if name.endswith(".") else name
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))
    # Letters, digits, hyphens and underscores (docker-compose service
    # names may have them): nothing that parsers could read differently.
    labels = name.split(".")
    if all(label and set(label) <= _NAME_CHARACTERS for label in labels):
        return name
    return None


def _ipv6(text: str) -> str | None:
    """What IPv6 brackets hold, as `_name_or_ip` gives it: an IPv6
    address and nothing else."""
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        return None


def allowed_host(text: str) -> str:
    """A value of ``--http-allow-host`` as `HostCheck` compares it (``*``
    is kept); ValueError, saying what was expected, if it is not one."""
    if text == "*":
        return text
    if text.startswith("[") and text.endswith("]"):
        name = _ipv6(text[1:-1])
    else:
        name = _name_or_ip(text)
    if name is None:
        raise ValueError(
            "must be a host name or an IP address (no scheme, port or pattern), "
            f"or '*' for any host, got {text!r}"
        )
    return name


def host_of(header: str) -> str | None:
    """The host a ``Host`` header names, as `_name_or_ip` gives it (port
    and IPv6 brackets dropped); None if malformed. Parsed here, not with
    urllib.parse: that reads ``evil.example@127.0.0.1`` as 127.0.0.1 and
    raises on ``[name]``."""
    if header.startswith("["):
        inside, bracket, port = header[1:].partition("]")
        name = _ipv6(inside) if bracket else None  # not "[::1", "[name]"
    else:
        host, colon, digits = header.partition(":")
        name, port = _name_or_ip(host), colon + digits
    # RFC 3986: a port is a colon and ASCII digits, perhaps none.
    if port[:1] not in ("", ":") or not all(c in "0123456789" for c in port[1:]):
        return None
    return name


def as_sent(text: str) -> str:
    """A request's path or header for a message: http.server reads the
    bytes as Latin-1 ("²" came out "Â²"), so as UTF-8 again, and cut at
    200 characters (a path of 5,000 digits was echoed whole)."""
    text = text.encode("latin-1", "replace").decode("utf-8", "replace")
    return text if len(text) <= 200 else text[:200] + "..."


class HostCheck:
    """Which ``Host`` headers the live view answers.

    DNS rebinding: a page on a site its owner controls points the site's
    name at the sink's address; the browser then lets that page read the
    sink's answers, which are the captured mail (password-reset links).
    Its requests carry the site's name as ``Host``: that is what is
    checked. On loopback only ``localhost`` and loopback addresses are
    answered. With ``--allow-remote`` clients in other containers or on
    other machines name the sink as they can, so also: any IP address (a
    rebinding page has a name, not an address), a name without a dot (a
    docker-compose service, a machine on the local network; a name that
    anyone can register has a dot) and this machine's own names.
    ``--http-allow-host`` adds names in either case; ``*`` turns the check
    off.
    """

    def __init__(self, allow_remote: bool, names: Sequence[str] = ()) -> None:
        self.allow_remote = allow_remote
        given = [allowed_host(name) for name in names]
        self.any = "*" in given
        self.names = {name for name in given if name != "*"} | {"localhost"}
        if allow_remote:
            # getfqdn() may ask DNS: once, here, not on each request.
            for own in (socket.gethostname(), socket.getfqdn()):
                name = _name_or_ip(own)
                if name is not None:
                    self.names.add(name)

    def refusal(self, header: str | None) -> str | None:
        """Why a request with this ``Host`` is refused, or None."""
        if self.any:
            return None
        if header is None:
            return (
                "no Host header: the view answers only requests that say "
                f"which host they are for (see {ALLOW_HOST_OPTION})"
            )
        shown = as_sent(header)
        host = host_of(header)
        if host is None:
            return (
                f"Host {shown!r} is malformed: expected a host name or an IP "
                "address, perhaps with :PORT"
            )
        if host in self.names or self._trusted(host):
            return None
        answered = (
            "IP addresses, names without a dot, this machine's names"
            if self.allow_remote
            else "localhost, loopback addresses"
        )
        option = f"{ALLOW_HOST_OPTION} {f'[{host}]' if ':' in host else host}"
        return (
            f"Host {shown!r} is refused: the live view answers {answered} and "
            f"the names given with {ALLOW_HOST_OPTION}, so that no web page can "
            "point its own name at the sink and read the mail (DNS rebinding); "
            f"if you reach the sink by this name, start smtpsink with {option}"
        )

    def _trusted(self, host: str) -> bool:
        from ._relay import is_loopback_host  # [::ffff:127.0.0.1] too

        try:
            ipaddress.ip_address(host)
        except ValueError:
            return self.allow_remote and "." not in host
        return self.allow_remote or is_loopback_host(host)


# -- the server ---------------------------------------------------------------------


#: How often a waiting /api/wait looks whether its client left, in seconds.
_GONE_CHECK = 1.0

#: Seconds a stop gives requests to finish writing their answers.
_ANSWER_GRACE = 5.0


class LiveServer(http.server.ThreadingHTTPServer):
    """The HTTP server: `start` binds and serves on a thread, `stop` ends
    every request (event streams included) and joins the threads."""

    daemon_threads = False
    block_on_close = True
    #: The listen backlog (socketserver's default is 5): a page's requests
    #: and event streams, and scripts polling the API, come in bursts.
    request_queue_size = 128

    def __init__(
        self,
        host: str,
        port: int,
        *,
        allow_remote: bool = False,
        allow_hosts: Sequence[str] = (),
        max_streams: int = MAX_STREAMS,
        max_waits: int = MAX_WAITS,
    ) -> None:
        self.inbox = Inbox()
        self.rendered = RenderedMessages()
        #: Told to each page as its event stream opens: a page that hears
        #: another one after reconnecting met a sink started again, which
        #: numbers its mail from 1 (and closes the message it showed).
        self.run_id = secrets.token_hex(8)
        self.hosts = HostCheck(allow_remote, allow_hosts)
        self.max_streams = max_streams
        self.max_waits = max_waits
        #: The open event streams' release flags, oldest first, and the
        #: number of /api/wait requests waiting; under the inbox's lock.
        self._streams: list[threading.Event] = []
        self.waiting = 0
        #: Called (on the request's thread) for "delete all", before the
        #: view is emptied: the CLI empties the POP3/IMAP mailboxes there,
        #: and returns the number of the last message they had, so that
        #: the view drops the same messages (those still on their way to
        #: it too) and keeps what came later.
        self.on_delete: Callable[[], int] | None = None
        #: Whether POP3 or IMAP serves the mailboxes "delete all" empties
        #: (the page's question names them only then).
        self.serves_mailboxes = False
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None
        self._open: set[socket.socket] = set()
        # Notified as each request ends.
        self._open_changed = threading.Condition()
        self._stopped = False

    @property
    def url(self) -> str:
        """Where a browser on this machine finds it (loopback when bound to
        every interface: browsers refuse ``http://0.0.0.0/``)."""
        from ._server import connectable

        host, port = self.server_address[:2]
        return f"http://{format_address(connectable(str(host)), int(port))}/"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.serve_forever, name="smtpsink-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Idempotent: the CLI stops it before its final report and again
        on the way out, whatever happened."""
        if self._stopped:
            return
        self._stopped = True
        self.inbox.close()
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
            self._thread = None
        with self._open_changed:
            # Wake handlers blocked reading an idle connection. Only the
            # reading side: a handler that the closing inbox just woke (a
            # wait, an event stream) still writes its answer...
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RD)
            # ...unless its client reads nothing: then it is cut off.
            self._open_changed.wait_for(lambda: not self._open, _ANSWER_GRACE)
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        self.server_close()  # joins the request threads

    def add_stream(self) -> threading.Event:
        """A new event stream's release flag; past `max_streams`, the
        oldest stream's is set (and it wakes)."""
        released = threading.Event()
        with self.inbox.changed:
            while len(self._streams) >= self.max_streams:
                self._streams.pop(0).set()
                self.inbox.changed.notify_all()
            self._streams.append(released)
        return released

    def end_stream(self, released: threading.Event) -> None:
        with self.inbox.changed:
            if released in self._streams:
                self._streams.remove(released)

    def start_wait(self) -> bool:
        """Whether a wait may start (then `end_wait` when it ends)."""
        with self.inbox.changed:
            if self.waiting >= self.max_waits:
                return False
            self.waiting += 1
            return True

    def end_wait(self) -> None:
        with self.inbox.changed:
            self.waiting -= 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A browser that reloads, or a curl stopped with Ctrl-C, drops its
        # connection before the answer is written: not worth a traceback.
        # (macOS may say EPROTOTYPE or ESHUTDOWN for it.)
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError) or (
            isinstance(error, OSError)
            and error.errno in (errno.EPROTOTYPE, errno.ESHUTDOWN)
        ):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_changed:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_changed:
            self._open.discard(request)
            self._open_changed.notify_all()
        super().shutdown_request(request)


_N = TypeVar("_N", int, float)


#: A number in a query as a person types it: int() and float() also take
#: "1_0", full-width digits and blanks around, which a path refuses.
_WHOLE = re.compile(r"-?[0-9]{1,18}")  # a sign: "since" says why -5 is none
# An exponent too, as a script's float formatting may write it (1e-05).
# As many digits as a float holds, after the point too: 0.0000000001 was
# "not a number".
_DECIMAL = re.compile(
    r"-?(?:[0-9]{1,18}(?:\.[0-9]{0,18})?|\.[0-9]{1,18})(?:[eE][-+]?[0-9]{1,3})?"
)


def _number(name: str, value: str, kind: Callable[[str], _N]) -> _N:
    if (_WHOLE if kind is int else _DECIMAL).fullmatch(value) is None:
        what = "a whole number" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return kind(value)


def _download_as(name: str) -> str:
    """The Content-Disposition of a download named ``name`` (from
    `_html.safe_name`: no quote or backslash). http.server writes headers
    as Latin-1, so a name beyond ASCII goes as RFC 6266 says: an ASCII
    stand-in, and the UTF-8 name, which browsers prefer."""
    if name.isascii():
        return f'attachment; filename="{name}"'
    stand_in = "".join(c if c.isascii() else "_" for c in name)
    quoted = urllib.parse.quote(name, safe="")
    return f"attachment; filename=\"{stand_in}\"; filename*=UTF-8''{quoted}"


def _whole_number(text: str) -> int | None:
    """A message's or an attachment's number in a path, or None: ASCII
    digits only (str.isdigit() also takes a superscript two, which int()
    refuses), and short enough for int() (no number here has 20 digits)."""
    if text.isascii() and text.isdigit() and len(text) < 20:
        return int(text)
    return None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: LiveServer
    # One request per connection: an event stream ends its connection, and
    # no idle keep-alive connection can hold a thread at shutdown.
    protocol_version = "HTTP/1.0"
    server_version = "smtpsink"
    # An idle connection that never sends a request does not hold a thread.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the terminal is for mail, not for the page's requests

    # -- guards ------------------------------------------------------------

    def _host_refused(self) -> bool:
        """Refuses (403) a request whose ``Host`` is not trusted
        (`HostCheck`): a page on another site that points its name at this
        address (DNS rebinding) reads nothing."""
        given = self.headers.get_all("Host") or []
        if len(given) > 1:
            # The first was checked, and another may be what a proxy on the
            # way read (RFC 9112 3.2: a 400).
            self._refuse(http.HTTPStatus.BAD_REQUEST, "more than one Host header")
            return True
        # An absolute URL as the target names the host, whatever Host says
        # (RFC 9112 3.2.2): "GET http://evil.example/ ..., Host: localhost".
        try:
            target = urllib.parse.urlsplit(self.path)
        except ValueError:  # "http://[::1/": a bracket not closed
            self._refuse(http.HTTPStatus.BAD_REQUEST, "malformed request target")
            return True
        absolute = target.scheme and target.netloc  # not "http:/api/..."
        host = target.netloc if absolute else (given[0] if given else None)
        why = self.server.hosts.refusal(host)
        if why is not None:
            self._refuse(http.HTTPStatus.FORBIDDEN, why)
        return why is not None

    def _listing(self) -> tuple[str, int]:
        """The list of messages as HTML, and how many it lists."""
        inbox = self.server.inbox
        _, messages, sessions = inbox.snapshot()
        listed = list_fragment(
            messages,
            sessions,
            inbox.session_number,
            dropped=inbox.dropped,
            keep=inbox.keep,
            keep_bytes=inbox.keep_bytes,
        )
        return listed, len(messages)

    def _other_site_refused(self, page: bool) -> bool:
        """Refuses (403) a request that a page of another origin made the
        browser send (``Sec-Fetch-Site``, which browsers add; ``Origin``):
        it cannot read the answer, but it can time it, and /api/wait answers
        at once only when a message matches (a reset token was read a
        character at a time), and it can take the event streams and wait
        slots of the user's own pages. A link to a ``page`` of the view,
        followed in a tab, is fine; curl and scripts send neither header."""
        site = self.headers.get("Sec-Fetch-Site")
        if site not in ("cross-site", "same-site") and self._same_origin():
            return False
        if (
            page
            and self.headers.get("Sec-Fetch-Mode") == "navigate"
            and self.headers.get("Sec-Fetch-Dest") == "document"
        ):
            return False
        self._refuse(
            http.HTTPStatus.FORBIDDEN,
            "a request from a page of another origin: the live view answers "
            "its own pages, links to them opened in a tab, and clients that "
            "are no browser (curl, scripts)",
        )
        return True

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        if origin is None:
            return True  # curl, scripts: not a browser acting for a page
        return origin.rstrip("/") == f"http://{self.headers.get('Host', '')}"

    def _refuse(self, status: http.HTTPStatus, why: str) -> None:
        self._send_json({"error": why}, status)

    # -- responses ---------------------------------------------------------

    def _send(
        self,
        body: bytes,
        content_type: str,
        status: http.HTTPStatus = http.HTTPStatus.OK,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def end_headers(self) -> None:
        # Every response, http.server's own error pages (400, 431, 501)
        # too: they quote the request, escaped, but nothing on them may run
        # or be sniffed into something else.
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        # A page of another site that opened one in a window could read its
        # number of frames (whether a message has an HTML part): it gets
        # no handle on the window.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        super().end_headers()

    def _send_html(
        self, markup: str, status: http.HTTPStatus = http.HTTPStatus.OK
    ) -> None:
        self._send(
            markup.encode("utf-8", "replace"), "text/html; charset=utf-8", status
        )

    def _send_json(
        self,
        data: object,
        status: http.HTTPStatus = http.HTTPStatus.OK,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = json.dumps(data).encode("ascii")
        self._send(body, "application/json; charset=utf-8", status, extra)

    def _message(self, text: str, page: str | None = None) -> Message | None:
        """The kept message numbered ``text``, or None after a 404: JSON for
        the API, HTML for a page or a fragment of one (``page``: "page" or
        "fragment"), which a browser shows (the raw JSON did)."""
        number = _whole_number(text)
        message = self.server.inbox.get(number) if number is not None else None
        if message is None:
            if page is None:
                self._refuse(http.HTTPStatus.NOT_FOUND, f"no message {as_sent(text)!r}")
            else:
                note = (
                    f'<p class="note">No message {_e(printable(as_sent(text)))} here: it was '
                    "deleted, let go as newer mail came, or came before the sink "
                    'was started again. <a href="/">All messages</a></p>'
                )
                self._send_html(
                    _html.page("smtpsink", note) if page == "page" else note,
                    http.HTTPStatus.NOT_FOUND,
                )
        return message

    # -- routes --------------------------------------------------------------

    def do_GET(self) -> None:
        if self._host_refused():
            return
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        # Pages and downloads (a raw message, an attachment) a link in a
        # chat may open: followed as a top-level navigation.
        page = (
            not parts
            or (len(parts) == 2 and parts[0] == "messages")
            or (
                len(parts) == 4
                and parts[:2] == ["api", "messages"]
                and parts[3] == "raw"
            )
            or (
                len(parts) == 5
                and parts[:2] == ["api", "messages"]
                and parts[3] == "attachments"
            )
        )
        if self._other_site_refused(page):
            return
        inbox = self.server.inbox
        if not parts:
            listed, count = self._listing()
            mailboxes = self.server.serves_mailboxes
            self._send_html(live_page(listed, count, mailboxes=mailboxes))
        elif parts == ["app.js"]:
            self._send(SCRIPT.encode(), "text/javascript; charset=utf-8")
        elif parts == ["events"]:
            self._events()
        elif parts == ["fragments", "list"]:
            self._send_html(self._listing()[0])
        elif len(parts) == 3 and parts[:2] == ["fragments", "messages"]:
            message = self._message(parts[2], "fragment")
            if message is not None:
                number = inbox.session_number(message.session)
                self._send_html(self.server.rendered.fragment(message, number))
        elif len(parts) == 2 and parts[0] == "messages":
            message = self._message(parts[1], "page")
            if message is not None:
                number = inbox.session_number(message.session)
                # A shared link opens as its own tab: named by its message,
                # with a way back to the list (all were "smtpsink", with
                # none).
                subject = shorten(_spaced(_subject(message)) or "(no subject)", 80)
                self._send_html(
                    _html.page(
                        f"#{message.number} {printable(subject)} - smtpsink",
                        f'<p><a href="/#{message.number}">All messages</a></p>'
                        + self.server.rendered.fragment(message, number),
                    )
                )
        elif parts == ["api", "messages"]:
            if url.query:
                # "?limit=1" or "?subject=x" was ignored, and everything
                # came back as if it had been applied.
                self._refuse(
                    http.HTTPStatus.BAD_REQUEST,
                    "/api/messages takes no parameters (it lists every message); "
                    "/api/wait takes criteria",
                )
                return
            _, messages, _ = inbox.snapshot()
            self._send_json([message_summary(m) for m in messages])
        elif len(parts) == 3 and parts[:2] == ["api", "messages"]:
            message = self._message(parts[2])
            if message is not None:
                self._send_json({"id": message.number, **linked_record(message)})
        elif len(parts) == 4 and parts[:2] == ["api", "messages"] and parts[3] == "raw":
            message = self._message(parts[2])
            if message is not None:
                self._send(
                    message.raw,
                    "message/rfc822",
                    # The name --save-dir gives it: "0001.eml" and "0001 (1).eml"
                    # from two runs told nothing of what they held.
                    extra={
                        "Content-Disposition": _download_as(
                            saved_name(message, message.number)
                        )
                    },
                )
        elif (
            len(parts) == 5
            and parts[:2] == ["api", "messages"]
            and parts[3] == "attachments"
        ):
            self._attachment(parts[2], parts[4])
        elif parts == ["api", "wait"]:
            self._wait(urllib.parse.parse_qs(url.query, keep_blank_values=True))
        else:
            self._refuse(
                http.HTTPStatus.NOT_FOUND, f"no such page: {as_sent(url.path)}"
            )

    def do_HEAD(self) -> None:
        """GET's headers without its body (``curl -I``); `_send` and
        `_events` leave the body out."""
        self.do_GET()

    def do_DELETE(self) -> None:
        if self._host_refused():
            return
        if self._other_site_refused(page=False):
            return
        if urllib.parse.urlsplit(self.path).query:
            # "?id=2" deleted every message.
            self._refuse(
                http.HTTPStatus.BAD_REQUEST,
                "DELETE /api/messages takes no parameters: it deletes every message",
            )
        elif urllib.parse.urlsplit(self.path).path.rstrip("/") == "/api/messages":
            on_delete = self.server.on_delete
            up_to = on_delete() if on_delete is not None else None
            self.server.rendered.clear()
            self._send_json({"deleted": self.server.inbox.clear(up_to)})
        else:
            # Only the whole list can be deleted: 405 with what the path
            # takes, as for every other method (it was a 404).
            self._method_not_allowed()

    def _method_not_allowed(self) -> None:
        """405 with the methods the path takes, as JSON like every other
        refusal (http.server answered an HTML 501, as if the method were
        unknown to HTTP)."""
        if self._host_refused():
            return
        path = urllib.parse.urlsplit(self.path).path.rstrip("/")
        allowed = "GET, HEAD, DELETE" if path == "/api/messages" else "GET, HEAD"
        self._send_json(
            {"error": f"{self.command} is not allowed here; allowed: {allowed}"},
            http.HTTPStatus.METHOD_NOT_ALLOWED,
            extra={"Allow": allowed},
        )

    do_POST = do_PUT = do_PATCH = do_OPTIONS = _method_not_allowed

    def _attachment(self, number: str, index: str) -> None:
        message = self._message(number)
        if message is None:
            return
        attachments = _html.attachments_of(message, [])
        position = _whole_number(index)
        if position is None or not 1 <= position <= len(attachments):
            self._refuse(http.HTTPStatus.NOT_FOUND, f"no attachment {index!r}")
            return
        item = attachments[position - 1]
        name = (
            _html.safe_name(item.filename, position)
            if item.filename
            else _html.unnamed_attachment(position, item.content_type)
        )
        # Always a download, never rendered: a hostile .html stays a file.
        self._send(
            item.content,
            "application/octet-stream",
            extra={"Content-Disposition": _download_as(name)},
        )

    def _wait(self, query: dict[str, list[str]]) -> None:
        from ._match import CRITERIA_NAMES, check_names

        criteria: dict[str, Any] = {}
        since, timeout = 0, 10.0
        try:
            for name, values in query.items():
                if len(values) > 1:  # which one was meant? Not the last, silently.
                    raise ValueError(
                        f"{name} is given {len(values)} times; give it once"
                    )
                value = values[0]
                if name == "since":
                    since = _number(name, value, int)
                    if since < 0:  # taken, and the same as 0, silently
                        raise ValueError(
                            f"since must be a message number, 0 or more, got {since}"
                        )
                elif name == "timeout":
                    # + 0.0: "-0" is 0, and was said back as "within -0 s".
                    timeout = _number(name, value, float) + 0.0
                    if not 0 <= timeout <= MAX_WAIT:
                        raise ValueError(f"timeout must be 0 to {MAX_WAIT:g} seconds")
                elif name == "from":
                    criteria["from_"] = value
                # Python's spelling is no parameter: with it, "?from=a&from_=b"
                # gave the sender twice and took the last, silently.
                elif name in CRITERIA_NAMES and name not in ("header", "from_"):
                    criteria[name] = value
                else:
                    raise ValueError(
                        f"unknown parameter {name!r}; use since, timeout and "
                        + ", ".join(
                            "from" if n == "from_" else n
                            for n in CRITERIA_NAMES
                            if n != "header"
                        )
                    )
            # As wait_for checks them: "to=ann@" (a template's empty domain)
            # or two addresses in one matched nothing, and the request
            # waited out its timeout for a 408.
            try:
                check_names(criteria, in_query=True)
            except TypeError as error:
                # In the query's words: "from", not Python's "from_=".
                raise ValueError(str(error).replace("from_=", "from=")) from None
        except ValueError as error:
            self._refuse(http.HTTPStatus.BAD_REQUEST, str(error))
            return
        inbox = self.server.inbox
        if not self.server.start_wait():
            limit = self.server.max_waits
            self._send(
                json.dumps(
                    {
                        "error": f"too many requests waiting: {limit} at once at "
                        f"most, and this one would be one more; retry after "
                        f"{WAIT_RETRY_AFTER} s"
                    }
                ).encode("ascii"),
                "application/json; charset=utf-8",
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                extra={"Retry-After": str(WAIT_RETRY_AFTER)},
            )
            return
        try:
            message = inbox.wait_for(criteria, since, timeout, self._client_gone)
        finally:
            self.server.end_wait()
        if message is None and not inbox.closing and self._client_gone():
            # No one to answer: its slot was held for nothing until the
            # timeout (up to 300 s), and 32 such waits refused all others.
            self.close_connection = True
            return
        if message is not None:
            self._send_json(message_summary(message))
            return
        wanted = ", ".join(
            f"{'from' if name == 'from_' else name}={value!r}"
            for name, value in criteria.items()
        )
        wanted = f"a message matching {wanted}" if wanted else "a message"
        if inbox.closing:
            self._refuse(
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"the sink stopped before {wanted} came",
            )
        else:
            self._refuse(
                http.HTTPStatus.REQUEST_TIMEOUT,
                f"no {wanted.removeprefix('a ')} within {timeout:g} s",
            )

    def _client_gone(self) -> bool:
        """Whether the client closed its connection (an end of stream is
        waiting to be read; a next request, pipelined, is no end)."""
        try:
            return readable_now(self.connection) and not self.connection.recv(
                1, socket.MSG_PEEK
            )
        except (OSError, ValueError):  # reset, or closed already
            return True

    def _events(self) -> None:
        """Server-sent events: ``data: <version>`` after every change."""
        # Before the page learns the stream is open (and so fetches the
        # list, see SCRIPT): every change after that list is told.
        inbox = self.server.inbox
        version = inbox.version
        self.send_response(http.HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command == "HEAD":
            return
        released = self.server.add_stream()
        try:
            self.wfile.write(
                f"retry: 1000\n\nevent: hello\ndata: {self.server.run_id}\n\n".encode()
            )
            self.wfile.flush()
            while True:
                newer = inbox.wait_change(version, KEEPALIVE, released)
                if inbox.closing:
                    break
                if released.is_set():
                    # A newer page took its place (MAX_STREAMS): the page
                    # stops listening rather than reconnect.
                    self.wfile.write(b"event: released\ndata: released\n\n")
                    self.wfile.flush()
                    break
                if newer != version:
                    version = newer
                    self.wfile.write(f"data: {version}\n\n".encode())
                else:
                    self.wfile.write(b": keep-alive\n\n")
                self.wfile.flush()
        except OSError:
            pass  # the page was closed
        finally:
            self.server.end_stream(released)
