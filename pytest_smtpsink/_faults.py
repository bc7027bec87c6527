"""Fault rules and what they decide: the rule decides, the protocol executes.

A rule (`Fault`) is data: a stage, an action and a trigger (``match``,
``times``, ``every``, ``probability``, ``seed``). `steps` takes the rules in
force and one `Event` (what a protocol is about to handle) and returns what
must happen, in order: wait (`Delay`), hold the connection (`Hang`), drop it
(`Disconnect`), answer instead (`Reply`), or accept and keep nothing
(`Discard`). The protocols only carry the steps out; nothing here knows about
sockets, the loop or the server, so the decisions are tested without them
(tests/test_fault_rules.py) and the same rules can serve other protocols
with their own stage names.

Shared module: the test thread adds and removes rules by swapping an
immutable tuple in `Faults`; the server thread reads that tuple, so "no
rules" costs one attribute read and a truth test per command. Counters and
the random generators of rules are touched by the server thread only (in
`steps`). This module imports nothing else from the package.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import random
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypedDict

Action = Literal["reply", "disconnect", "delay", "hang", "drop", "limit", "hide"]

SMTP_STAGES = ("CONNECT", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "EOD")
#: The read side names its stages after the protocol: ``"POP3:RETR"``.
POP3_STAGES = tuple(
    f"POP3:{command}"
    for command in (
        "CONNECT", "CAPA", "USER", "PASS", "APOP", "AUTH", "STLS", "STAT",
        "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT",
    )
)  # fmt: skip
#: IMAP's: ``"IMAP:FETCH"`` (UID FETCH too), ``"IMAP:CONNECT"`` (the greeting).
IMAP_STAGES = tuple(
    f"IMAP:{command}"
    for command in (
        "CONNECT", "CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "LOGIN",
        "AUTHENTICATE", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
        "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "STATUS", "APPEND",
        "NAMESPACE", "ENABLE", "IDLE", "CHECK", "CLOSE", "UNSELECT", "EXPUNGE",
        "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
    )
)  # fmt: skip
#: The MX stub's stages: ``"DNS:QUERY"`` is every question, ``"DNS:MX"``
#: (and the other types) only questions of that type. ``match`` compares
#: the name asked for, ignoring case and a final dot.
DNS_STAGES = tuple(
    f"DNS:{kind}"
    for kind in (
        "QUERY", "A", "AAAA", "MX", "TXT", "CNAME", "NS", "SOA", "PTR", "SRV",
        "TLSA", "CAA", "ANY",
    )
)  # fmt: skip
STAGES = SMTP_STAGES + POP3_STAGES + IMAP_STAGES + DNS_STAGES
_ALIASES = {"HELO": "EHLO", "GREETING": "CONNECT", "END-OF-DATA": "EOD", "EOM": "EOD"}

# EHLO keywords and the MAIL or RCPT parameters that use them (how each
# starts): a client that sends one to a server that did not offer it gets
# 555 there (RFC 5321 4.1.1.11). BODY=7BIT is no 8BITMIME's.
_EXTENSION_PARAMS = {
    "SIZE": ("SIZE=",),
    "SMTPUTF8": ("SMTPUTF8",),
    "8BITMIME": ("BODY=8BITMIME",),
    "DSN": ("RET=", "ENVID=", "NOTIFY=", "ORCPT="),
}
#: The EHLO extensions a sink may offer (STARTTLS and AUTH when set up):
#: what `hide` can hide.
HIDEABLE = (
    "PIPELINING",
    "SIZE",
    "8BITMIME",
    "SMTPUTF8",
    "DSN",
    "STARTTLS",
    "AUTH",
    "HELP",
)


class Trigger(TypedDict, total=False):
    """When a fault rule applies: the keywords every fault method takes.

    - ``match``: an address (exact; the domain without regard to case or
      to its spelling, Unicode or A-labels), an EHLO
      name, a client IP, an AUTH mechanism or a DNS name (no case, no final
      dot), depending on the stage; or a compiled regex (``re.search``).
      None: every event of the stage.
    - ``times``: only the first N matching events.
    - ``every``: every Nth matching event.
    - ``probability``: at random, with this chance (0 to 1).
    - ``seed``: the seed of a ``probability`` rule, to replay a run.
    """

    match: str | re.Pattern[str] | None
    times: int | None
    every: int | None
    probability: float | None
    seed: int | str | None


TRIGGER_KEYWORDS: tuple[str, ...] = tuple(Trigger.__annotations__)


class FaultError(ValueError):
    """A fault was declared with arguments that make no sense."""

    # Tracebacks name it as users import it, not by this private module.
    __module__ = "pytest_smtpsink"


def check_trigger(method: str, trigger: dict[str, Any]) -> None:
    """Refuse a keyword that is not a trigger keyword, as Python would for a
    misspelt argument, naming the keywords that exist."""
    __tracebackhide__ = True
    for name in trigger:
        if name not in TRIGGER_KEYWORDS:
            raise TypeError(
                f"{method}() got an unexpected keyword argument {name!r}; "
                f"its trigger keywords are {', '.join(TRIGGER_KEYWORDS)}"
            )


def _shown(value: object) -> str:
    """A bad argument for an error, never a mapping's contents (a
    credentials table given by mistake), nor a container's that holds one
    (``seed=[USERS]``): `_text.shown_argument`'s rule, in short, here
    because this module imports nothing of the package."""
    from collections.abc import Mapping, MappingView

    if isinstance(value, (Mapping, MappingView)):
        return f"a {type(value).__name__} of {len(value)} item(s) (not shown)"
    if _holds_mapping(value, 0):
        return f"a {type(value).__name__} holding a mapping (not shown)"
    return repr(value)


def _holds_mapping(value: object, depth: int) -> bool:
    from collections.abc import Mapping, MappingView

    if isinstance(value, (Mapping, MappingView)):
        return True
    if not isinstance(value, (tuple, list, set, frozenset)):
        return False
    return depth >= 8 or any(_holds_mapping(v, depth + 1) for v in value)


def _meant(name: str, choices: Sequence[str]) -> str:
    """`_text.meant`'s hint (this module imports none of the package)."""
    close = difflib.get_close_matches(name, choices, 1, 0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def normalize_stage(stage: str) -> str:
    __tracebackhide__ = True
    if not isinstance(stage, str):
        raise FaultError(
            f"stage must be a string, one of {', '.join(SMTP_STAGES)}; got {_shown(stage)}"
        )
    name = stage.strip().upper()
    name = _ALIASES.get(name, name)
    if name not in STAGES:
        for prefix, known in (
            ("POP3:", POP3_STAGES),
            ("IMAP:", IMAP_STAGES),
            ("DNS:", DNS_STAGES),
        ):
            if name.startswith(prefix):
                raise FaultError(
                    f"unknown {prefix[:-1]} stage {stage!r}{_meant(name, STAGES)}; "
                    f"use one of {', '.join(known)}"
                )
        raise FaultError(
            f"unknown stage {stage!r}{_meant(name, STAGES)}; use one of "
            f"{', '.join(SMTP_STAGES)} (or "
            "HELO), or a stage of another protocol such as 'POP3:RETR', "
            "'IMAP:FETCH' or 'DNS:MX'"
        )
    return name


def check_count(name: str, value: Any) -> None:
    __tracebackhide__ = True
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or value < 1
    ):
        raise FaultError(
            f"{name} must be None or a whole number >= 1, got {_shown(value)}"
        )


# RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF, so
# "550-" (or "550 "), the text and CRLF: 506 characters of text. RFC 1939
# gives POP3 the same 512 octets, where the text follows "-ERR [SYS/TEMP] ".
_SMTP_TEXT_MAX = 512 - len("550-") - len("\r\n")
_POP3_TEXT_MAX = 512 - len("-ERR [SYS/TEMP] ") - len("\r\n")
# RFC 5321 textstring: tab and printable US-ASCII, space included.
_NOT_REPLY_TEXT = re.compile("[^\t\x20-\x7e]")


def check_reply_text(stage: str, text: str) -> None:
    """Refuse a `fail` text that would not make a valid reply on the wire:
    what is not tab or printable ASCII (a bare CR, a control character,
    non-ASCII: sent as it was, it broke the reply), or a line too long.
    ``\n`` and ``\r\n`` separate the lines of a multi-line reply (the
    read side's protocols join them into one line with spaces)."""
    __tracebackhide__ = True
    shown = (
        repr(text)
        if len(text) <= 80
        else repr(text[:60]) + f"... ({len(text)} characters)"
    )
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    for number, line in enumerate(lines, 1):
        bad = _NOT_REPLY_TEXT.search(line)
        if bad is not None:
            where = f"line {number}, " if len(lines) > 1 else ""
            char = bad.group()
            what = (
                "a bare CR (a line break is \\n or \\r\\n)"
                if char == "\r"
                else f"{char!r}"
            )
            raise FaultError(
                "text must be printable ASCII (tab and space too), as RFC 5321 "
                f"asks of reply text, with \\n between lines; got {what} at "
                f"{where}index {bad.start()} of {shown}"
            )
    if stage.startswith("POP3:"):
        joined = " ".join(text.split())
        if len(joined) > _POP3_TEXT_MAX:
            raise FaultError(
                f"text must be at most {_POP3_TEXT_MAX} characters at a POP3 "
                "stage (its lines joined with spaces), for the reply line to "
                f"fit 512 octets (RFC 1939); got {len(joined)} in {shown}"
            )
    elif not stage.startswith("IMAP:"):  # IMAP sets no line length
        for number, line in enumerate(lines, 1):
            if len(line) > _SMTP_TEXT_MAX:
                raise FaultError(
                    f"each line of text must be at most {_SMTP_TEXT_MAX} "
                    "characters, for the reply line to fit 512 octets with "
                    "its code and CRLF (RFC 5321 4.5.3.1.5); got "
                    f"{len(line)} in line {number} of {shown}"
                )


#: The SMTP AUTH mechanisms a sink offers: what ``match`` names at "AUTH".
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")


def _check_match(stage: str, match: Any) -> None:
    __tracebackhide__ = True
    if match is None:
        return
    if not isinstance(match, (str, re.Pattern)) or not isinstance(
        match.pattern if isinstance(match, re.Pattern) else match, str
    ):
        raise FaultError(
            "match must be None, a string or a compiled regex of a string "
            f"(re.compile(...)), got {_shown(match)}"
        )
    if stage in ("STARTTLS", "POP3:STLS", "IMAP:STARTTLS"):
        raise FaultError(f"{stage} has nothing to match; leave match=None")
    if (
        stage == "AUTH"
        and isinstance(match, str)
        and match.strip().upper() not in AUTH_MECHANISMS
    ):
        # A rule for a mechanism the sink never offers (XOAUTH2) never
        # fires, and the test passes for the wrong reason.
        raise FaultError(
            f"AUTH: match={match!r} is no mechanism a sink offers ("
            + ", ".join(AUTH_MECHANISMS)
            + "): the rule would never fire"
        )
    if isinstance(match, str) and stage in ("CONNECT", "POP3:CONNECT", "IMAP:CONNECT"):
        import ipaddress

        try:
            address = str(ipaddress.ip_address(match.strip()))
        except ValueError:
            # "localhost": a client connects from an address, never from a
            # name, so the rule never fired.
            raise FaultError(
                f"{stage}: match={match!r} is no IP address, and a connection is "
                "matched by its client's (e.g. '127.0.0.1'): give the address, or "
                "a compiled regex"
            ) from None
        if address.lower() != match.strip().lower():  # compared without case
            # "0::1": the client's address is compared as written, "::1".
            raise FaultError(
                f"{stage}: match={match!r} never equals a client's address as "
                f"written: write it {address!r}"
            )
    if (
        isinstance(match, str)
        and stage not in _NAME_STAGES
        and not stage.startswith("DNS:")
    ):
        local, at, domain = match.strip().strip("<>").rpartition("@")
        if at and not (local and domain):
            # "bob@" or "@shop.example": a string matches a whole address,
            # which neither is, so the rule never fired.
            raise FaultError(
                f"{stage}: match={match!r} is no whole address, and a string "
                "matches an address exactly: give the whole address, or a "
                f"regex to search with (re.compile({re.escape(match.strip())!r}))"
            )


#: The stages whose ``match`` is compared as a name, not an address.
_NAME_STAGES = ("CONNECT", "EHLO", "AUTH", "POP3:CONNECT", "IMAP:CONNECT")


def _address_matches(pattern: str, value: str) -> bool:
    """Exact address match; the domain compares case-insensitively and in
    either spelling (``straße.example`` is ``xn--strae-oqa.example``), as
    mailboxes and the criteria take it."""
    p_local, p_at, p_domain = pattern.strip().strip("<>").rpartition("@")
    v_local, v_at, v_domain = value.strip().strip("<>").rpartition("@")
    if not p_at:  # no "@": compare the whole text, case-insensitively
        return pattern.strip().casefold() == value.strip().casefold()
    return (
        bool(v_at)
        and p_local == v_local
        and _domain_key(p_domain) == _domain_key(v_domain)
    )


def _domain_key(domain: str) -> str:
    """``domain`` in lower case with its A-labels read as Unicode, as
    `_text.unicode_domain` reads them (this module imports nothing of the
    package: it stays a leaf)."""
    labels = domain.lower().split(".")
    for index, label in enumerate(labels):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError, ValueError):
                decoded = label[4:].encode("ascii").decode("punycode")
                labels[index] = label if decoded.isascii() else decoded.lower()
    return ".".join(labels)


def dns_name(name: str) -> str:
    """A DNS name as rules compare it: no case, no final dot."""
    return name.strip().rstrip(".").casefold()


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
        store: bool = False,
    ) -> None:
        __tracebackhide__ = True  # a FaultError names the bad argument
        _check_match(stage, match)
        check_count("times", times)
        check_count("every", every)
        if probability is not None:
            if (
                not isinstance(probability, (int, float))
                or isinstance(probability, bool)
                or not 0 <= probability <= 1
            ):
                raise FaultError(
                    f"probability must be between 0 and 1, got {_shown(probability)}"
                )
            if seed is None:
                seed = random.SystemRandom().randrange(2**32)
            elif not isinstance(seed, (int, str)) or isinstance(seed, bool):
                raise FaultError(
                    f"seed must be a whole number or a string, got {_shown(seed)}"
                )
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
        self.store = store
        """A disconnect at ``EOD`` that stores the message first."""
        self.seen = 0
        """Events that matched the stage and ``match``."""
        self.fired = 0
        """How many times the fault was applied."""
        self._random = random.Random(seed) if probability is not None else None
        self._faults: Faults | None = None

    # -- server thread (through `steps`) ------------------------------------------

    def _applies(self, subjects: Sequence[str]) -> bool:
        match = self.match
        if match is None:
            return True
        if isinstance(match, re.Pattern):
            return any(match.search(s) for s in subjects)
        if self.stage in _NAME_STAGES:
            return any(match.strip().casefold() == s.casefold() for s in subjects)
        if self.stage.startswith("DNS:"):
            name = dns_name(match)
            return any(name == dns_name(s) for s in subjects)
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

    # -- test thread ----------------------------------------------------------------

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
        if self.hidden:  # the action already says "hide"
            parts.append(",".join(self.hidden))
        if self.store:
            parts.append("store=True")
        for name in TRIGGER_KEYWORDS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value!r}")
        return f"<Fault {' '.join(parts)} fired={self.fired}/{self.seen}>"


#: Called with the rules just removed, on the thread that removed them; the
#: server sets it to release the connections those rules hold.
ReleaseHook = Callable[[tuple[Fault, ...]], None]


class Faults:
    """The rules in force on one server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rules: tuple[Fault, ...] = ()
        """Read by the server thread; replaced (never mutated) under ``lock``."""
        self.hidden: frozenset[str] = frozenset()
        # Weak, as a Fault's owner: the server's state holds these rules,
        # and must not keep a dropped SMTPSink alive (its finalizer stops it).
        self._on_removed: weakref.WeakMethod[ReleaseHook] | None = None

    def release_with(self, method: ReleaseHook) -> None:
        """Call the bound ``method`` with the rules `remove` takes away, so
        that the server releases the connections they hold."""
        self._on_removed = weakref.WeakMethod(method)

    def add(self, rule: Fault) -> Fault:
        rule._faults = self
        with self.lock:
            self._set((*self.rules, rule))
        return rule

    def remove(self, which: Callable[[Fault], bool]) -> None:
        """Remove the rules for which ``which(rule)`` is true, then let the
        server release the connections they hold (`release_with`)."""
        with self.lock:
            gone = tuple(rule for rule in self.rules if which(rule))
            if not gone:
                return
            self._set(tuple(rule for rule in self.rules if not which(rule)))
        self._release(gone)

    def release_held(self, which: Callable[[Fault], bool]) -> None:
        """Let the server close the connections that the rules for which
        ``which(rule)`` is true hold (a hang, a delay), keeping the rules."""
        held = tuple(rule for rule in self.rules if which(rule))
        if held:
            self._release(held)

    def _release(self, rules: tuple[Fault, ...]) -> None:
        hook = self._on_removed() if self._on_removed is not None else None
        if hook is not None:
            hook(rules)

    def _set(self, rules: tuple[Fault, ...]) -> None:
        self.hidden = frozenset(name for rule in rules for name in rule.hidden)
        self.rules = rules


# -- decisions ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """What a protocol is about to handle, as far as the rules care."""

    stage: str
    #: What ``match`` compares with: addresses, an EHLO name, a client IP.
    subjects: tuple[str, ...] = ()
    #: The extension the command belongs to (a hidden one is refused).
    extension: str | None = None
    #: The message size: ``SIZE=`` at MAIL, the content at EOD.
    size: int | None = None
    #: Recipients already accepted in this transaction (at RCPT).
    rcpt_count: int = 0
    #: The MAIL parameters.
    params: tuple[str, ...] = ()
    #: Connections open on the server, this one included (at CONNECT).
    connections: int = 0
    #: Only the rules with a ``match``: the subjects became known later in
    #: the command (the user of an AUTH PLAIN response), and the rules
    #: without one were asked at its start.
    matching_only: bool = False


@dataclasses.dataclass(frozen=True)
class Reply:
    """Answer with ``code`` instead of handling the command; ``text`` None
    means the protocol's usual text for that code."""

    code: int
    text: str | None = None
    rule: Fault | None = None


@dataclasses.dataclass(frozen=True)
class Delay:
    """Wait, then go on; removing ``rule`` meanwhile closes the connection."""

    seconds: float
    rule: Fault


@dataclasses.dataclass(frozen=True)
class Hang:
    """Never answer; the connection closes when ``rule`` goes away."""

    rule: Fault


@dataclasses.dataclass(frozen=True)
class Disconnect:
    """Drop the connection without a reply (at ``EOD`` with ``rule.store``,
    once the message is stored)."""

    rule: Fault


@dataclasses.dataclass(frozen=True)
class Discard:
    """Accept the message as if stored, and keep nothing."""

    rule: Fault


Step = Reply | Delay | Hang | Disconnect | Discard

_HIDDEN_COMMAND = Reply(502, "5.5.1 Command not implemented")
_HIDDEN_PARAM = {
    stage: Reply(555, f"5.5.4 {verb} parameters not recognized or not implemented")
    for stage, verb in (("MAIL", "MAIL FROM"), ("RCPT", "RCPT TO"))
}


def steps(faults: Faults, event: Event) -> list[Step]:
    """What must happen at ``event``, in order; empty to go on as usual.

    Only `Delay` steps come before others: a `Reply`, `Hang`, `Disconnect`
    or `Discard` ends the list. Server thread: this counts each rule's
    ``seen`` and ``fired`` and draws its random numbers.
    """
    hidden = faults.hidden
    if event.extension is not None and event.extension in hidden:
        return [_HIDDEN_COMMAND]
    if event.params and hidden and hidden_param(hidden, event.params):
        return [_HIDDEN_PARAM[event.stage]]
    planned: list[Step] = []
    for rule in faults.rules:
        if rule.action == "limit":
            reply = _over_limit(rule, event)
            if reply is not None:
                rule.seen += 1
                rule.fired += 1
                planned.append(reply)
                return planned
            continue
        if rule.action == "hide" or not (
            rule.stage == event.stage
            or (rule.stage == "DNS:QUERY" and event.stage.startswith("DNS:"))
        ):
            continue
        if event.matching_only and rule.match is None:
            continue
        if not rule._applies(event.subjects) or not rule.fire():
            continue
        step = _step(rule)
        planned.append(step)
        if not isinstance(step, Delay):
            return planned
    return planned


def _step(rule: Fault) -> Step:
    if rule.action == "delay":
        return Delay(rule.seconds or 0.0, rule)
    if rule.action == "hang":
        return Hang(rule)
    if rule.action == "disconnect":
        return Disconnect(rule)
    if rule.action == "drop":
        return Discard(rule)
    assert rule.code is not None
    return Reply(rule.code, rule.text, rule)


def too_many_recipients(limit: int) -> str:
    """A 452's text for a recipient over a limit (``max_recipients``, the
    ``limit()`` fault): it says the limit."""
    return f"4.5.3 Too many recipients (at most {limit})"


def size_refusal(size: int, limit: int, declared: bool) -> str:
    """A 552's text for a message over a size limit: both sizes, as a
    client's log needs them ("exceeds fixed maximum" left the limit out)."""
    what = f"Declared SIZE={size}" if declared else f"Message of {size} bytes"
    return f"5.3.4 {what} exceeds the size limit of {limit} bytes"


def _over_limit(rule: Fault, event: Event) -> Reply | None:
    assert rule.limit is not None
    name, value = rule.limit
    stage = event.stage
    if name == "max_recipients" and stage == "RCPT" and event.rcpt_count >= value:
        return Reply(452, too_many_recipients(value), rule)
    if name == "max_connections" and stage == "CONNECT" and event.connections > value:
        return Reply(
            421, f"4.7.0 Too many connections (at most {value}), try again later", rule
        )
    if (
        name == "max_size"
        and stage in ("MAIL", "EOD")
        and event.size is not None
        and event.size > value
    ):
        return Reply(552, size_refusal(event.size, value, stage == "MAIL"), rule)
    return None


def advertised(faults: Faults, keywords: Sequence[str]) -> list[str | None] | None:
    """EHLO keywords as the rules leave them: ``None`` for one to leave out,
    ``"SIZE n"`` for a SIZE a limit lowers. Returns None when the rules
    change nothing. ``keywords`` are the reply lines without their code,
    the first being the greeting (never left out)."""
    hidden = faults.hidden
    sizes = [
        rule.limit[1]
        for rule in faults.rules
        if rule.limit is not None and rule.limit[0] == "max_size"
    ]
    if not hidden and not sizes:
        return None
    result: list[str | None] = []
    for index, line in enumerate(keywords):
        keyword = line.split(" ")[0].upper()
        if index and keyword in hidden:
            result.append(None)
        elif keyword == "SIZE" and sizes:
            result.append(f"SIZE {min(sizes)}")
        else:
            result.append(line)
    return result


def hidden_param(hidden: Iterable[str], params: Iterable[str]) -> bool:
    """Whether a MAIL or RCPT parameter belongs to a hidden extension."""
    starts = tuple(
        start for name in hidden for start in _EXTENSION_PARAMS.get(name, ())
    )
    return bool(starts) and any(param.upper().startswith(starts) for param in params)
