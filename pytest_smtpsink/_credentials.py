"""The credentials a sink knows, and masking them wherever they show up.

A sink knows the passwords of its ``auth`` table and of its relay URL.
Clients send them in the places the protocols give them (AUTH, PASS,
LOGIN), which the servers mask as they record each line. This module is
the net under that: a client that puts a password where no protocol
expects one (an unknown command, a line on its own) still never gets it
into a transcript, a report or a saved file, because every recorded line
and reply is masked for the words the sink knows are secret.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from ._imap_syntax import encode_folder_name
from ._text import C0_ESCAPES, printable_sent

Masker = Callable[[str], str]

#: Where a relay URL with a user name and no password gets its password.
RELAY_PASSWORD_VARIABLE = "SMTPSINK_RELAY_PASSWORD"

# What may not stand around a password sent as a word: letters, digits and
# what joins them into a name or an address ("_", "@", ".", "-"): the
# password "ann" must not be masked out of "ann@example.com". Anything else
# may ("pw=secret", "|secret|", a quote, a bracket, white space).
_IN_WORD = r"\w@.\-"
#: A recorded line is masked once it is printable: a byte that is not UTF-8
#: or a control character before a secret is then an escape ("\xff",
#: "\x01", "\t"), whose last character joins a word. Such an escape ends a
#: word as the character it stands for does.
_AFTER_ESCAPE = (
    r"|(?<=\\x[0-9a-fA-F]{2})|(?<=\\u[0-9a-fA-F]{4})"
    r"|(?<=\\U[0-9a-fA-F]{8})|(?<=\\[tnrabfv0])"
)


def has_utf8_form(secret: str) -> bool:
    """Whether ``secret`` can be sent (and its masks made): not so with a
    lone surrogate, os.environ's stand-in for a byte that is not UTF-8."""
    try:
        secret.encode()
    except UnicodeEncodeError:
        return False
    return True


def credential_forms(auth: object, relay: str | None) -> list[str]:
    """Each password of an ``auth`` table (as given, in base64, and as a
    PLAIN response) and the password of a ``relay`` URL (as written in it,
    and decoded)."""
    found: list[str] = []
    if isinstance(auth, Mapping):
        for user, password in auth.items():
            if isinstance(user, str) and isinstance(password, str):
                found += [
                    password,
                    base64.b64encode(password.encode()).decode(),
                    base64.b64encode(f"\0{user}\0{password}".encode()).decode(),
                    # With the user as the authorization identity too, as
                    # some clients send PLAIN.
                    base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode(),
                ]
    if relay is not None:
        try:
            parts = urllib.parse.urlsplit(relay)
            user, written = parts.username, parts.password
        except ValueError:  # validated when the sink was made; be safe
            user = written = None
        if written:
            found += [written, urllib.parse.unquote(written)]
        elif user:  # the relay's password comes from the environment
            found.append(os.environ.get(RELAY_PASSWORD_VARIABLE, ""))
    found = [secret for secret in found if secret]
    return found + [shown for secret in found for shown in _as_recorded(secret)]


def _as_recorded(secret: str) -> set[str]:
    """How a transcript writes ``secret`` where it differs from it: with its
    control characters escaped (``\\x01``, or ``\\t`` on POP3 and IMAP),
    and, for a client that sends it in Latin-1 or cp1252, not UTF-8, with
    those bytes escaped (``p\\xe4ss``); and as IMAP quotes it, in a quoted
    string and as a folder name, and as an error reply quotes it (a repr).
    Masking the secret alone missed these."""
    if len(secret) < 2:
        # A one-character password, whose escape ("\\xe9") would mask every
        # such escape of a transcript.
        return set()
    # As IMAP quotes it (a quoted string escapes '"' and '\\') and as an
    # error reply quotes an argument (Python's repr: "'Zq\\u200bX9'").
    shown = {
        secret.replace("\\", "\\\\").replace('"', '\\"'),
        repr(secret)[1:-1],
    }
    if secret.isascii() and secret.isprintable():
        shown.discard(secret)
        return shown  # nearly every password: none of the forms below
    # As IMAP writes a folder name (modified UTF-7: "Nb&AOk-t"), where a
    # reply names the folder a client asked for.
    shown.add(encode_folder_name(secret))
    sent = [secret.encode()]
    for encoding in ("latin-1", "cp1252"):
        with contextlib.suppress(UnicodeEncodeError):
            sent.append(secret.encode(encoding))
    for raw in sent:
        # SMTP's transcript (`_smtp._printable`), and POP3's and IMAP's.
        shown.add(raw.decode("utf-8", "backslashreplace").translate(C0_ESCAPES))
        shown.add(printable_sent(raw.decode("utf-8", "surrogateescape")))
    shown.discard(secret)
    return shown


def mask_anywhere(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every one of ``secrets`` written ``****``, wherever it
    is and in any case: for free-form text such as a failure's message.
    A PLAIN response in base64 that ends in one of them is masked whole,
    whatever authorization identity it names (RFC 4616 lets the client
    choose it: ``credential_forms`` lists only the empty one and the
    user's)."""
    if not secrets:
        return text
    text = _without_plain_responses(text, _plain_ends(secrets))
    return _pattern(tuple(sorted(set(secrets))), words=False).sub("****", text)


def _plain_ends(secrets: Sequence[str]) -> tuple[bytes, ...]:
    """How a PLAIN response ends with each of ``secrets`` as its password."""
    return tuple(b"\0" + secret.encode("utf-8", "surrogatepass") for secret in secrets)


def _without_plain_responses(text: str, ends: tuple[bytes, ...]) -> str:
    """``text`` with each base64 word that is a PLAIN response with one of
    ``ends`` (`_plain_ends`) written ``****``, whatever its authorization
    identity."""

    def plain_response(found: re.Match[str]) -> str:
        token = found[0]
        with contextlib.suppress(ValueError):  # binascii.Error: no base64
            decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
            if decoded.endswith(ends):
                return "****"
        return token

    return _BASE64_WORD.sub(plain_response, text)


#: A word that may be base64 (a PLAIN response: at least "\0u\0p").
_BASE64_WORD = re.compile(r"[A-Za-z0-9+/]{8,}={0,2}")


#: The protocol's own word a recorded line starts with: a command verb of
#: SMTP, POP3 or IMAP, a reply code or status. Not masked when a password
#: is that very word ("data", "quit", "250"): the session's facts (its
#: commands, codes and end) are read from it, and where the line is that
#: word the client said that command, not a secret. A password that only
#: begins with it ("ok-go", "data 2") is masked whole.
_PROTOCOL_WORD = re.compile(
    r"[ \t]*(?P<word>\d{3}|[+-]OK|-ERR|[*+]|(?i:"
    # SMTP
    r"HELO|EHLO|MAIL|RCPT|DATA|BDAT|RSET|NOOP|QUIT|VRFY|EXPN|HELP|AUTH|STARTTLS"
    # POP3
    r"|USER|PASS|APOP|STAT|LIST|RETR|DELE|TOP|UIDL|CAPA|STLS|UTF8"
    # IMAP (tags are recorded apart), and its statuses
    r"|CAPABILITY|LOGOUT|LOGIN|AUTHENTICATE|SELECT|EXAMINE|CREATE|DELETE"
    r"|RENAME|SUBSCRIBE|UNSUBSCRIBE|LSUB|STATUS|APPEND|CHECK|CLOSE|EXPUNGE"
    r"|SEARCH|FETCH|STORE|COPY|MOVE|UID|IDLE|DONE|NAMESPACE|ID|ENABLE|UNSELECT"
    r"|OK|NO|BAD|BYE|PREAUTH))(?=[ \t-]|\Z)"
)


def word_masker(auth: object, relay: str | None) -> Masker | None:
    """A function masking the sink's credentials where a line holds one as
    a word (in any case: a server may echo a line upper-cased), past the
    protocol's word the line starts with (see `_PROTOCOL_WORD`), or None
    when the sink knows none: the servers then skip the call."""
    secrets = credential_forms(auth, relay)
    if not secrets:
        return None
    pattern = _pattern(tuple(sorted(set(secrets))), words=True)
    ends = _plain_ends(secrets)

    def mask(text: str) -> str:
        # A PLAIN response naming another authorization identity (RFC 4616
        # lets the client choose it) is in no list of forms: decoded.
        text = _without_plain_responses(text, ends)
        head = _PROTOCOL_WORD.match(text)
        if head is not None:
            secret = pattern.match(text, head.start("word"))
            end = head.end()
            if secret is None or secret.end() <= end:
                return text[:end] + pattern.sub("****", text[end:])
        return pattern.sub("****", text)

    return mask


@functools.lru_cache(maxsize=32)
def _pattern(secrets: tuple[str, ...], words: bool) -> re.Pattern[str]:
    # The longest first, so that a secret holding another is masked whole.
    ordered = sorted(secrets, key=len, reverse=True)
    alternatives = "|".join(re.escape(secret) for secret in ordered)
    if words:
        # A "." or "@" after it joins a word only if a word goes on after
        # it ("pw.example", "ann@example.com"): at a sentence's end ("wrong
        # password pw.") or alone ("pw@") it does not, and the password was
        # shown.
        alternatives = (
            f"(?:(?<![{_IN_WORD}]){_AFTER_ESCAPE})(?:{alternatives})"
            rf"(?![\w\-]|[.@][{_IN_WORD}])"
        )
    return re.compile(alternatives, re.IGNORECASE)


def masked(mask: Masker | None, value: str) -> str:
    """``value`` masked by ``mask`` (None: the sink knows no secret). For
    the values a session's summary shows, such as a failed login's user
    name: a client with its user and password swapped sends the password
    there. A value is no line: no protocol word leads it. (A NUL in front,
    which ends a word and starts no protocol word, keeps that rule out.)"""
    return value if mask is None else mask("\0" + value)[1:]
