"""A spam score from a real SpamAssassin: a SPAMC client for ``spamd``.

The protocol is a request line, two headers and the message; the answer is
a status line, the score and the report (SpamAssassin's
``spamd/PROTOCOL``). That is small enough to speak here over a blocking
socket: the maintained client, aiospamc, is asyncio-only (a sync test
would need a second event loop, which fails inside pytest-asyncio's) and
brings a CLI stack (typer, loguru) with it.

Runs in the test's thread. Which spamd to ask is set once per run by the
plugin from ``--smtpsink-spamd`` (`use_spamd`); a call can also name one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import socket
import time

from ._text import format_address, printable, shown_number

#: "host:port" of the spamd to ask, from --smtpsink-spamd; None: not set.
_configured: str | None = None

#: Seconds spam_report waits for spamd: to connect, then for each read of
#: its answer (so a spamd that accepts and never answers is an error).
DEFAULT_TIMEOUT = 30.0
_HOW = (
    "start SpamAssassin's spamd (Debian: apt-get install spamd; e.g. "
    "spamd --listen=127.0.0.1:7830 --local --nouser-config "
    "--cf='use_bayes 0') and pass "
    "--smtpsink-spamd=127.0.0.1:7830 (ini: smtpsink_spamd), or call "
    "{call}(spamd='127.0.0.1:7830')"
)
#: When spamd was named (by the call or the option) and did not serve: how
#: to start one at that address; naming another would be no help.
_START = (
    "Start SpamAssassin's spamd there (Debian: apt-get install spamd; e.g. "
    "spamd --listen={address} --local --nouser-config --cf='use_bayes 0')."
)
_STATUS = re.compile(rb"SPAMD/(\d+\.\d+) (\d+) (.*)")
_SPAM = re.compile(
    r"(?i)(true|false|yes|no)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)"
)
# A rule line: the score in four columns ("%4.1f"), the rule's name (any
# word: a site's own rules may be in lower case), its description. The
# lines continuing a description are indented far past the score column.
_RULE = re.compile(r"^ {0,3}(-?\d+(?:\.\d+)?)\s+([A-Za-z_]\w*)(?:\s+(.*))?$")


class SpamdError(RuntimeError):
    """spamd is not configured, not reachable, or answered something else
    than a score."""

    # Tracebacks name it as users import it, not by this private module.
    __module__ = "pytest_smtpsink"


@dataclasses.dataclass(frozen=True, slots=True)
class SpamRule:
    """One SpamAssassin rule that hit."""

    name: str
    score: float
    description: str


@dataclasses.dataclass(frozen=True, slots=True)
class SpamReport:
    """What spamd said about one message."""

    score: float
    threshold: float
    """spamd's ``required_score``: at or above it, mail is spam."""
    is_spam: bool
    rules: tuple[SpamRule, ...]
    """The rules that hit, in spamd's order (``str()`` of the report lists
    the largest scores first)."""
    report: str
    """spamd's own report text."""

    @property
    def hits(self) -> tuple[str, ...]:
        """The names of the rules that hit."""
        return tuple(rule.name for rule in self.rules)

    def __str__(self) -> str:
        # Largest score first: what made the verdict, before spamd's +0
        # notes. Stable, so equal scores keep spamd's order.
        ranked = sorted(self.rules, key=lambda rule: -abs(rule.score))
        rules = ", ".join(f"{r.name} ({r.score:+g})" for r in ranked) or "none"
        verdict = "spam" if self.is_spam else "not spam"
        return f"score {self.score:g} / {self.threshold:g} ({verdict}); rules: {rules}"


def use_spamd(address: str | None) -> str | None:
    """Set the spamd that `report` asks by default; returns the previous."""
    global _configured
    previous, _configured = _configured, address
    return previous


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:783"`` or ``"[::1]:783"`` -> (host, port)."""
    host, colon, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if "@" in text or "/" in text or (":" in host and not bracketed):
        # "user:pw@host:783", a URL: what is around the host may be a
        # password, so none of it is shown.
        raise ValueError(
            "the value is not HOST:PORT (e.g. 127.0.0.1:783): spamd's protocol "
            "has no user name or password (the value is not shown, as it may "
            "hold one); an IPv6 address goes in brackets ([::1]:783)"
        )
    if (
        not colon
        or not host
        or any(char.isspace() for char in host)
        or not (port.isascii() and port.isdigit())
    ):
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:783)")
    if not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    if bracketed and not _is_ipv6(host):
        # Errors write an IPv6 host in brackets and any other without
        # them: "[1::2::3]" would come back as 1::2::3:783, which reads as
        # another address.
        raise ValueError(
            f"{text!r} is not HOST:PORT: only an IPv6 address goes in brackets "
            "([::1]:783)"
        )
    return host, int(port)


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


def resolve_spamd(spamd: str | None, call: str = "spam_report") -> tuple[str, int]:
    """(host, port) of the spamd to ask: ``spamd`` if given, else the one
    --smtpsink-spamd set. Raises SpamdError if neither names one, before any
    message is looked at: a missing spamd is never a silent pass. ``call``:
    the method the test called, which the error names."""
    __tracebackhide__ = True
    if spamd is not None and not isinstance(spamd, str):
        raise TypeError(f"spamd must be 'HOST:PORT' (a str) or None, got {spamd!r}")
    # An empty string is a spamd given, and not HOST:PORT: never a silent
    # fallback to the configured one (or "no spamd is configured").
    address = _configured if spamd is None else spamd
    if address is None:
        raise SpamdError(
            f"no spamd is configured for {call}(): {_HOW.format(call=call)}"
        )
    try:
        return parse_address(address)
    except ValueError as error:
        raise ValueError(f"spamd: {error}") from None


def check_max_score(max_score: float | None) -> float | None:
    __tracebackhide__ = True
    if max_score is None:
        return None
    if isinstance(max_score, bool) or not isinstance(max_score, (int, float)):
        raise TypeError(
            f"max_score must be a number (a SpamAssassin score such as 5.0) "
            f"or None for spamd's threshold, got {shown_number(max_score)}"
        )
    # NaN compares false with every score: every message would pass.
    if not math.isfinite(max_score):
        raise ValueError(f"max_score must be a finite number, got {max_score!r}")
    return float(max_score)


def report(
    raw: bytes,
    spamd: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    call: str = "spam_report",
) -> SpamReport:
    """Ask spamd to score ``raw`` (the REPORT command). ``timeout``: seconds
    to wait for the connection, and for the whole answer once the message
    is sent (a spamd sending a byte now and then held the test for ever).
    ``call``: the method the test called, which the errors name."""
    __tracebackhide__ = True  # spamd's failure, not a frame of ours
    from ._settings import check_seconds

    timeout = check_seconds(timeout, "timeout")
    host, port = resolve_spamd(spamd, call)
    address = format_address(host, port)
    request = b"REPORT SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(raw) + raw
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)
            answer = bytearray()
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                connection.settimeout(left)
                chunk = connection.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except TimeoutError:
        raise SpamdError(
            f"spamd at {address} did not answer within {timeout:g} s "
            f"({call}(timeout=...) sets the limit)"
        ) from None
    except OSError as error:
        raise SpamdError(
            f"could not ask spamd at {address}: {error}. Is it running? "
            + _START.format(address=address)
        ) from None
    return _parse(bytes(answer), address)


def _parse(answer: bytes, where: str) -> SpamReport:
    if not answer:
        raise SpamdError(
            f"spamd at {where} closed the connection without an answer: is "
            f"that port a spamd's? " + _START.format(address=where)
        )
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = _STATUS.fullmatch(lines[0])
    if status is None or status.group(2) != b"0":
        raise SpamdError(
            f"spamd at {where} did not score the message: "
            f"{printable(lines[0][:200].decode('utf-8', 'replace'))}"
        )
    spam = None
    said = None
    for line in lines[1:]:
        name, _, value = line.decode("utf-8", "replace").partition(":")
        if name.strip().lower() == "spam":
            said, spam = value.strip(), _SPAM.search(value)
    if said is None:
        raise SpamdError(f"spamd at {where} answered without a Spam: header")
    if spam is None:
        raise SpamdError(
            f"spamd at {where} answered a Spam: header with no score in it: "
            f"{printable(said[:200])!r}"
        )
    text = body.decode("utf-8", "replace")
    return SpamReport(
        score=float(spam.group(2)) + 0.0,  # + 0.0: spamd's "-0.0" reads as 0
        threshold=float(spam.group(3)),
        is_spam=spam.group(1).lower() in ("true", "yes"),
        rules=_rules(text),
        report=text,
    )


def _rules(text: str) -> tuple[SpamRule, ...]:
    """The table at the end of spamd's report: `` pts rule name  description``
    lines, descriptions continued on indented lines."""
    rules: list[SpamRule] = []
    _, dashes, table = text.partition("\n---- ")
    if not dashes:
        return ()
    for line in table.splitlines()[1:]:
        match = _RULE.match(line)
        if match is not None:
            rules.append(
                SpamRule(
                    match.group(2),
                    float(match.group(1)) + 0.0,  # "-0.0" reads as 0
                    (match.group(3) or "").strip(),
                )
            )
        elif rules and line.strip():
            last = rules[-1]
            rules[-1] = dataclasses.replace(
                last, description=f"{last.description} {line.strip()}"
            )
    return tuple(rules)
