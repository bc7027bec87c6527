"""AUTH credentials in every hostile form a client can put on the wire, and
a search for any trace of them in text.

Used by ``test_auth_secrets.py`` both in-process and inside a `pytester` run
(which imports this module), so it depends on nothing but the stdlib.
"""

from __future__ import annotations

import base64
import socket

USER = "ann"
PASSWORD = "Kx7-Qv2mZ9tLw-pw"
#: A PLAIN authorization identity long enough to make the response line
#: longer than the stream reader's 1,001-byte limit.
LONG_AUTHZ = "z" * 1100

CRLF = b"\r\n"
WAIT = object()
"""A step: wait for the server's ``334`` challenge."""


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def plain(authz: str = "") -> bytes:
    """The PLAIN response (RFC 4616) for `USER` and `PASSWORD`."""
    return b64(f"{authz}\0{USER}\0{PASSWORD}")


def forms() -> list[list[bytes | object]]:
    """One list of steps per connection: bytes are sent as they are (with
    ``sendall``: two byte steps in a row arrive in two reads, mostly),
    `WAIT` waits for a 334."""
    p = plain()
    long_plain = plain(LONG_AUTHZ)
    return [
        [b"AUTH PLAIN " + p + CRLF],
        [b"auth plain " + p + CRLF],
        [b"AUTH\tPLAIN\t" + p + CRLF],
        [b"AUTH\x0bPLAIN\x0c" + p + CRLF],
        [b"AUTH\x1fPLAIN\x1f" + p + CRLF],
        [b"  AUTH PLAIN " + p + CRLF],
        [b"\tauth\tplain\t" + p + CRLF],
        [b"AUTH " + p + CRLF],  # the secret where the mechanism goes
        [b"AUTH\x00PLAIN\x00" + p + CRLF],
        [b"AUTHPLAIN " + p + CRLF],
        ["AUTH\u00a0PLAIN\u00a0".encode() + p + CRLF],
        [b"AUTH PLAIN " + p + b" extra" + CRLF],
        [b"AUTH PLAIN" + CRLF, WAIT, p + CRLF],
        [b"AUTH LOGIN" + CRLF, WAIT, b64(USER) + CRLF, WAIT, b64(PASSWORD) + CRLF],
        [b"AUTH LOGIN " + b64(USER) + CRLF, WAIT, b64(PASSWORD) + CRLF],
        # The password in clear where base64 belongs.
        [b"AUTH LOGIN " + b64(USER) + CRLF, WAIT, PASSWORD.encode() + CRLF],
        # A response longer than the reader's limit, arriving in two reads.
        [b"AUTH PLAIN" + CRLF, WAIT, long_plain[:1200], long_plain[1200:] + CRLF],
        # The same as an initial response: a command line too long.
        [b"AUTH PLAIN " + long_plain + CRLF],
        # A response too long to take at all, the secret at its end.
        [b"AUTH PLAIN" + CRLF, WAIT, b"A" * 30000 + p + CRLF],
        # Responses sent without waiting for a 334, to an AUTH that is
        # refused (an unknown mechanism; a second AUTH): read as commands.
        [b"AUTH CRAM-SHA1" + CRLF + p + CRLF + PASSWORD.encode() + CRLF],
        [
            b"AUTH PLAIN " + p + CRLF,
            b"AUTH LOGIN" + CRLF + b64(USER) + CRLF + b64(PASSWORD) + CRLF,
        ],
        # The password where no AUTH expects it: an unknown command's
        # argument, and a line of its own (which aiosmtpd echoes and logs).
        [b"XLOGIN " + USER.encode() + b" " + PASSWORD.encode() + CRLF],
        [PASSWORD.encode() + CRLF],
        # An invisible character before AUTH (a byte order mark, a zero-width
        # space): the line was not taken for AUTH, and recorded whole.
        ["\ufeffAUTH PLAIN ".encode() + p + CRLF],
        [" \u200bAUTH PLAIN ".encode() + p + CRLF],
        ["\u00adAUTH PLAIN ".encode() + p + CRLF],  # a soft hyphen
        # The user as the authorization identity too, as some clients send.
        [b"AUTH PLAIN " + plain(USER) + CRLF],
        ["\ufeffAUTH PLAIN ".encode() + plain(USER) + CRLF],
    ]


def secrets() -> list[str]:
    """What must never show, in any case: the password, its base64, and
    the PLAIN responses (any 12 characters of them, so a tail shows too)."""
    found = [PASSWORD, b64(PASSWORD).decode()]
    for response in (plain(), plain(LONG_AUTHZ), plain(USER)):
        text = response.decode()
        found.extend(text[i : i + 12] for i in range(len(text) - 11))
    # The long response's "zzz..." part repeats: one copy of each is enough.
    return list(dict.fromkeys(found))


def leaks(text: str) -> list[str]:
    """Every secret (see `secrets`) found in ``text``, ignoring case."""
    folded = text.lower()
    return [secret for secret in secrets() if secret.lower() in folded]


class _Client:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def reply(self) -> bytes:
        """The last line of the next reply."""
        while True:
            line = self.file.readline()
            if len(line) < 4 or line[3:4] != b"-":
                return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def send_all(host: str, port: int) -> list[bytes]:
    """Send every form, each on its own connection, and end each with QUIT
    once it is handled. Returns the last reply of each form."""
    finals: list[bytes] = []
    for steps in forms():
        client = _Client(host, port)
        try:
            assert client.reply().startswith(b"220")
            client.sock.sendall(b"EHLO hostile.example" + CRLF)
            assert client.reply().startswith(b"250")
            for step in steps:
                if step is WAIT:
                    reply = client.reply()
                    assert reply.startswith(b"334"), reply
                else:
                    assert isinstance(step, bytes)
                    client.sock.sendall(step)
            client.sock.sendall(b"QUIT" + CRLF)
            replies = []
            while not (reply := client.reply()).startswith(b"221"):
                assert reply, "the server closed the connection before QUIT"
                replies.append(reply)
            finals.append(replies[-1] if replies else b"")
        finally:
            client.close()
    return finals
