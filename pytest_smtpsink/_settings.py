"""Sink settings: one frozen value per distinct server configuration.

Settings are validated here, before any socket or thread exists, so that a
bad value fails fast with a message naming the setting (and so that aiosmtpd
never sees a value that would make its protocol factory raise: that path can
hang ``stop()`` on Python 3.12, aiosmtpd issue 394).
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, get_args

from ._credentials import has_utf8_form
from ._text import close_names, meant, normalize_user, shown_argument, shown_number

if TYPE_CHECKING:
    # Imported where used: pytest loads this module for the plugin in every
    # run, and ssl costs more to import than the rest of the plugin.
    import ssl

# pytest hides this module's frames (dataclass-made __init__ included): a
# SettingsError points at the caller's line, and --showlocals never prints
# a password from them (auth=, a relay URL).
__tracebackhide__ = True

TLSMode = Literal["starttls", "starttls-required", "implicit"]
EventLoop = Literal["auto", "asyncio", "uvloop"]
AuthSetting = None | Literal["any"] | Mapping[str, str]

#: Large enough for a 25 MB attachment after base64 (about 34 MB on the wire).
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
DEFAULT_HOSTNAME = "smtpsink.test"
DEFAULT_HOST = "127.0.0.1"
#: Seconds a wait_for waits when given no timeout (``--smtpsink-timeout``).
DEFAULT_TIMEOUT = 5.0


# ASCII digits only: \d (and int()) take full-width and other digits too.
_SIZE = re.compile(r"(?ai)\s*(\d+)\s*(|b|kb|mb|gb|kib|mib|gib|k|m|g)\s*")
_UNITS = {
    **dict.fromkeys(("", "b"), 1),
    **{"kb": 10**3, "mb": 10**6, "gb": 10**9},
    **{"k": 2**10, "m": 2**20, "g": 2**30, "kib": 2**10, "mib": 2**20, "gib": 2**30},
}


#: Keys are compared within one process only: a key of its own makes the
#: digests of a test's (often guessable) passwords no lookup table's.
_DIGEST_KEY = os.urandom(16)


def _digest(secret: str) -> str:
    data = secret.encode(errors="surrogatepass")
    return "hmac-sha256:" + hmac.new(_DIGEST_KEY, data, "sha256").hexdigest()


#: The largest max_size: RFC 1870's SIZE value has at most 20 digits.
_MAX_SIZE_LIMIT = 10**20 - 1


def parse_size(text: str) -> int:
    """Bytes from ``"1048576"``, ``"25MB"`` (decimal), ``"64MiB"`` or ``"64M"``
    (binary). One parser for the pytest options and the standalone sink."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (e.g. 1048576, 25MB, 64MiB, 0)")
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


#: The sink's name in its greeting, EHLO reply and Received: headers: a
#: domain (RFC 5321 4.1.2; "_" too, as test names use it) or an address
#: literal. Not "a/b" or "a,b": the Received: header would not parse.
_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_ADDRESS_CHARACTERS = re.compile(r"(?:IPv6:)?[0-9A-Fa-f:.]+", re.IGNORECASE)


def _valid_hostname(name: str) -> bool:
    """A domain name (each label 1 to 63 characters, 253 in all, a final
    dot allowed) or an address literal ``[192.0.2.1]``, ``[IPv6:::1]``:
    the EHLO and greeting name (``a..b`` and ``[999.1.1.1]`` went through)."""
    if name.startswith("[") and name.endswith("]"):
        inner = name[1:-1]
        if not _ADDRESS_CHARACTERS.fullmatch(inner):
            # No zone ("fe80::1%eth0"), which ipaddress takes with any
            # characters, a CR LF among them, said in every greeting.
            return False
        version = 6 if inner[:5].upper() == "IPV6:" else 4
        try:
            address = ipaddress.ip_address(inner[5:] if version == 6 else inner)
        except ValueError:
            return False
        return address.version == version
    return is_domain_name(name)


def is_domain_name(name: str) -> bool:
    """Labels of 1 to 63 letters, digits and hyphens, 253 characters in all,
    a final dot allowed."""
    bare = name.removesuffix(".")
    return 0 < len(bare) <= 253 and all(map(_LABEL.fullmatch, bare.split(".")))


# A minus sign is read, so that the caller's range check says what is wanted.
_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def parse_whole(text: str) -> int:
    """A number written in ASCII digits (and a minus sign), blanks around it
    allowed.
    ``int()`` also reads what no user means as a port: full-width and other
    Unicode digits, ``1_000`` and ``+25``. ValueError otherwise. For the
    pytest options and the standalone sink alike."""
    if not _WHOLE.fullmatch(text.strip()):
        raise ValueError(f"not a number in digits: {text!r}")
    return int(text)


def parse_number(text: str) -> float:
    """A decimal number (``5``, ``0.5``, ``.5``), as `parse_whole`: not
    ``1_0``, ``1e-9``, ``+5``, ``inf`` or ``nan``, which ``float()`` reads."""
    if not _DECIMAL.fullmatch(text.strip()):
        raise ValueError(f"not a decimal number: {text!r}")
    return float(text)


class SettingsError(ValueError):
    """A sink setting has a value the sink cannot use.

    ``setting`` names the offending setting, so that the pytest plugin can
    point at the matching command-line option or marker argument.
    """

    # Tracebacks name it as users import it, not by this private module.
    __module__ = "pytest_smtpsink"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


@dataclasses.dataclass(frozen=True)
class SinkSettings:
    """How one sink server behaves. Every field has a safe default."""

    host: str = DEFAULT_HOST
    port: int = 0
    hostname: str = DEFAULT_HOSTNAME
    max_size: int = DEFAULT_MAX_SIZE
    max_recipients: int | None = None
    max_stored_bytes: int | None = None
    """Refuse further messages (452) once the sink holds this many bytes of
    mail since the test began (or since `SMTPSink.clear`); the next read of
    the mailbox then fails naming the limit. None: no limit."""
    smtputf8: bool = True
    tls: TLSMode | None = None
    # Not compared by the dataclass's own means (compare=False), but by
    # __eq__ below: pytest explains a failed comparison of anything that
    # holds settings (a user's dataclass, a NamedTuple) field by field,
    # with each field's repr, and printed the passwords.
    auth: AuthSetting = dataclasses.field(default=None, compare=False)
    auth_required: bool = False
    auth_plaintext: bool = False
    allow_remote: bool = False
    idle_timeout: float = 300.0
    relay: str | None = dataclasses.field(default=None, compare=False)
    """Relay accepted mail to this upstream, e.g. ``"smtp://127.0.0.1:2525"``
    (see :doc:`relay`); only recipients matching `relay_to` are relayed."""
    relay_to: str | None = None
    """Regular expression a recipient must match in full (ignoring case) to
    be relayed; required with `relay`."""
    relay_allow_remote: bool = False
    """Allow a `relay` upstream that is not a loopback address."""
    relay_timeout: float = 10.0
    """Seconds the relay waits for the upstream to connect or answer."""
    recipient_delimiter: str | None = None
    """With e.g. ``"+"``, mail to ``ann+news@example.com`` goes to the
    mailbox of ``ann@example.com`` (POP3, IMAP, `Mailbox.mailbox`)."""
    tls_cert: str | None = None
    """A PEM file with the server certificate (and its chain) that TLS sinks
    present instead of the trustme one; the key too, unless in `tls_key`."""
    tls_key: str | None = None
    """A PEM file with the (unencrypted) private key of `tls_cert`."""
    tls_context: ssl.SSLContext | None = None
    """A server-side `ssl.SSLContext`, used as it is, for full control."""
    event_loop: EventLoop = "auto"
    """The event loop of the sink's own thread: ``"uvloop"`` (installed by
    the ``speed`` extra), ``"asyncio"``, or ``"auto"``: uvloop when it is
    installed, except for ``tls="implicit"`` (see `_uses_uvloop`). Never the
    loop of the tests themselves."""

    def _uses_uvloop(self) -> bool:
        """Whether this sink's thread runs uvloop.

        Not for implicit TLS: uvloop starts reading a new connection as soon
        as the protocol's ``connection_made`` returns, and pausing it there
        has no effect, so a ClientHello that arrives before the sink hands
        the socket to ``start_tls`` is read as plain text and lost (about
        every other connection here). asyncio's loop starts reading one
        iteration later, after the handshake took over.
        """
        if self.event_loop == "auto":
            return self.tls != "implicit" and uvloop_installed()
        return self.event_loop == "uvloop"

    def __post_init__(self) -> None:
        for name in ("tls_cert", "tls_key"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        given: object = self.max_size  # typed int, but a caller may pass "25MB"
        if isinstance(given, str):  # as the option and the CLI take it
            try:
                size = parse_size(given.strip())
            except ValueError as error:
                raise SettingsError("max_size", str(error)) from None
            object.__setattr__(self, "max_size", size)
        _validate(self)
        if isinstance(self.auth, Mapping):
            # A private, read-only copy: a caller changing their dict later
            # must not change a running server's credentials.
            object.__setattr__(self, "auth", MappingProxyType(dict(self.auth)))

    def __hash__(self) -> int:
        return hash(self.key())

    def __eq__(self, other: object) -> bool:
        # Every field, auth and relay too (see there).
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in dataclasses.fields(self)
        )

    def __repr__(self) -> str:
        # Not the dataclass repr: it would print the passwords in ``auth``
        # into failure reports, logs and test ids.
        return f"SinkSettings({self.describe()})"

    def __getstate__(self) -> dict[str, Any]:
        # The read-only view of the auth table cannot be pickled or
        # deep-copied; a plain dict can, and __setstate__ makes it read-only
        # again.
        state = dict(self.__dict__)
        if isinstance(self.auth, MappingProxyType):
            state["auth"] = dict(self.auth)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        auth = state.get("auth")
        if isinstance(auth, Mapping):
            state = {**state, "auth": MappingProxyType(dict(auth))}
        self.__dict__.update(state)

    def _load_server_context(self) -> ssl.SSLContext:
        """A server context with `tls_cert` and `tls_key` loaded.

        Raises `SettingsError` naming the setting: a missing or unreadable
        file, something that is not PEM, a key that does not match the
        certificate, an encrypted key.
        """
        import ssl

        assert self.tls_cert is not None
        for name in ("tls_cert", "tls_key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                what = (
                    "a directory, not a file" if os.path.isdir(path) else "no such file"
                )
                raise SettingsError(name, f"{what}: {path!r}")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

        def no_password() -> str:
            # Without this callback OpenSSL would ask on the terminal.
            raise SettingsError(
                "tls_key" if self.tls_key else "tls_cert",
                "the private key is encrypted; give an unencrypted key, or "
                "load it yourself into tls_context=",
            )

        try:
            context.load_cert_chain(self.tls_cert, self.tls_key, password=no_password)
        except OSError as error:
            reason = getattr(error, "reason", None)
            if reason == "KEY_VALUES_MISMATCH":
                raise SettingsError(
                    "tls_key",
                    f"the private key in {self.tls_key or self.tls_cert!r} does "
                    f"not match the certificate in {self.tls_cert!r}",
                ) from None
            if isinstance(error, ssl.SSLError):
                where = (
                    f"from {self.tls_key!r}"
                    if self.tls_key
                    else "(no tls_key given: the certificate file must hold it)"
                )
                raise SettingsError(
                    "tls_key" if self.tls_key else "tls_cert",
                    f"cannot load the certificate {self.tls_cert!r} and its key "
                    f"{where}: {reason or 'no usable PEM certificate and key found'}",
                ) from None
            raise SettingsError("tls_cert", f"cannot read it: {error}") from None
        return context

    def replace(self, **changes: Any) -> SinkSettings:
        """A copy with ``changes`` applied (and validated)."""
        unknown = sorted(set(changes) - _FIELD_NAMES)
        if unknown:
            # A slip of a letter or two (max_sise, hostnme) gets the name
            # meant; the whole list follows anyway.
            meant = close_names(unknown, sorted(_FIELD_NAMES))
            hint = ", ".join(
                field if len(unknown) == 1 else f"{field} for {name!r}"
                for name, field in meant.items()
            )
            hint = f" (did you mean {hint}?)" if hint else ""
            raise TypeError(
                f"unknown sink setting(s) {', '.join(map(repr, unknown))}{hint}; "
                f"valid settings are: {', '.join(sorted(_FIELD_NAMES))}"
            )
        try:
            return dataclasses.replace(self, **changes)
        except SettingsError as error:
            # Without the frames of dataclasses.replace: they hold the
            # changes (a password) for --showlocals to print.
            raise error.with_traceback(None) from None

    def key(self) -> tuple[Any, ...]:
        """A hashable identity: equal settings share one server. Passwords
        (of ``auth`` and of a ``relay`` URL) are in it as digests, so that
        a test printing it prints none."""
        auth = self.auth
        if isinstance(auth, Mapping):
            auth_key: Any = tuple(sorted((u, _digest(p)) for u, p in auth.items()))
        else:
            auth_key = auth
        relay = self.relay
        if relay is not None and urllib.parse.urlsplit(relay).password is not None:
            relay = _digest(relay)
        return tuple(
            auth_key
            if f.name == "auth"
            else relay
            if f.name == "relay"
            else getattr(self, f.name)
            for f in dataclasses.fields(self)
        )

    def describe(self) -> str:
        """The settings that differ from the defaults, for reports and reprs.

        Passwords in ``auth`` are never shown.
        """
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            parts.append(f"{f.name}={shown_setting(f.name, value)}")
        return ", ".join(parts)


def _holds_password(user: object, password: object) -> bool:
    """Whether a user name holds its own password (a service's token used
    as both): then the name is shown as ``****`` too."""
    return bool(password) and str(password) in str(user)


def shown_setting(name: str, value: object) -> str:
    """A setting's value as reports show it: no password of ``auth`` (nor
    a user name that holds its own password, as a service's token used as
    both does), the ``relay`` URL without its password."""
    if name == "auth" and isinstance(value, Mapping):
        return (
            "{"
            + ", ".join(
                f"{'****' if _holds_password(user, password) else user!r}: '***'"
                for user, password in value.items()
            )
            + "}"
        )
    if name == "relay" and isinstance(value, str):
        from ._relay import masked_url

        return repr(masked_url(value))
    return repr(value)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(SinkSettings))


def uvloop_installed() -> bool:
    """Whether uvloop can be imported (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def _require(ok: bool, setting: str, message: str) -> None:
    if not ok:
        raise SettingsError(setting, message)


def check_seconds(value: object, name: str) -> float:
    """``value`` as seconds to wait: a number > 0 and finite (0 would make a
    socket non-blocking, inf or NaN wait for ever). TypeError or ValueError
    naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, got {shown_number(value)}"
        )
    if not 0 < value < float("inf"):  # NaN fails too
        raise ValueError(
            f"{name} must be a {_finite(value)}number of seconds > 0, got {value!r}"
        )
    return float(value)


def _finite(value: object) -> str:
    """``"finite "`` when ``value`` is infinity: "> 0" alone does not say
    why inf is refused."""
    return "finite " if value == float("inf") else ""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(s: SinkSettings) -> None:
    _require(
        s.recipient_delimiter is None
        or (
            isinstance(s.recipient_delimiter, str)
            and len(s.recipient_delimiter) == 1
            and not s.recipient_delimiter.isalnum()
            and s.recipient_delimiter not in '@<> \t\r\n"'
        ),
        "recipient_delimiter",
        "must be None or one punctuation character such as '+' or '-', got "
        f"{shown_argument(s.recipient_delimiter)}",
    )
    _require(isinstance(s.host, str) and bool(s.host), "host", "must be an IP address")
    try:
        address = ipaddress.ip_address(s.host)
    except ValueError:
        raise SettingsError(
            "host",
            f"{shown_argument(s.host)} is not an IP address (use e.g. 127.0.0.1 or ::1)",
        ) from None
    _require(
        address.is_loopback or s.allow_remote,
        "host",
        f"{s.host} is not a loopback address; a sink accepts mail from anyone "
        "who can reach it, so binding elsewhere must be asked for with "
        "allow_remote=True (--smtpsink-allow-remote)",
    )
    _require(
        _is_int(s.port) and 0 <= s.port <= 65535,
        "port",
        "must be an integer from 0 to 65535 (0 picks a free port), got "
        f"{shown_number(s.port)}",
    )
    _require(
        isinstance(s.hostname, str) and _valid_hostname(s.hostname),
        "hostname",
        "must be a domain name (labels of 1 to 63 ASCII letters, digits, '-' "
        "and '_' joined by dots, at most 253 characters, such as "
        "mx.example.test) or an address literal such as [192.0.2.1], got "
        f"{shown_argument(s.hostname)}",
    )
    _require(
        # RFC 1870's SIZE is at most 20 digits: EHLO advertises it.
        _is_int(s.max_size) and 0 <= s.max_size <= _MAX_SIZE_LIMIT,
        "max_size",
        "must be a number of bytes >= 0 (0 means no limit) of at most 20 "
        f"digits, got {shown_argument(s.max_size)}",
    )
    _require(
        s.max_recipients is None
        or (_is_int(s.max_recipients) and s.max_recipients >= 1),
        "max_recipients",
        f"must be None or an integer >= 1, got {shown_argument(s.max_recipients)}",
    )
    _require(
        s.max_stored_bytes is None
        or (_is_int(s.max_stored_bytes) and s.max_stored_bytes >= 1),
        "max_stored_bytes",
        f"must be None or a number of bytes >= 1, got {shown_argument(s.max_stored_bytes)}",
    )
    for flag in (
        "smtputf8",
        "auth_required",
        "auth_plaintext",
        "allow_remote",
        "relay_allow_remote",
    ):
        value = getattr(s, flag)
        _require(
            isinstance(value, bool),
            flag,
            f"must be True or False, got {shown_argument(value)}",
        )
    _require(
        s.event_loop in get_args(EventLoop),
        "event_loop",
        f"must be one of {', '.join(get_args(EventLoop))}, got "
        f"{shown_argument(s.event_loop)}{meant(s.event_loop, get_args(EventLoop))}",
    )
    _require(
        s.event_loop != "uvloop" or uvloop_installed(),
        "event_loop",
        "uvloop is not installed (pip install pytest-smtpsink[speed])",
    )
    _require(
        s.event_loop != "uvloop" or s.tls != "implicit",
        "event_loop",
        "uvloop cannot serve tls='implicit' (it reads before the handshake "
        "can start); use 'auto' or 'asyncio'",
    )
    _require(
        s.tls is None or s.tls in get_args(TLSMode),
        "tls",
        f"must be None or one of {', '.join(map(repr, get_args(TLSMode)))}, "
        f"got {shown_argument(s.tls)}{meant(s.tls, get_args(TLSMode))}",
    )
    if isinstance(s.auth, Mapping):
        _require(bool(s.auth), "auth", "the credentials table is empty")
        for user, password in s.auth.items():
            _require(
                isinstance(user, str) and isinstance(password, str),
                "auth",
                "the credentials table must map user names (str) to passwords (str)",
            )
            _require(
                bool(user),
                "auth",
                "the credentials table has an empty user name, with which no "
                "login succeeds",
            )
            # Most likely os.environ.get("PW", "") with the variable unset;
            # no login with an empty password succeeds on any protocol.
            _require(
                bool(password),
                "auth",
                f"the credentials table gives {user!r} an empty password: "
                "give it one (no login with an empty password succeeds)",
            )
            # No client can send a lone surrogate, nor could its masks be made.
            _require(
                has_utf8_form(user),
                "auth",
                "the credentials table has a user name that is not valid "
                "Unicode text (a lone surrogate, such as os.environ gives for a "
                "byte that is not UTF-8), with which no login succeeds",
            )
            _require(
                has_utf8_form(password),
                "auth",
                f"the credentials table gives {user!r} a password that is not "
                "valid Unicode text (a lone surrogate, such as os.environ gives "
                "for a byte that is not UTF-8), with which no login succeeds",
            )
        clash = one_mailbox_clash(s.auth, s.recipient_delimiter)
        _require(clash is None, "auth", clash or "")
    else:
        _require(
            s.auth is None or s.auth == "any",
            "auth",
            # The type only: a wrong value may still hold a password.
            "must be None, 'any' or a mapping of user to password, got a "
            f"{type(s.auth).__name__}",
        )
    _require(
        not s.auth_required or s.auth is not None,
        "auth_required",
        "needs auth='any' or a credentials table",
    )
    # Like real servers, a sink offers AUTH only over TLS unless told
    # otherwise; AUTH with neither could never be used, so say so now
    # rather than let the client fail with "AUTH not supported".
    _require(
        s.auth is None or s.tls is not None or s.auth_plaintext,
        "auth",
        "AUTH is only offered over TLS: add tls='starttls' (or 'implicit'), "
        "or auth_plaintext=True to allow AUTH without TLS",
    )
    _validate_own_tls(s)
    _require(
        isinstance(s.idle_timeout, (int, float))
        and not isinstance(s.idle_timeout, bool)
        and s.idle_timeout > 0,
        "idle_timeout",
        f"must be a number of seconds > 0, got {shown_number(s.idle_timeout)}",
    )
    # Checked with or without relay=, as every field is.
    _require(
        isinstance(s.relay_timeout, (int, float))
        and not isinstance(s.relay_timeout, bool)
        and 0 < s.relay_timeout < float("inf"),
        "relay_timeout",
        f"must be a {_finite(s.relay_timeout)}number of seconds > 0, got "
        f"{shown_number(s.relay_timeout)}",
    )
    if s.relay is not None or s.relay_to is not None:
        _validate_relay(s)
    else:
        # As relay_to alone, and as the standalone sink's options: a test
        # that meant to relay (a marker that forgot relay=) is told so.
        default = SinkSettings.__dataclass_fields__["relay_timeout"].default
        _require(
            not s.relay_allow_remote,
            "relay_allow_remote",
            "is only used with relay=URL (the upstream)",
        )
        _require(
            s.relay_timeout == default,
            "relay_timeout",
            "is only used with relay=URL (the upstream)",
        )


def one_mailbox_clash(
    table: Mapping[str, str], delimiter: str | None = None
) -> str | None:
    """What is wrong with a credentials table in which two users name one
    mailbox (``ANN@example.com`` and ``ann@example.com``; ``ann+a@`` and
    ``ann+b@`` with the `recipient_delimiter` ``"+"``), or None: each
    password would open it, and a login spelt in a third case would open
    it with neither. A user name that holds its password (a token used as
    both, as `shown_setting` hides it) or is another user's password in
    another case is shown as ``'****'``."""
    passwords = {password.lower() for password in table.values() if password}

    def shown(user: str) -> str:
        hidden = _holds_password(user, table[user]) or user.lower() in passwords
        return "'****'" if hidden else repr(user)

    seen: dict[str, str] = {}
    for user in table:
        other = seen.setdefault(normalize_user(user, delimiter), user)
        if other != user:
            return (
                f"users {shown(other)} and {shown(user)} name one mailbox (mailbox "
                "names compare without regard to case, needless quotes or the "
                "domain's spelling): give it once"
            )
    return None


def _validate_relay(s: SinkSettings) -> None:
    from ._relay import is_loopback_host, masked_url, parse_upstream

    def is_loopback_or_any(host: object) -> bool:
        return isinstance(host, str) and (
            host in ("", "0.0.0.0", "::") or is_loopback_host(host)
        )

    try:
        upstream = parse_upstream(s.relay) if s.relay is not None else None
    except ValueError as error:
        raise SettingsError("relay", str(error)) from None
    _require(
        upstream is not None, "relay_to", "is only used with relay=URL (the upstream)"
    )
    assert upstream is not None
    # Checked now, as tls_cert is: later, every message would fail to relay.
    if upstream.ca_file is not None:
        from ._relay import ca_file_problem

        problem = ca_file_problem(upstream.ca_file)
        _require(problem is None, "relay", f"its cafile= {problem}")
    _require(
        upstream.is_loopback() or s.relay_allow_remote,
        "relay",
        f"{upstream.host} is not a loopback address; relaying captured mail "
        "to another host must be asked for with relay_allow_remote=True",
    )
    # The sink's own address (a fixed port): every message would come back
    # to be relayed again, a copy more each time (the hop limit would stop
    # it only after 100 copies).
    _require(
        not (
            isinstance(s.port, int)
            and s.port == upstream.port
            and upstream.is_loopback()
            and is_loopback_or_any(s.host)
        ),
        "relay",
        f"{masked_url(s.relay or '')} is this sink's own address: it would relay "
        "each message to itself, again and again",
    )
    # smtp:// would send the password as it is (AUTH PLAIN and LOGIN are
    # base64, not encryption) across the network; on loopback it stays on
    # this machine, as a test's upstream sink does.
    _require(
        upstream.username is None or upstream.tls is not None or upstream.is_loopback(),
        "relay",
        f"credentials need smtp+starttls:// or smtps:// for a host off loopback "
        f"({upstream.host}): smtp:// would send the password unencrypted",
    )
    _require(
        s.relay_to is None or isinstance(s.relay_to, str),
        "relay_to",
        f"must be a regular expression string, got {shown_argument(s.relay_to)}"
        + (
            " (give its pattern: relay_to=pattern.pattern; it is matched "
            "without regard to case)"
            if isinstance(s.relay_to, re.Pattern)
            else ""
        ),
    )
    _require(
        bool(s.relay_to),
        "relay_to",
        "relay needs relay_to=REGEX, the recipients to relay (nothing is relayed "
        "without a match; '.*' relays every recipient)",
    )
    assert s.relay_to is not None
    try:
        re.compile(s.relay_to)
    except re.error as error:
        raise SettingsError(
            "relay_to", f"{s.relay_to!r} is not a regular expression: {error}"
        ) from None


def _validate_own_tls(s: SinkSettings) -> None:
    for name in ("tls_cert", "tls_key"):
        value = getattr(s, name)
        _require(
            value is None or (isinstance(value, str) and bool(value)),
            name,
            f"must be None or the path of a PEM file, got {shown_argument(value)}",
        )
    if s.tls_context is not None:
        import ssl
    _require(
        s.tls_context is None or isinstance(s.tls_context, ssl.SSLContext),
        "tls_context",
        f"must be None or an ssl.SSLContext, got a {type(s.tls_context).__name__}",
    )
    _require(
        s.tls_key is None or s.tls_cert is not None,
        "tls_key",
        "is the key of tls_cert; give tls_cert too",
    )
    _require(
        s.tls_context is None or s.tls_cert is None,
        "tls_context",
        "give either tls_context or tls_cert (and tls_key), not both",
    )
    own = "tls_context" if s.tls_context is not None else "tls_cert"
    _require(
        s.tls is not None or (s.tls_cert is None and s.tls_context is None),
        own,
        "is for TLS sinks: add tls='starttls', 'starttls-required' or 'implicit'",
    )
    if s.tls_context is not None:
        # A client context (PROTOCOL_TLS_CLIENT, create_default_context())
        # would fail every handshake with an obscure error.
        _require(
            s.tls_context.protocol != ssl.PROTOCOL_TLS_CLIENT
            and not s.tls_context.check_hostname,
            "tls_context",
            "is a client context; make a server one with "
            "ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER) and load_cert_chain()",
        )
        from ._tls import lacks_certificate

        # Checked now: every handshake would fail, and each session's
        # tls_error would say so only after the client's failure.
        _require(
            not lacks_certificate(s.tls_context),
            "tls_context",
            "has no certificate (or none its cipher suites can use): a test "
            "handshake failed with NO_SHARED_CIPHER (UNSUPPORTED_PROTOCOL when "
            "limited to TLS 1.3), as every client's would; "
            "load one with tls_context.load_cert_chain(certfile, keyfile), or "
            "give tls_cert= (and tls_key=) instead",
        )
    if s.tls_cert is not None:
        s._load_server_context()  # checked now, not at the first handshake
