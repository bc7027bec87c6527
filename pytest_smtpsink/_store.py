"""The thread-safe store between the server thread and the tests.

The server thread appends; tests read snapshots and wait on a Condition that
every append notifies, so a waiting test wakes the moment mail arrives
instead of polling. Items get a running number; a reader remembers the
number it started at (its "cursor") and sees everything from there on.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ._mailstore import MailStore
    from ._message import Message
    from ._session import Session

Listener = Callable[[], None]
LOG = logging.getLogger("pytest_smtpsink")


def _tell(listeners: tuple[Listener, ...], failed: set[int]) -> None:
    """Call each listener (on the thread that made the change). One that
    raises is logged, and the others still hear: raised on the server's
    thread, it broke the conversation under way (a connection opened then
    was never greeted, a POP3 or IMAP one never served or closed). Its
    traceback is logged the first time (``failed``: the ids of those that
    raised), then a line at DEBUG: every change (each line of a transcript)
    logged a traceback."""
    for listener in listeners:
        try:
            listener()
        except Exception:
            if id(listener) in failed:
                LOG.debug("the on_change listener %r raised again", listener)
            else:
                failed.add(id(listener))
                LOG.exception(
                    "a listener of the sink's changes (on_change) raised; its "
                    "next failures are logged at DEBUG only"
                )


#: Run before each test of a wait's predicate; raises to end the wait (the
#: sink's thread died, or it refused mail for lack of room).
Check = Callable[[], None]
_Value = TypeVar("_Value")
#: How many distinct values `Store.share` keeps before it starts afresh: the
#: repeated ones come back within a few messages, and a run of unique ones
#: (each message's size in its MAIL line) must not grow it without end.
SHARED_VALUES_MAX = 1024


def _nothing_to_check() -> None:
    return None


class Store:
    def __init__(self, recipient_delimiter: str | None = None) -> None:
        # The condition's own lock, for the server thread's hot paths:
        # ``with self._lock`` is a C call where ``with self.changed`` runs
        # Condition.__enter__ and __exit__ in Python, for every message.
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        # The recipient mailboxes, made on first use (see `mail`).
        self._mail: MailStore | None = None
        self._recipient_delimiter = recipient_delimiter
        self._messages: list[Message] = []
        self._sessions: list[Session] = []
        # Running numbers of the first kept message and session: items before
        # them were discarded by `discard_before` and are gone for everyone.
        self._message_base = 0
        #: `empty_mailboxes` before the mailboxes existed: messages up to
        #: this number stay out of them when they are made.
        self._emptied_up_to = 0
        self._session_base = 0
        #: Sessions `discard_before` dropped while still open (a client that
        #: keeps its connection from test to test): a later test's report
        #: needs the ones that spoke in it.
        self.carried: tuple[Session, ...] = ()
        self._listeners: set[Listener] = set()
        self._failed_listeners: set[int] = set()  # see _tell
        self._line_listeners: set[Listener] = set()  # counted in `watchers`
        self.stored_bytes = 0
        # Why the server refused mail for lack of room (max_stored_bytes),
        # until the store is cleared: reading the store then fails saying so.
        self.overflow: str | None = None
        # Threads blocked in Mailbox._wait, plus the listeners of every line.
        # The protocol `touch`es for every transcript line, so that
        # `Mailbox.wait_until` conditions on the conversation wake at once,
        # but only while this is non-zero: reading it without the lock is
        # safe, as a waiter registers before it first tests its condition.
        # Changes notify the condition only while it is non-zero (under the
        # lock `wait` registers in): notify_all() with nobody waiting, as for
        # nearly every connection and message, is Python work for nothing.
        self.watchers = 0
        # Bumped on every change, so a waiter can sleep until *something*
        # happens and then test its condition outside the lock.
        self.version = 0
        # The values `share` hands out, each its own key; forgotten with the
        # items that hold them (`discard_before`), so that it never keeps
        # alive what the store dropped. The protocol's per-line recording
        # does what `share` does inline (bound included), a method call
        # less per line.
        self.shared: dict[Any, Any] = {}

    # -- server thread --------------------------------------------------------

    def share(self, value: _Value) -> _Value:
        """``value``, or an equal one shared earlier: a transcript line or an
        envelope field that every message repeats (``"DATA"``, the sender)
        is then kept once, not once per message.

        For plain ``str`` and tuples of them (and of frozen dataclasses),
        whose equal values are interchangeable; ``Address("a")`` equals
        ``"a"``, but a subclass would not read the same.
        """
        shared = self.shared
        if len(shared) >= SHARED_VALUES_MAX:
            shared.clear()
        return shared.setdefault(value, value)  # type: ignore[no-any-return]

    def next_message_number(self) -> int:
        with self._lock:
            return self._message_base + len(self._messages) + 1

    def add_message(self, message: Message) -> None:
        """Store ``message`` and put it on its session's list, at once: a
        test that waited for either finds it in both."""
        with self._lock:
            message.session._messages.append(message)
            message.session._message_count += 1
            self._messages.append(message)
            mail = self._mail
            if mail is not None:
                mail.deliver(message, message.envelope.rcpt_to)
                listeners = (*self._listeners, *mail.listeners)
            else:
                listeners = tuple(self._listeners)
            self.stored_bytes += len(message.raw)
            self.version += 1
            if self.watchers:  # else no `wait` sleeps on it
                self.changed.notify_all()
        if listeners:
            _tell(listeners, self._failed_listeners)

    def add_session(self, session: Session) -> None:
        with self._lock:
            self._sessions.append(session)
            self.version += 1
            if self.watchers:  # else no `wait` sleeps on it
                self.changed.notify_all()
            listeners = tuple(self._listeners)
        if listeners:
            _tell(listeners, self._failed_listeners)

    def refuse_over(self, limit: int, size: int, reason: Callable[[int], str]) -> bool:
        """Whether ``size`` bytes more would take what the store holds past
        ``limit``; if so, ``reason(held)`` is the overflow `check_running`
        raises. Decided and noted under the lock: a test that began between
        the two (`discard_before` clears the overflow) was told of the
        refusal of a message of the test before."""
        with self._lock:
            held = self.stored_bytes
            if held + size <= limit:
                return False
            if self.overflow is None:
                self.overflow = reason(held)
        self.touch()
        return True

    def touch(self) -> None:
        """Wake waiters whose condition may depend on session state."""
        with self._lock:
            self.version += 1
            if self.watchers:  # else no `wait` sleeps on it
                self.changed.notify_all()
            listeners = tuple(self._listeners)
        if listeners:
            _tell(listeners, self._failed_listeners)

    def mail_changed(self) -> None:
        """`touch`, after a change of the recipient mailboxes (a flag, a
        folder, a copy put in or taken out): also tells the read-side
        servers (`MailStore.listeners`), which hear of nothing else."""
        with self.changed:
            self.version += 1
            self.changed.notify_all()
            listeners = tuple(self._listeners)
            if self._mail is not None:
                listeners += tuple(self._mail.listeners)
        if listeners:
            _tell(listeners, self._failed_listeners)

    def empty_mailboxes(self) -> int:
        """`MailStore.empty`, if the mailboxes exist, and wake who listens.
        Returns the number of the last message stored before: none up to it
        is in the mailboxes now (messages are put in them under the same
        lock), nor will be if they are made later (`mail`)."""
        with self.changed:
            last = self._message_base + len(self._messages)
            if self._mail is None:
                self._emptied_up_to = last
                return last
            self._mail.empty()
        self.mail_changed()
        return last

    @property
    def mail(self) -> MailStore:
        """The recipient mailboxes (POP3, IMAP, `Mailbox.deliver`).

        Made on first use, from the messages the store holds then: a run
        that never reads mail as a recipient pays nothing for them, and the
        standalone sink, which forgets what it has shown, keeps no second
        reference to its messages unless it serves them (``--pop3``,
        ``--imap``); what `empty_mailboxes` emptied before they existed
        stays out. Any thread; hold ``changed`` while reading or changing
        what it returns.
        """
        mail = self._mail
        if mail is None:
            from ._mailstore import MailStore

            with self.changed:
                mail = self._mail
                if mail is None:
                    mail = MailStore(self.changed, self._recipient_delimiter)
                    for message in self._messages:
                        if message.number > self._emptied_up_to:
                            mail.deliver(message, message.envelope.rcpt_to)
                    self._mail = mail
        return mail

    # -- readers ----------------------------------------------------------------

    def put_in_messages(self) -> tuple[Message, ...]:
        """`MailStore.put_in`; none if the mailboxes were never made (then
        nothing was put in), without making them."""
        with self.changed:
            if self._mail is None:
                return ()
            return tuple(self._mail.put_in())

    def cursor(self) -> tuple[int, int]:
        """The position just after everything stored so far."""
        with self.changed:
            return (
                self._message_base + len(self._messages),
                self._session_base + len(self._sessions),
            )

    def let_go_since(self, cursor: tuple[int, int]) -> tuple[int, int]:
        """How many messages and sessions stored after ``cursor`` were
        dropped since (`discard_before` with a later cursor)."""
        with self.changed:
            return (
                max(0, self._message_base - cursor[0]),
                max(0, self._session_base - cursor[1]),
            )

    def messages_since(self, cursor: tuple[int, int]) -> tuple[Message, ...]:
        with self.changed:
            return tuple(self._messages[max(0, cursor[0] - self._message_base) :])

    def arrived_before(
        self, cursor: tuple[int, int], since: float
    ) -> tuple[Message, ...]:
        """The kept messages stored before ``cursor`` that arrived at or
        after ``since`` (a ``time.time()``), in arrival order."""
        with self.changed:
            # Backwards from the cursor, without copying what is kept (once
            # per test: the messages of the test before are still kept).
            messages = self._messages
            end = first = min(len(messages), max(0, cursor[0] - self._message_base))
            while first and messages[first - 1].received_at.timestamp() >= since:
                first -= 1
            return tuple(messages[first:end])

    def sessions_since(self, cursor: tuple[int, int]) -> tuple[Session, ...]:
        with self.changed:
            return tuple(self._sessions[max(0, cursor[1] - self._session_base) :])

    def sessions_before(self, cursor: tuple[int, int]) -> tuple[Session, ...]:
        """The sessions opened before ``cursor``: those `discard_before`
        dropped while still open (`carried`), then those still kept."""
        with self.changed:
            kept = self._sessions[: max(0, cursor[1] - self._session_base)]
            return (*self.carried, *kept)

    def discard_before(
        self,
        cursor: tuple[int, int],
        from_sessions: bool = False,
        new_test: bool = False,
    ) -> None:
        """Forget what came before ``cursor`` so memory stays bounded over a
        long test session. Objects a test still holds stay alive.

        A connection kept open across tests outlives this (its protocol
        holds its `Session`). With ``from_sessions``, the messages are also
        dropped from their sessions' lists, or a client that keeps one
        connection for a whole run keeps every message it ever sent
        (`Session.message_count` still counts them). With ``new_test``, the
        read side starts afresh too, and the sessions' summaries count only
        the messages since.
        """
        with self.changed:
            drop_messages = max(0, cursor[0] - self._message_base)
            drop_sessions = max(0, cursor[1] - self._session_base)
            dropped = self._messages[:drop_messages]
            self.carried = tuple(
                s
                for s in (*self.carried, *self._sessions[:drop_sessions])
                if s.end is None
            )
            self.stored_bytes -= sum(len(m.raw) for m in dropped)
            if from_sessions:
                _forget_in_sessions(dropped, new_test)
            del self._messages[:drop_messages]
            del self._sessions[:drop_sessions]
            self.shared.clear()
            self._message_base += drop_messages
            self._session_base += drop_sessions
            self.overflow = None
            if new_test and self._mail is not None:
                # A new test: its readers see only its own mail, and the
                # read-side servers end the sessions of earlier tests.
                self._mail.reset()
                self.version += 1
                self.changed.notify_all()
                listeners = (*self._listeners, *self._mail.listeners)
            else:
                listeners = ()
        if listeners:
            _tell(listeners, self._failed_listeners)

    # -- waiting (test threads) ------------------------------------------------------

    def wait(
        self,
        predicate: Callable[[], object],
        timeout: float,
        check: Check = _nothing_to_check,
    ) -> bool:
        """Block until ``predicate()`` is true (True) or ``timeout`` seconds
        pass (False), testing it again after every change: no polling.

        The predicate runs outside the lock: matching may parse messages, and
        the server thread must never wait for a test's parsing to store mail.
        """
        __tracebackhide__ = True
        deadline = time.monotonic() + timeout
        with self.changed:
            self.watchers += 1
        try:
            while True:
                # Each time round: ``check`` may have something to say now
                # (a dead thread, an overflow, a stop), as each wakes us. The
                # version first: a change after it is not slept through.
                with self.changed:
                    seen = self.version
                check()
                if predicate():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with self.changed:
                    self.changed.wait_for(
                        functools.partial(self._moved_on, seen),
                        # Longer is more than the platform's clock can hold
                        # (OverflowError): a timeout of 1e10 s means for ever.
                        min(remaining, threading.TIMEOUT_MAX),
                    )
        finally:
            with self.changed:
                self.watchers -= 1

    def _moved_on(self, seen: int) -> bool:
        """Whether anything was recorded since the version was ``seen``."""
        return self.version != seen

    async def wait_async(
        self,
        predicate: Callable[[], object],
        timeout: float,
        check: Check = _nothing_to_check,
        blocking: str = "wait_for",
    ) -> bool:
        """The awaitable twin of `wait`: the caller's event loop keeps running;
        a listener on the server thread wakes it after every change.
        ``blocking``: the caller's blocking twin, which a trio user is told
        to run in a thread."""
        __tracebackhide__ = True  # the caller's misuse, not a frame of ours
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # Awaited, but not on asyncio: trio (anyio's trio backend), say.
            # A lambda: run_sync passes no keyword arguments, the criteria.
            raise RuntimeError(
                "the *_async waits run on asyncio (pytest-asyncio, or anyio's "
                "asyncio backend), and no asyncio loop is running here; under "
                "trio, run the blocking wait in a thread: await anyio.to_thread."
                f"run_sync(lambda: smtpsink.{blocking}(...)) (or trio.to_thread)"
            ) from None
        changed = asyncio.Event()

        def wake() -> None:  # runs on the server thread
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(changed.set)

        deadline = loop.time() + timeout
        self.add_listener(wake)
        try:
            while True:
                changed.clear()
                check()
                if predicate():
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        changed.wait(), min(remaining, threading.TIMEOUT_MAX)
                    )
        finally:
            self.remove_listener(wake)

    def follow(self) -> Follower:
        """A reader of what arrives from now on, that forgets what it read."""
        return Follower(self)

    # -- listeners ---------------------------------------------------------------------

    def add_listener(self, listener: Listener, *, lines: bool = True) -> None:
        """Call ``listener`` (on the server thread) after every change. With
        ``lines=False``, transcript lines do not make the server notify on
        its account: it is called for messages, sessions that begin or end,
        and outcomes (relay, DNS), and for lines only while someone else
        listens to them or waits. A reader that reports what arrived (the
        standalone sink) then costs the protocol nothing per line. Adding a
        listener again sets its ``lines``."""
        with self.changed:
            self._listeners.add(listener)
            if lines and listener not in self._line_listeners:
                self._line_listeners.add(listener)
                self.watchers += 1
            elif not lines and listener in self._line_listeners:
                self._line_listeners.discard(listener)
                self.watchers -= 1

    def remove_listener(self, listener: Listener) -> None:
        with self.changed:
            if listener in self._listeners:
                self._listeners.discard(listener)
                # Its id may be another listener's next (see _tell).
                self._failed_listeners.discard(id(listener))
                if listener in self._line_listeners:
                    self._line_listeners.discard(listener)
                    self.watchers -= 1


def _forget_in_sessions(dropped: list[Message], new_test: bool) -> None:
    """Take ``dropped`` (a prefix of the store, in arrival order) out of their
    sessions' message lists; with ``new_test``, they are an earlier test's,
    which the session's summary no longer counts.

    A session's list is in arrival order too, so its dropped messages are a
    prefix of it: those numbered up to the last dropped one. The caller
    holds the store's lock, under which `Store.add_message` appends too.
    """
    if not dropped:
        return
    last = dropped[-1].number
    sessions = {id(m.session): m.session for m in dropped}
    for session in sessions.values():
        kept = session._messages
        cut = 0
        while cut < len(kept) and kept[cut].number <= last:
            cut += 1
        del kept[:cut]
        if new_test:
            session._earlier_messages += cut


class Follower:
    """Hands out what arrived since it last did, then has the store forget
    it, so that a long-running reader (the standalone sink) stays flat in
    memory. Objects the reader keeps stay alive; the messages of a session
    still open are dropped from its list too (a client that keeps one
    connection open all day must not keep all its mail in it). One thread
    reads it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cursor = store.cursor()

    def take(self) -> tuple[tuple[Message, ...], tuple[Session, ...]]:
        """The messages and sessions that arrived since the last call."""
        store = self._store
        messages = store.messages_since(self._cursor)
        sessions = store.sessions_since(self._cursor)
        self._cursor = (
            self._cursor[0] + len(messages),
            self._cursor[1] + len(sessions),
        )
        store.discard_before(self._cursor, from_sessions=True)
        return messages, sessions
