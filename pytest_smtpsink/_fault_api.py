"""The fault API of `Mailbox`: declaring rules, on the test's thread.

Each method validates its arguments and adds one `Fault` to the server's
`Faults`; what a rule then makes the server do is decided in `_faults` and
carried out by the protocol. Rules belong to the view that added them and
are removed when that view is closed (at the end of the test), and the
server then releases any connection they still hold (a hang, a delay).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._faults import (
    HIDEABLE,
    Action,
    Fault,
    FaultError,
    Faults,
    check_count,
    check_reply_text,
    check_trigger,
    normalize_stage,
)
from ._text import meant, shown_argument, shown_number

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._faults import Trigger


class FaultControls:
    """The fault API of `Mailbox` (see :doc:`faults`)."""

    _closed = False

    def _fault_registry(self) -> Faults:
        raise NotImplementedError  # the Mailbox gives its server's rules

    def _check_open(self, what: str) -> None:
        """Refuse to add ``what`` through a view whose test has ended (one
        kept in a global or a class attribute): nothing would remove it, so
        it would act in every later test."""
        __tracebackhide__ = True
        if self._closed:
            raise RuntimeError(
                f"this mailbox was closed at the end of its test: {what} "
                "added through it now would outlive it, in every later test; "
                "use the smtpsink (or smtpsink_factory()) of the running test"
            )

    def _add_fault(
        self,
        method: str,
        stage: str,
        action: Action,
        trigger: Trigger | None = None,
        **options: Any,
    ) -> Fault:
        __tracebackhide__ = True  # a FaultError names the bad argument
        self._check_open("a fault rule")
        if trigger:
            check_trigger(method, dict(trigger))
            options.update(trigger)
            match = options.get("match")
            if isinstance(match, str) and stage.startswith("DNS:"):
                options["match"] = _dns_match(stage, match)
        return self._fault_registry().add(Fault(self, stage, action, **options))

    def fail(
        self, stage: str, code: int, text: str | None = None, **trigger: Unpack[Trigger]
    ) -> Fault:
        """Answer ``stage`` with ``code`` (4xx or 5xx) instead of going on.

        ``text`` is the reply text (a sensible default per code); put newlines
        in it for a multi-line reply. It must be printable ASCII (tab too),
        each line at most 506 characters (a `FaultError` otherwise). ``match`` limits the rule to an address
        (exact; the domain without regard to case, in Unicode or
        A-labels) or a compiled regex
        (``re.search``). By default the rule applies every time; ``times=N``
        only the first N times (greylisting), ``every=N`` every Nth time,
        ``probability=p`` at random, replayable with ``seed`` (the keywords of
        `Trigger`). A 421 reply closes the connection, as does any failure at
        ``CONNECT``. At a DNS stage (``"DNS:MX"``, ``"DNS:QUERY"``) the MX stub
        answers SERVFAIL for a 4xx code, REFUSED for a 5xx one.
        """
        __tracebackhide__ = True
        stage = normalize_stage(stage)
        if (
            not isinstance(code, int)
            or isinstance(code, bool)
            or not 400 <= code <= 599
        ):
            raise FaultError(
                f"code must be a 4xx or 5xx reply code, got {shown_number(code)}"
            )
        if text is not None and not isinstance(text, str):
            raise FaultError(f"text must be a string, got {shown_argument(text)}")
        if text is not None and not text.strip():
            # It sent "451 " (a reply line with a space and nothing after).
            raise FaultError(
                f"text must say something, got {text!r}; leave text out for "
                "the usual text of the code"
            )
        if text is not None and stage.startswith("DNS:"):
            raise FaultError(
                f"a DNS reply has no text: {stage} answers SERVFAIL for a 4xx "
                "code and REFUSED for a 5xx one; leave text=None"
            )
        if text is not None:
            check_reply_text(stage, text)
        return self._add_fault("fail", stage, "reply", trigger, code=code, text=text)

    def disconnect(
        self, stage: str, *, store: bool = False, **trigger: Unpack[Trigger]
    ) -> Fault:
        """Drop the connection at ``stage``, without a reply.

        ``"DATA"`` drops it when the client sends DATA; ``"EOD"`` after the
        whole message was sent, before the server answers (nothing is
        stored). ``store=True`` (``"EOD"`` only) stores the message first:
        the reply is lost, not the message, and a client that sends it again
        delivers it twice (RFC 1047).
        """
        __tracebackhide__ = True
        stage = normalize_stage(stage)
        if not isinstance(store, bool):
            raise FaultError(
                f"store must be True or False, got {shown_argument(store)}"
            )
        if store and stage != "EOD":
            raise FaultError(
                f"store=True is for the 'EOD' stage, where a message has been "
                f"received; got {stage!r}"
            )
        return self._add_fault("disconnect", stage, "disconnect", trigger, store=store)

    def delay(self, stage: str, seconds: float, **trigger: Unpack[Trigger]) -> Fault:
        """Wait ``seconds`` before handling ``stage``, then go on as usual.

        Only this connection waits; others are served meanwhile.
        """
        __tracebackhide__ = True
        if (
            not isinstance(seconds, (int, float))
            or isinstance(seconds, bool)
            or not 0 <= seconds < float("inf")
        ):
            raise FaultError(
                f"seconds must be a number >= 0, got {shown_number(seconds)}"
            )
        return self._add_fault(
            "delay", normalize_stage(stage), "delay", trigger, seconds=float(seconds)
        )

    def hang(self, stage: str, **trigger: Unpack[Trigger]) -> Fault:
        """Never answer at ``stage``: the client waits until it gives up.

        The server closes the held connection when the rule goes away (at the
        end of the test at the latest) or after its idle timeout.
        """
        __tracebackhide__ = True
        return self._add_fault("hang", normalize_stage(stage), "hang", trigger)

    def drop(self, **trigger: Unpack[Trigger]) -> Fault:
        """Accept messages with a 250 and keep nothing (a black hole).

        ``match`` is compared with the sender and every recipient; the whole
        message is dropped if any matches.
        """
        __tracebackhide__ = True
        return self._add_fault("drop", "EOD", "drop", trigger)

    def limit(
        self,
        *,
        max_recipients: int | None = None,
        max_connections: int | None = None,
        max_size: int | None = None,
    ) -> tuple[Fault, ...]:
        """Impose limits for this test, as a busy or strict server would.

        ``max_recipients``: RCPT beyond that many per message gets
        ``452 4.5.3 Too many recipients (at most 2)``. ``max_connections``: a connection
        beyond that many open at once is greeted with ``421`` and closed.
        ``max_size`` (bytes): advertised in EHLO's SIZE; a larger ``SIZE=``
        at MAIL or a larger message at the end of data gets ``552``.
        """
        __tracebackhide__ = True
        rules = []
        for name, stage, value in (
            ("max_recipients", "RCPT", max_recipients),
            ("max_connections", "CONNECT", max_connections),
            ("max_size", "EOD", max_size),
        ):
            if value is None:
                continue
            check_count(name, value)
            rules.append(self._add_fault("limit", stage, "limit", limit=(name, value)))
        if not rules:
            raise FaultError(
                "limit() needs max_recipients=, max_connections= or max_size="
            )
        return tuple(rules)

    def hide(self, *extensions: str) -> Fault:
        """Stop advertising EHLO extensions, e.g. ``hide("STARTTLS")``.

        A hidden STARTTLS or AUTH command is refused with ``502``; a MAIL
        or RCPT parameter of a hidden extension (``SIZE=``, ``SMTPUTF8``,
        ``BODY=8BITMIME``, DSN's ``RET=``, ``ENVID=``, ``NOTIFY=`` and
        ``ORCPT=``) with ``555``.
        """
        __tracebackhide__ = True
        names = tuple(
            name.strip().upper() for name in extensions if isinstance(name, str)
        )
        if not names or len(names) != len(extensions):
            raise FaultError(
                f"hide() takes extension names, e.g. hide('STARTTLS'); got "
                f"{shown_argument(extensions)}"
            )
        for name in names:
            if name not in HIDEABLE:  # a typo would hide nothing, silently
                import difflib

                close = difflib.get_close_matches(name, HIDEABLE, n=1)
                raise FaultError(
                    f"hide(): {name!r} is not an extension a sink offers ("
                    + ", ".join(HIDEABLE)
                    + ")"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                )
        return self._add_fault("hide", "EHLO", "hide", hidden=names)

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The fault rules this view added that are still in force."""
        return tuple(r for r in self._fault_registry().rules if r._owner is self)

    def clear_faults(self) -> None:
        """Remove every fault this view added, and close the connections
        they hold. The fixtures do this at the end of each test."""
        registry = self._fault_registry()
        if registry.rules:  # most tests add none: no lock, no scan
            registry.remove(lambda rule: rule._owner is self)

    def close(self) -> None:
        """End this view: remove what it added to its sink (fault rules, DNS
        records). The fixtures call it at the end of each test, also when
        the test failed. It takes no new rules, records or mail after that
        (a RuntimeError): nothing would remove them."""
        self._closed = True
        self.clear_faults()


def release_held(view: FaultControls) -> None:
    """Close the connections ``view``'s fault rules hold (a hang, a delay),
    keeping the rules: the plugin does this as a test's teardown begins,
    before any fixture's (see its ``pytest_runtest_teardown``). Not a
    method: the views' public surface stays as it is."""
    registry = view._fault_registry()
    if registry.rules:
        registry.release_held(lambda rule: rule._owner is view)


_METHODS = ("fail", "disconnect", "delay", "hang", "drop", "limit", "hide")


def apply_marker(
    view: FaultControls, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Fault | tuple[Fault, ...]:
    """``@pytest.mark.smtpsink_fault("fail", "MAIL", 451, times=2)``, or with
    the kind as a keyword, as the reference writes it: ``kind="fail"``."""
    __tracebackhide__ = True
    if args and "kind" in kwargs:
        raise FaultError(
            "name the fault once: as the first argument "
            "(@pytest.mark.smtpsink_fault('fail', 'RCPT', 550)) or as kind= "
            f"(smtpsink_fault(kind='fail', stage='RCPT', code=550)), not both; "
            f"got {shown_argument(args[0])} and kind={shown_argument(kwargs['kind'])}"
        )
    if "kind" in kwargs:
        kwargs = dict(kwargs)
        args = (kwargs.pop("kind"),)
    if not args or args[0] not in _METHODS:
        got = (
            f"; got {shown_argument(args[0])}{meant(args[0], _METHODS)}"
            if args
            else "; got none"
        )
        raise FaultError(
            "the first argument names the fault: one of "
            f"{', '.join(map(repr, _METHODS))}, e.g. "
            "@pytest.mark.smtpsink_fault('fail', 'RCPT', 550, match='x@example.com')"
            + got
        )
    method = getattr(view, args[0])
    try:
        return method(*args[1:], **kwargs)  # type: ignore[no-any-return]
    except TypeError as error:
        # Python's text names FaultControls.limit() and counts its self:
        # the marker's own form says what it takes.
        text = str(error).removeprefix(f"FaultControls.{args[0]}() ")
        if "positional argument" in text and " were given" in text:
            # "takes 3 positional arguments but 4 were given": both counts
            # include self. A missing argument's text is kept: it names it.
            given = len(args) - 1
            text = f"got {given} positional argument{'s' if given != 1 else ''}"
        raise FaultError(
            f"smtpsink_fault({args[0]!r}, ...): {text}; it takes "
            f"smtpsink_fault({args[0]!r}{_marker_parameters(method)})"
        ) from None


def _marker_parameters(method: Any) -> str:
    """``method``'s parameters as the marker takes them after the kind,
    without annotations: ", stage, code=None, *, match=None"."""
    import inspect

    shown = []
    keyword_only = False
    for parameter in inspect.signature(method).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not keyword_only:
            shown.append("*")
            keyword_only = True
        default = parameter.default
        if parameter.kind is parameter.VAR_KEYWORD:
            shown.append(f"**{parameter.name}")
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:
            shown.append(f"*{parameter.name}")
            keyword_only = True
            continue
        shown.append(
            parameter.name
            if default is parameter.empty
            else f"{parameter.name}={default!r}"
        )
    return "".join(f", {part}" for part in shown)


def _dns_match(stage: str, match: str) -> str:
    """A DNS stage's ``match`` as questions are asked: a domain name in
    A-labels, as the zone writes its names. Given as "exämple.com", it was
    compared with "xn--exmple-cua.com" and never fired."""
    __tracebackhide__ = True
    if "@" in match:
        raise FaultError(
            f"match at {stage} is the domain name asked about, got the "
            f"address {match!r}"
        )
    try:
        from ._dns import question_name  # not in _faults: a leaf
    except ImportError:  # no dnspython: no DNS stub to ask
        return match
    try:
        return question_name(match)
    except ValueError as error:
        raise FaultError(f"match at {stage}: {error}") from None
