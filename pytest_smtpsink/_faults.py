"""Fault rules: scripted misbehaviour, scoped to the view that added them.

A test adds rules through its `Mailbox` (``smtpsink.fail("RCPT", 550,
match="nobody@example.com")``). The server thread consults them at each stage
of the conversation. Rules belong to the view that added them and are removed
when that view is closed (at the end of the test), together with any
connection they are still holding (a hang, a delay).

Threads: the test thread adds and removes rules by swapping an immutable
tuple; the server thread only reads that tuple, so "no rules" costs one
attribute read and a truth test per command. Counters and the random
generators of rules are touched by the server thread only.
"""

from __future__ import annotations

import random
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from ._protocol import RecordingSMTP
    from ._server import SMTPSink

Action = Literal["reply", "disconnect", "delay", "hang", "drop", "limit", "hide"]

STAGES = ("CONNECT", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "EOD")
_ALIASES = {"HELO": "EHLO", "GREETING": "CONNECT", "END-OF-DATA": "EOD", "EOM": "EOD"}

_DEFAULT_TEXT = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox temporarily unavailable",
    451: "4.3.0 Temporary failure, please try again later",
    452: "4.3.1 Insufficient system storage",
    454: "4.7.0 Temporary authentication failure",
    500: "5.5.2 Syntax error, command unrecognized",
    501: "5.5.4 Syntax error in parameters or arguments",
    502: "5.5.1 Command not implemented",
    503: "5.5.1 Bad sequence of commands",
    504: "5.5.4 Command parameter not implemented",
    530: "5.7.0 Authentication required",
    535: "5.7.8 Authentication credentials invalid",
    550: "5.1.1 Mailbox unavailable",
    551: "5.1.6 User not local",
    552: "5.3.4 Message size exceeds fixed maximum message size",
    553: "5.1.3 Mailbox name not allowed",
    554: "5.7.1 Transaction failed",
}

# EHLO keywords and the MAIL parameter that uses them.
_EXTENSION_PARAMS = {"SIZE": "SIZE=", "SMTPUTF8": "SMTPUTF8", "8BITMIME": "BODY="}


class FaultError(ValueError):
    """A fault was declared with arguments that make no sense."""


def _normalize_stage(stage: str) -> str:
    if not isinstance(stage, str):
        raise FaultError(
            f"stage must be a string, one of {', '.join(STAGES)}; got {stage!r}"
        )
    name = stage.strip().upper()
    name = _ALIASES.get(name, name)
    if name not in STAGES:
        raise FaultError(
            f"unknown stage {stage!r}; use one of {', '.join(STAGES)} (or HELO)"
        )
    return name


def _check_count(name: str, value: Any) -> None:
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < 1
    ):
        raise FaultError(f"{name} must be None or a whole number >= 1, got {value!r}")


def _check_match(stage: str, match: Any) -> None:
    if match is None:
        return
    if not isinstance(match, (str, re.Pattern)):
        raise FaultError(
            f"match must be None, a string or a compiled regex (re.compile(...)), got {match!r}"
        )
    if stage == "STARTTLS":
        raise FaultError("STARTTLS has nothing to match; leave match=None")


def reply_lines(code: int, text: str | None) -> list[str]:
    """``550`` and ``"a\\nb"`` -> ``["550-a", "550 b"]`` (RFC 5321 multi-line)."""
    body = _DEFAULT_TEXT.get(code, "Injected failure") if text is None else text
    lines = body.replace("\r\n", "\n").split("\n")
    return [f"{code}-{line}" for line in lines[:-1]] + [f"{code} {lines[-1]}"]


def _address_matches(pattern: str, value: str) -> bool:
    """Exact address match; the domain compares case-insensitively."""
    p_local, p_at, p_domain = pattern.strip().strip("<>").rpartition("@")
    v_local, v_at, v_domain = value.strip().strip("<>").rpartition("@")
    if not p_at:  # no "@": compare the whole text, case-insensitively
        return pattern.strip().casefold() == value.strip().casefold()
    return (
        bool(v_at) and p_local == v_local and p_domain.casefold() == v_domain.casefold()
    )


class Fault:
    """One rule the sink follows; returned by `Mailbox.fail` and friends.

    ``seen`` counts the events that matched the rule's stage and ``match``;
    ``fired`` counts how often the fault was applied. ``seed`` is the seed of
    a ``probability`` rule (chosen at random when not given: put it in the
    test to replay a run). `remove` takes the rule away before the test ends.
    """

    @property
    def _owner(self) -> Any:
        return self._owner_ref()

    def __init__(
        self,
        owner: Any,
        stage: str,
        action: Action,
        *,
        code: int | None = None,
        text: str | None = None,
        match: str | re.Pattern[str] | None = None,
        times: int | None = None,
        every: int | None = None,
        probability: float | None = None,
        seed: int | str | None = None,
        seconds: float | None = None,
        limit: tuple[str, int] | None = None,
        hidden: tuple[str, ...] = (),
    ) -> None:
        _check_match(stage, match)
        _check_count("times", times)
        _check_count("every", every)
        if probability is not None:
            if (
                not isinstance(probability, (int, float))
                or isinstance(probability, bool)
                or not 0 <= probability <= 1
            ):
                raise FaultError(
                    f"probability must be between 0 and 1, got {probability!r}"
                )
            if seed is None:
                seed = random.SystemRandom().randrange(2**32)
        elif seed is not None:
            raise FaultError("seed is for rules with a probability")
        # Weak: rules live in the server's state, which the server thread
        # reaches; a strong reference would keep a dropped SMTPSink alive.
        self._owner_ref = weakref.ref(owner)
        self.stage = stage
        self.action: str = action
        self.code = code
        self.text = text
        self.match = match
        self.times = times
        self.every = every
        self.probability = probability
        self.seed = seed
        self.seconds = seconds
        self.limit = limit
        self.hidden = hidden
        self.seen = 0
        """Events that matched the stage and ``match``."""
        self.fired = 0
        """How many times the fault was applied."""
        self._random = random.Random(seed) if probability is not None else None
        self._faults: Faults | None = None

    # -- server thread ----------------------------------------------------------------

    def applies(self, subjects: Sequence[str]) -> bool:
        match = self.match
        if match is None:
            return True
        if isinstance(match, re.Pattern):
            return any(match.search(s) for s in subjects)
        if self.stage in ("CONNECT", "EHLO", "AUTH"):
            return any(match.strip().casefold() == s.casefold() for s in subjects)
        return any(_address_matches(match, s) for s in subjects)

    def fire(self) -> bool:
        """Count one matching event; True if the fault applies to it."""
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.every is not None and self.seen % self.every:
            return False
        if self._random is not None and self._random.random() >= (
            self.probability or 0
        ):
            return False
        self.fired += 1
        return True

    def reply(self) -> list[str]:
        if self.action == "drop":
            return ["250 2.0.0 OK: queued"]
        assert self.code is not None
        return reply_lines(self.code, self.text)

    # -- test thread ----------------------------------------------------------------------

    def remove(self) -> None:
        """Take this rule away now, and release a connection it holds."""
        faults = self._faults
        if faults is not None:
            faults.remove(lambda rule: rule is self)

    def __repr__(self) -> str:
        parts = [self.stage, self.action]
        if self.code is not None:
            parts.append(str(self.code))
        if self.seconds is not None:
            parts.append(f"{self.seconds:g}s")
        if self.limit is not None:
            parts.append(f"{self.limit[0]}={self.limit[1]}")
        if self.hidden:
            parts.append("hide " + ",".join(self.hidden))
        for name in ("match", "times", "every", "probability", "seed"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"<Fault {' '.join(parts)} fired={self.fired}/{self.seen}>"


class Faults:
    """The rules in force on one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: tuple[Fault, ...] = ()
        """Read by the server thread; replaced (never mutated) under ``lock``."""
        self.hidden: frozenset[str] = frozenset()
        # Connections held by a delay or hang, and the rule holding them.
        # Server thread only.
        self.stalled: dict[RecordingSMTP, Fault] = {}
        # Weak, as Fault's owner: see there.
        self._sink_ref: weakref.ref[SMTPSink] | None = None

    @property
    def sink(self) -> SMTPSink | None:
        return self._sink_ref() if self._sink_ref is not None else None

    @sink.setter
    def sink(self, sink: SMTPSink) -> None:
        self._sink_ref = weakref.ref(sink)

    def add(self, rule: Fault) -> Fault:
        rule._faults = self
        with self.lock:
            self._set((*self.rules, rule))
        return rule

    def remove(self, which: Any) -> None:
        """Remove the rules for which ``which(rule)`` is true and close the
        connections they hold. Waits (briefly) until they are closed."""
        with self.lock:
            gone = [rule for rule in self.rules if which(rule)]
            if not gone:
                return
            self._set(tuple(rule for rule in self.rules if not which(rule)))
        self._release(set(map(id, gone)))

    def _set(self, rules: tuple[Fault, ...]) -> None:
        hidden = {name for rule in rules for name in rule.hidden}
        self.hidden = frozenset(hidden)
        self.rules = rules

    def _release(self, rule_ids: set[int]) -> None:
        sink = self.sink
        loop = sink._loop if sink is not None else None
        if loop is None or not sink.running:  # type: ignore[union-attr]
            return
        done = threading.Event()

        def release() -> None:
            try:
                for connection, rule in list(self.stalled.items()):
                    if id(rule) in rule_ids:
                        self.stalled.pop(connection, None)
                        connection.close_by_server()
            finally:
                done.set()

        try:
            loop.call_soon_threadsafe(release)
        except RuntimeError:  # the loop closed meanwhile
            return
        done.wait(2.0)


class FaultControls:
    """The fault API of `Mailbox` (see :doc:`faults`)."""

    _sink: SMTPSink

    def _fault_registry(self) -> Faults:
        faults = self._sink._faults
        faults.sink = self._sink
        return faults

    def _add_fault(self, stage: str, action: Action, **options: Any) -> Fault:
        return self._fault_registry().add(Fault(self, stage, action, **options))

    def fail(
        self,
        stage: str,
        code: int,
        text: str | None = None,
        *,
        match: str | re.Pattern[str] | None = None,
        times: int | None = None,
        every: int | None = None,
        probability: float | None = None,
        seed: int | str | None = None,
    ) -> Fault:
        """Answer ``stage`` with ``code`` (4xx or 5xx) instead of going on.

        ``text`` is the reply text (a sensible default per code); put newlines
        in it for a multi-line reply. ``match`` limits the rule to an address
        (exact; the domain is case-insensitive) or a compiled regex
        (``re.search``). By default the rule applies every time; ``times=N``
        only the first N times (greylisting), ``every=N`` every Nth time,
        ``probability=p`` at random, replayable with ``seed``. A 421 reply
        closes the connection, as does any failure at ``CONNECT``.
        """
        stage = _normalize_stage(stage)
        if (
            not isinstance(code, int)
            or isinstance(code, bool)
            or not 400 <= code <= 599
        ):
            raise FaultError(f"code must be a 4xx or 5xx reply code, got {code!r}")
        if text is not None and not isinstance(text, str):
            raise FaultError(f"text must be a string, got {text!r}")
        return self._add_fault(
            stage,
            "reply",
            code=code,
            text=text,
            match=match,
            times=times,
            every=every,
            probability=probability,
            seed=seed,
        )

    def disconnect(
        self,
        stage: str,
        *,
        match: str | re.Pattern[str] | None = None,
        times: int | None = None,
        every: int | None = None,
        probability: float | None = None,
        seed: int | str | None = None,
    ) -> Fault:
        """Drop the connection at ``stage``, without a reply.

        ``"DATA"`` drops it when the client sends DATA; ``"EOD"`` after the
        whole message was sent, before the server answers (nothing is stored).
        """
        return self._add_fault(
            _normalize_stage(stage),
            "disconnect",
            match=match,
            times=times,
            every=every,
            probability=probability,
            seed=seed,
        )

    def delay(
        self,
        stage: str,
        seconds: float,
        *,
        match: str | re.Pattern[str] | None = None,
        times: int | None = None,
        every: int | None = None,
        probability: float | None = None,
        seed: int | str | None = None,
    ) -> Fault:
        """Wait ``seconds`` before handling ``stage``, then go on as usual.

        Only this connection waits; others are served meanwhile.
        """
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or not 0 <= seconds < float("inf")
        ):
            raise FaultError(f"seconds must be a number >= 0, got {seconds!r}")
        return self._add_fault(
            _normalize_stage(stage),
            "delay",
            seconds=float(seconds),
            match=match,
            times=times,
            every=every,
            probability=probability,
            seed=seed,
        )

    def hang(
        self,
        stage: str,
        *,
        match: str | re.Pattern[str] | None = None,
        times: int | None = None,
        every: int | None = None,
        probability: float | None = None,
        seed: int | str | None = None,
    ) -> Fault:
        """Never answer at ``stage``: the client waits until it gives up.

        The server closes the held connection when the rule goes away (at the
        end of the test at the latest) or after its idle timeout.
        """
        return self._add_fault(
            _normalize_stage(stage),
            "hang",
            match=match,
            times=times,
            every=every,
            probability=probability,
            seed=seed,
        )

    def drop(
        self,
        *,
        match: str | re.Pattern[str] | None = None,
        times: int | None = None,
        every: int | None = None,
        probability: float | None = None,
        seed: int | str | None = None,
    ) -> Fault:
        """Accept messages with a 250 and keep nothing (a black hole).

        ``match`` is compared with the sender and every recipient; the whole
        message is dropped if any matches.
        """
        return self._add_fault(
            "EOD",
            "drop",
            match=match,
            times=times,
            every=every,
            probability=probability,
            seed=seed,
        )

    def limit(
        self,
        *,
        max_recipients: int | None = None,
        max_connections: int | None = None,
        max_size: int | None = None,
    ) -> tuple[Fault, ...]:
        """Impose limits for this test, as a busy or strict server would.

        ``max_recipients``: RCPT beyond that many per message gets
        ``452 4.5.3 Too many recipients``. ``max_connections``: a connection
        beyond that many open at once is greeted with ``421`` and closed.
        ``max_size`` (bytes): advertised in EHLO's SIZE; a larger ``SIZE=``
        at MAIL or a larger message at the end of data gets ``552``.
        """
        rules = []
        for name, stage, value in (
            ("max_recipients", "RCPT", max_recipients),
            ("max_connections", "CONNECT", max_connections),
            ("max_size", "EOD", max_size),
        ):
            if value is None:
                continue
            _check_count(name, value)
            rules.append(self._add_fault(stage, "limit", limit=(name, value)))
        if not rules:
            raise FaultError(
                "limit() needs max_recipients=, max_connections= or max_size="
            )
        return tuple(rules)

    def hide(self, *extensions: str) -> Fault:
        """Stop advertising EHLO extensions, e.g. ``hide("STARTTLS")``.

        A hidden STARTTLS or AUTH command is refused with ``502``; a MAIL
        parameter of a hidden extension (``SIZE=``, ``SMTPUTF8``,
        ``BODY=8BITMIME``) with ``555``.
        """
        names = tuple(
            name.strip().upper() for name in extensions if isinstance(name, str)
        )
        if not names or len(names) != len(extensions):
            raise FaultError(
                f"hide() takes extension names, e.g. hide('STARTTLS'); got {extensions!r}"
            )
        return self._add_fault("EHLO", "hide", hidden=names)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The fault rules this view added that are still in force."""
        return tuple(r for r in self._sink._faults.rules if r._owner is self)

    def clear_faults(self) -> None:
        """Remove every fault this view added, and close the connections
        they hold. The fixtures do this at the end of each test."""
        self._fault_registry().remove(lambda rule: rule._owner is self)

    def _close(self) -> None:
        """Teardown of a view (called by the fixtures, even if the test failed)."""
        self.clear_faults()


_METHODS = ("fail", "disconnect", "delay", "hang", "drop", "limit", "hide")


def apply_marker(
    view: FaultControls, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Fault | tuple[Fault, ...]:
    """``@pytest.mark.smtpsink_fault("fail", "MAIL", 451, times=2)``."""
    if not args or args[0] not in _METHODS:
        raise FaultError(
            "the first argument names the fault: one of "
            f"{', '.join(map(repr, _METHODS))}, e.g. "
            "@pytest.mark.smtpsink_fault('fail', 'RCPT', 550, match='x@example.com')"
        )
    method = getattr(view, args[0])
    try:
        return method(*args[1:], **kwargs)  # type: ignore[no-any-return]
    except TypeError as error:
        raise FaultError(f"smtpsink_fault({args[0]!r}, ...): {error}") from None


def hidden_param(hidden: Iterable[str], params: Iterable[str]) -> bool:
    """Whether a MAIL parameter belongs to a hidden extension."""
    for name in hidden:
        prefix = _EXTENSION_PARAMS.get(name)
        if prefix is None:
            continue
        for param in params:
            upper = param.upper()
            if upper == prefix or (
                upper.startswith(prefix)
                and (name != "8BITMIME" or upper == "BODY=8BITMIME")
            ):
                return True
    return False


_F = TypeVar("_F", bound=Callable[..., Any])


def same_syntax(original: Any) -> Callable[[_F], _F]:
    """Copy aiosmtpd's HELP text (``@syntax``) onto an ``smtp_*`` override."""

    def decorate(function: _F) -> _F:
        for name in (
            "__smtp_syntax__",
            "__smtp_syntax_extended__",
            "__smtp_syntax_when__",
        ):
            if hasattr(original, name):
                setattr(function, name, getattr(original, name))
        return function

    return decorate
