"""What a test holds: a window on one sink's store, with queries, waits and
assertions. Failure messages say what was expected and list what arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from . import _match
from ._faults import FaultControls
from ._match import Criteria
from ._message import Message
from ._report import plural
from ._session import Session
from ._settings import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._server import SMTPSink
    from ._settings import SinkSettings
    from ._store import Store


class Messages(Sequence[Message]):
    """An ordered, read-only snapshot of messages, with queries."""

    def __init__(
        self, items: Sequence[Message], source: Sequence[Message] | None = None
    ) -> None:
        self._items = tuple(items)
        # Everything the query started from, so that a failure after
        # filter() can still list what arrived, not just what was left.
        self._source = self._items if source is None else tuple(source)

    @overload
    def __getitem__(self, index: int) -> Message: ...
    @overload
    def __getitem__(self, index: slice) -> Messages: ...
    def __getitem__(self, index: int | slice) -> Message | Messages:
        if isinstance(index, slice):
            return Messages(self._items[index], self._source)
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Message]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Messages):
            return self._items == other._items
        if isinstance(other, (list, tuple)):
            return list(self._items) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def filter(self, **criteria: Unpack[Criteria]) -> Messages:
        """The messages matching every criterion, in order."""
        _match.check_names(criteria)
        return Messages(
            [m for m in self._items if _match.matches(m, criteria)], self._source
        )

    def one(self, **criteria: Unpack[Criteria]) -> Message:
        """The only message matching ``criteria``; fails unless exactly one does."""
        __tracebackhide__ = True
        found = self.filter(**criteria)
        if len(found) != 1:
            raise AssertionError(
                failure_report("exactly 1 message", criteria, found, self._source)
            )
        return found[0]

    def first(self) -> Message:
        __tracebackhide__ = True
        if not self._items:
            raise AssertionError(self._none_left("first"))
        return self._items[0]

    def last(self) -> Message:
        __tracebackhide__ = True
        if not self._items:
            raise AssertionError(self._none_left("last"))
        return self._items[-1]

    def _none_left(self, which: str) -> str:
        if not self._source:
            return f"no messages arrived, so there is no {which} one"
        return failure_report(
            f"a {which} message",
            {},
            (),
            self._source,
            verb="no messages left after filtering; wanted",
        )

    def __repr__(self) -> str:
        if not self._items:
            return "Messages([])"
        inner = "\n".join(f"  {m!r}," for m in self._items)
        return f"Messages([\n{inner}\n])"


class Mailbox(FaultControls):
    """A test's view of one sink: what arrived since it was made (or cleared).

    The ``smtpsink`` fixture is a `Mailbox` on the session's default sink.
    """

    def __init__(self, sink: SMTPSink, store: Store, cursor: tuple[int, int]) -> None:
        self._sink = sink
        self._store = store
        self._cursor = cursor
        self.default_timeout: float = DEFAULT_TIMEOUT
        """Seconds `wait_for` waits when given no timeout."""

    # -- where to send ------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._sink.host

    @property
    def port(self) -> int:
        return self._sink.port

    @property
    def url(self) -> str:
        return self._sink.url

    @property
    def settings(self) -> SinkSettings:
        return self._sink.settings

    @property
    def sink(self) -> SMTPSink:
        """The server behind this view."""
        return self._sink

    def ssl_context(self) -> ssl.SSLContext:
        """A new client context that trusts this sink's certificate (and
        nothing else), with host name checking on."""
        from ._tls import authority

        self._require_tls("ssl_context()")
        return authority().client_context()

    @property
    def ca_path(self) -> str:
        """Path of a PEM file with the CA that signed the sink's certificate."""
        from ._tls import authority

        self._require_tls("ca_path")
        return authority().ca_path

    def _require_tls(self, what: str) -> None:
        if self.settings.tls is None:
            raise RuntimeError(
                f"{what} is for TLS sinks; this sink has tls=None. Ask for one with "
                "@pytest.mark.smtpsink(tls='starttls') or smtpsink_factory(tls=...)"
            )

    def env(self, prefix: str = "SMTP_") -> dict[str, str]:
        """Settings for apps configured by environment variables.

        ``{"SMTP_HOST": ..., "SMTP_PORT": ..., "SMTP_URL": ...}`` and, for TLS
        sinks, ``SMTP_TLS`` (``starttls`` or ``implicit``) and ``SMTP_CA_FILE``.
        Use with ``monkeypatch.setenv`` or ``subprocess.run(env=...)``.
        """
        values = {
            f"{prefix}HOST": self.host,
            f"{prefix}PORT": str(self.port),
            f"{prefix}URL": self.url,
        }
        if self.settings.tls is not None:
            values[f"{prefix}TLS"] = (
                "implicit" if self.settings.tls == "implicit" else "starttls"
            )
            values[f"{prefix}CA_FILE"] = self.ca_path
        return values

    # -- what arrived --------------------------------------------------------------

    @property
    def messages(self) -> Messages:
        """The messages that arrived in this view, oldest first (a snapshot)."""
        self._sink.check_running()
        return Messages(self._store.messages_since(self._cursor))

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The SMTP connections opened in this view, oldest first."""
        self._sink.check_running()
        return self._store.sessions_since(self._cursor)

    def _snapshot(self) -> tuple[Messages, tuple[Session, ...]]:
        """Messages and sessions without the health checks: for reports,
        which must show what arrived even when the sink is in trouble."""
        return (
            Messages(self._store.messages_since(self._cursor)),
            self._store.sessions_since(self._cursor),
        )

    def clear(self) -> None:
        """Start this mailbox afresh: what arrived so far is no longer shown.

        Other mailboxes on the same sink are not affected.
        """
        self._cursor = self._store.cursor()

    # -- assertions --------------------------------------------------------------------

    # The overloads overlap on purpose: count=1 (or none) gives the Message, any
    # other count a Messages. An int that is 1 only at run time still gets the
    # Message, which no annotation can say, so mypy's overlap check is muted.
    @overload
    def assert_sent(  # type: ignore[overload-overlap]
        self, count: Literal[1] | None = None, **criteria: Unpack[Criteria]
    ) -> Message: ...
    @overload
    def assert_sent(self, count: int, **criteria: Unpack[Criteria]) -> Messages: ...
    def assert_sent(
        self, count: int | None = None, **criteria: Unpack[Criteria]
    ) -> Message | Messages:
        """Assert that mail matching ``criteria`` arrived.

        Without ``count``: at least one message; returns the latest match.
        With ``count=1``: exactly one, returned. With ``count=N``: exactly N,
        returned as `Messages`.
        """
        __tracebackhide__ = True
        _match.check_names(criteria)
        _check_count(count)
        everything = self.messages
        found = everything.filter(**criteria)
        ok = len(found) >= 1 if count is None else len(found) == count
        if not ok:
            wanted = "at least 1 message" if count is None else plural(count, "message")
            raise AssertionError(failure_report(wanted, criteria, found, everything))
        if count is None:
            return found[-1]
        return found[0] if count == 1 else found

    def assert_not_sent(self, **criteria: Unpack[Criteria]) -> None:
        """Assert that no message matching ``criteria`` arrived."""
        __tracebackhide__ = True
        _match.check_names(criteria)
        everything = self.messages
        found = everything.filter(**criteria)
        if found:
            raise AssertionError(
                failure_report("no message", criteria, found, everything)
            )

    def assert_nothing_sent(self, within: float = 0.0) -> None:
        """Assert that no mail arrived, watching ``within`` more seconds for
        late mail (failing the moment any arrives)."""
        __tracebackhide__ = True
        if within < 0:
            raise ValueError(f"within must be >= 0 seconds, got {within!r}")
        if within:
            self._wait(lambda: bool(self._store.messages_since(self._cursor)), within)
        everything = self.messages
        if everything:
            extra = f" (watched {within:g} s)" if within else ""
            raise AssertionError(
                failure_report(f"no message{extra}", {}, everything, everything)
            )

    # -- waiting -------------------------------------------------------------------------

    @overload  # overlaps the next on purpose, as assert_sent's do
    def wait_for(  # type: ignore[overload-overlap]
        self,
        count: Literal[1] = 1,
        timeout: float | None = None,
        **criteria: Unpack[Criteria],
    ) -> Message: ...
    @overload
    def wait_for(
        self, count: int, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Messages: ...
    def wait_for(
        self, count: int = 1, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Message | Messages:
        """Block until ``count`` messages matching ``criteria`` have arrived.

        Wakes the moment the server stores a match. Returns the message (or
        the first ``count`` matches); fails after ``timeout`` seconds (default:
        `default_timeout`, set by ``--smtpsink-timeout``) listing what arrived.
        """
        __tracebackhide__ = True
        _match.check_names(criteria)
        _check_count(count, allow_none=False)
        limit = self._timeout(timeout)

        def enough() -> bool:
            return len(self._store_filter(criteria)) >= count

        started = time.monotonic()
        if not self._wait(enough, limit):
            raise self._timeout_error(
                count, criteria, limit, time.monotonic() - started
            )
        return self._waited(count, criteria)

    @overload  # overlaps the next on purpose, as assert_sent's do
    async def wait_for_async(  # type: ignore[overload-overlap]
        self,
        count: Literal[1] = 1,
        timeout: float | None = None,
        **criteria: Unpack[Criteria],
    ) -> Message: ...
    @overload
    async def wait_for_async(
        self, count: int, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Messages: ...
    async def wait_for_async(
        self, count: int = 1, timeout: float | None = None, **criteria: Unpack[Criteria]
    ) -> Message | Messages:
        """The awaitable twin of `wait_for`: the event loop keeps running while
        it waits (asyncio, including pytest-asyncio and anyio's asyncio backend)."""
        __tracebackhide__ = True
        _match.check_names(criteria)
        _check_count(count, allow_none=False)
        self._sink.check_running(for_waiting=True)
        limit = self._timeout(timeout)
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        def wake() -> None:  # runs on the server thread
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(arrived.set)

        started = loop.time()
        self._store.add_listener(wake)
        try:
            while True:
                arrived.clear()
                self._sink.check_running(for_waiting=True)
                if len(self._store_filter(criteria)) >= count:
                    return self._waited(count, criteria)
                remaining = started + limit - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(arrived.wait(), remaining)
        finally:
            self._store.remove_listener(wake)
        raise self._timeout_error(count, criteria, limit, loop.time() - started)

    def wait_until(
        self, condition: Callable[[], object], timeout: float | None = None
    ) -> None:
        """Block until ``condition()`` is true, re-checking whenever the sink
        records something (every line of every conversation, every message).

        For conditions on the conversation, e.g.
        ``smtpsink.wait_until(lambda: smtpsink.sessions[-1].end is not None)``.
        Fails after ``timeout`` seconds (default `default_timeout`), listing
        the sessions and messages of this mailbox.
        """
        __tracebackhide__ = True
        limit = self._timeout(timeout)
        check = _NotYet(condition)
        if not self._wait(check, limit):
            name = getattr(condition, "__name__", repr(condition))
            messages, sessions = self._snapshot()
            lines = [f"wait_until({name}) still false after {limit:g} s."]
            if check.error is not None:
                # A condition that raises every time is more likely a bug in
                # it than a slow sink: show what it raised.
                lines.append(
                    "Its last call raised "
                    f"{type(check.error).__name__}: {check.error} "
                    "(an IndexError or KeyError counts as 'not yet')."
                )
            lines.append(f"Sessions in this test ({len(sessions)}):")
            lines.extend(f"  {_session_line(s)}" for s in sessions[:_LISTED])
            if not sessions:
                lines.append("  (none)")
            lines.append(f"Messages in this test ({len(messages)}):")
            lines.extend(f"  {m.summary()}" for m in messages[:_LISTED])
            if not messages:
                lines.append("  (none)")
            raise AssertionError("\n".join(lines))

    def _store_filter(self, criteria: Criteria) -> list[Message]:
        return [
            m
            for m in self._store.messages_since(self._cursor)
            if _match.matches(m, criteria)
        ]

    def _waited(self, count: int, criteria: Criteria) -> Message | Messages:
        found = self._store_filter(criteria)[:count]
        return found[0] if count == 1 else Messages(found)

    def _timeout(self, timeout: float | None) -> float:
        limit = self.default_timeout if timeout is None else timeout
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {limit!r}")
        return float(limit)

    def _wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait on the store's Condition until ``predicate()`` or timeout.

        The predicate runs outside the lock: matching may parse messages, and
        the server thread must never wait for a test's parsing to store mail.
        """
        store = self._store
        deadline = time.monotonic() + timeout
        with store.changed:
            store.watchers += 1
        try:
            while True:
                # Each time round: the server thread may have died, or refused
                # mail over max_stored_bytes, while we waited (both wake us).
                self._sink.check_running(for_waiting=True)
                with store.changed:
                    seen = store.version
                if predicate():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with store.changed:
                    store.changed.wait_for(_moved_on(store, seen), remaining)
        finally:
            with store.changed:
                store.watchers -= 1

    def _timeout_error(
        self, count: int, criteria: Criteria, limit: float, waited: float
    ) -> AssertionError:
        __tracebackhide__ = True
        everything = self.messages
        found = everything.filter(**criteria)
        return AssertionError(
            failure_report(
                f"{plural(count, 'message')} within {limit:g} s (waited {waited:.2f} s)",
                criteria,
                found,
                everything,
                verb="wait_for timed out: expected",
            )
        )

    def __repr__(self) -> str:
        where = self._sink.url if self._sink._address else "not started"
        return f"<Mailbox {where} messages={len(self._store.messages_since(self._cursor))}>"


def _moved_on(store: Store, seen: int) -> Callable[[], bool]:
    """Whether the store has recorded anything since it was at ``seen``."""
    return lambda: store.version != seen


def _session_line(session: Session) -> str:
    last = session.transcript[-1].lines()[-1] if session.transcript else "nothing yet"
    return (
        f"{session.peer[0]}:{session.peer[1]} ehlo={session.ehlo!r} "
        f"end={session.end or 'open'} commands={' '.join(session.commands) or '-'} "
        f"last: {last}"
    )


class _NotYet:
    """``condition()`` as a predicate for `Mailbox._wait`.

    A condition may look at state that is not there yet (``sessions[-1]``
    on an empty tuple, ``transcript[0]`` of a session whose greeting is not
    recorded yet): an IndexError or KeyError means "not yet", not an error.
    The last such error is kept, so that a condition that can never succeed
    (a wrong index) still shows why when the wait times out. Any other
    exception propagates at once.
    """

    def __init__(self, condition: Callable[[], object]) -> None:
        self.condition = condition
        self.error: LookupError | None = None

    def __call__(self) -> bool:
        try:
            result = bool(self.condition())
        except (IndexError, KeyError) as error:
            self.error = error
            return False
        self.error = None
        return result


def _check_count(count: int | None, allow_none: bool = True) -> None:
    if count is None and allow_none:
        return
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be a whole number >= 0, got {count!r}")


_LISTED = 20


def failure_report(
    wanted: str,
    criteria: Any,
    found: Sequence[Message],
    everything: Sequence[Message],
    verb: str = "expected",
) -> str:
    """The text of a failed assertion: expectation, what arrived, closest
    candidate and why it differs, hints."""
    criteria_text = _match.describe(criteria)
    head = f"{verb} {wanted}" + (f" matching {criteria_text}" if criteria_text else "")
    lines = [f"{head}; found {len(found)}."]
    if not everything:
        lines.append("No messages arrived in this test.")
        return "\n".join(lines)
    matched = {id(m) for m in found}
    lines.append(f"Messages that arrived in this test ({len(everything)}):")
    for message in everything[:_LISTED]:
        mark = "* " if id(message) in matched and criteria else "  "
        lines.append(f"{mark}{message.summary()}")
    if len(everything) > _LISTED:
        lines.append(f"  ... and {len(everything) - _LISTED} more")
    if criteria and found:
        lines.append("(* marks the messages that match)")
    if criteria and not found:
        scored = [(len(_match.mismatches(m, criteria)), m) for m in everything]
        best_score = min(score for score, _ in scored)
        closest = next(m for score, m in scored if score == best_score)
        lines.append(f"Closest: #{closest.number}, which differs in:")
        for name in _match.mismatches(closest, criteria):
            lines.append(
                f"  {name}: wanted {_match.describe({name: criteria[name]}).split('=', 1)[1]}, "
                f"got {_match.explain(closest, name)}"
            )
    for hint in dict.fromkeys(_match.hints(tuple(everything), criteria)):
        lines.append(f"Hint: {hint}")
    return "\n".join(lines)
