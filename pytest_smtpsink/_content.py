"""Message content after ``DATA``, up to the final dot: the rules, once.

Two readers feed a `Content`. aiosmtpd's way reads the connection's
``StreamReader`` a line at a time (``RecordingSMTP._read_content``); a
``DATA`` answered at once hands it each packet as it arrives
(`Content.feed`), with no coroutine and no loop iteration per line. `feed`
cuts packets into lines and pieces by the reader's rules (where the reader
would cut a piece can depend on how packets piled up in its buffer, which
changes nothing in the result), so both give the same content, refusal
and byte count for any packets (``tests/test_properties.py`` sends the
same content both ways).

The rules are aiosmtpd's, with Postfix's ``smtpd_forbid_bare_newline =
normalize`` for a bare LF: a line may end with a bare LF as far as its length
goes (``smtplib`` sends ``msg.as_bytes()`` and curl an LF file that way), but
only ``<CR><LF>.<CR><LF>`` ends the message, so ``<LF>.<LF>`` and friends
stay content (no SMTP smuggling). The bytes are kept as received, bare LFs
included; a leading dot is removed from a line that follows a CRLF (RFC 5321
4.5.2). A line longer than the line limit gets 500, and content over the
size limit (counted without the dot-stuffing, as ``SIZE=`` is) 552, after
the final dot.

aiosmtpd's own loop keeps each line as a bytearray (about 1.9 times the
content in memory) and joins them at the end: a 25 MB attachment peaked at
four times its size. Here lines are joined into 64 KiB chunks as they come,
so the peak is about twice the content.
"""

from __future__ import annotations

# Content is joined into pieces of this size while it is read.
_CHUNK = 65536
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"


def too_much_data(limit: int) -> str:
    """The refusal of content over ``max_size``: it says the limit, which
    aiosmtpd's "Too much mail data" left the client to guess."""
    return f"552 5.3.4 Message exceeds the size limit of {limit} bytes"


class Content:
    """One message's content as it is read; `result` after the final dot.

    ``size_limit`` is the largest content kept (None or 0: no limit),
    ``line_limit`` the longest line, its ending included, and
    ``reader_limit`` the connection's ``StreamReader`` limit: a line whose
    LF is more than that many bytes in comes from the reader in pieces
    (`piece`).
    """

    __slots__ = (
        "_after_crlf",
        "_chunks",
        "_inside_long_line",
        "_kept",
        "_last_byte",
        "_line_limit",
        "_lines",
        "_partial",
        "_pending",
        "_reader_limit",
        "_refusal",
        "_size_limit",
        "data_bytes",
    )

    def __init__(
        self, size_limit: int | None, line_limit: int, reader_limit: int
    ) -> None:
        #: Bytes of content read so far, the final dot's line excluded and
        #: the dot-stuffing included: the transcript's figure.
        self.data_bytes = 0
        self._size_limit = size_limit
        self._line_limit = line_limit
        self._reader_limit = reader_limit
        self._refusal: str | None = None
        self._chunks: list[bytes] = []
        self._lines: list[bytes] = []
        self._pending = 0  # bytes in _lines
        self._kept = 0  # content bytes, without the dot-stuffing
        # Whether the last line ended with CRLF: only then may a dot start
        # the next one (as a stuffed dot or the final dot). DATA's own line
        # counts as one.
        self._after_crlf = True
        self._inside_long_line = False
        self._last_byte = b""  # of an over-long line's pieces so far
        # What `feed` holds of a line whose end has not come yet.
        self._partial = b""

    @property
    def unread(self) -> int:
        """Bytes that `feed` holds of a line whose end has not come."""
        return len(self._partial)

    def piece(self, piece: bytes) -> None:
        """Part of a line longer than the reader's limit; the line's last
        part comes to `line`."""
        self.data_bytes += len(piece)
        self._last_byte = piece[-1:]
        self._inside_long_line = True
        if self._refusal is None:
            self._refusal = LINE_TOO_LONG
        self._drop()

    def line(self, line: bytes) -> bool:
        """A line with its ending, as the reader returns it; True for the
        final dot (which is not content)."""
        if self._inside_long_line:  # the last part of an over-long line
            self._inside_long_line = False
            self.data_bytes += len(line)
            self._after_crlf = line.endswith(b"\r\n") or (
                line == b"\n" and self._last_byte == b"\r"
            )
            return False
        after_crlf = self._after_crlf
        if after_crlf and line == b".\r\n":
            return True
        self.data_bytes += len(line)
        stuffed = after_crlf and line[:1] == b"."
        self._after_crlf = line[-2:-1] == b"\r"
        if self._refusal is not None:
            return False  # read on to the dot, keep nothing
        length = len(line)
        if stuffed:
            line = line[1:]
        self._kept += len(line)
        if self._size_limit and self._kept > self._size_limit:
            self._refusal = too_much_data(self._size_limit)
        elif length > self._line_limit:
            self._refusal = LINE_TOO_LONG
        if self._refusal is not None:
            self._drop()
            return False
        self._lines.append(line)
        self._pending += len(line)
        if self._pending >= _CHUNK:
            self._chunks.append(b"".join(self._lines))
            self._lines.clear()
            self._pending = 0
        return False

    def feed(self, data: bytes) -> int:
        """Take ``data`` as it arrived: how many of its bytes were content
        up to and including the final dot, or -1 if all of them were and the
        final dot is still to come.

        Cut as the connection's ``StreamReader`` would: a line whose end is
        more than ``reader_limit`` bytes on comes as a `piece` (up to the
        LF, which follows as a line of its own), and so does whatever is
        held of an unfinished line once it is longer than that.
        """
        held = len(self._partial)
        if held:
            data = self._partial + data
            self._partial = b""
        elif (whole := self._whole(data)) >= 0:
            return whole
        limit = self._reader_limit
        start = 0
        find = data.find
        while True:
            end = find(b"\n", start)
            if end < 0:
                rest = data[start:]
                if len(rest) > limit:
                    self.piece(rest)
                elif rest:
                    self._partial = rest
                return -1
            if end - start > limit:
                self.piece(data[start:end])
                start = end
            if self.line(data[start : end + 1]):
                return end + 1 - held
            start = end + 1

    def _whole(self, data: bytes) -> int:
        """A whole small message in one packet, as most are: taken in one
        step when the line-by-line rules could change nothing, with what
        `feed` returns; else -1 (and nothing taken).

        Nothing to change means: no line starts with a dot but the final
        dot's (so nothing is dot-stuffed, and no ``<LF>.<LF>`` can be taken
        for the end), no line is too long for the line or the reader limit,
        and it fits the size limit. Only at the start of a message: a content
        that came in pieces goes line by line.
        """
        end = data.find(b"\n.")
        if (
            end < 1
            or data[end - 1 : end + 4] != b"\r\n.\r\n"
            or data[:1] == b"."
            or self._lines
            or self._chunks
            or not self._after_crlf
            or self._refusal is not None
            or self._inside_long_line
            or (self._size_limit and end + 1 > self._size_limit)
        ):
            return -1
        if end >= self._line_limit or end > self._reader_limit:
            # Too long for one line: look at each (as `line` and `feed`
            # would, without their per-line work).
            line_limit, reader_limit = self._line_limit, self._reader_limit
            find = data.find
            start = 0
            while start <= end:
                newline = find(b"\n", start, end + 1)
                if newline - start >= line_limit or newline - start > reader_limit:
                    return -1
                start = newline + 1
        content = data[: end + 1]
        self.data_bytes += end + 1
        self._kept += end + 1
        self._lines.append(content)
        return end + 4

    def result(self) -> tuple[bytes, str | None]:
        """``(content, None)``, or ``(b"", reply)`` when it is refused."""
        if self._refusal is not None:
            return b"", self._refusal
        self._chunks.append(b"".join(self._lines))
        self._lines.clear()
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks), None

    def _drop(self) -> None:
        self._chunks.clear()
        self._lines.clear()
        self._pending = 0


def dot_stuffed(wire: bytes) -> bytes:
    """``wire`` as a multi-line body goes on the wire, after SMTP's DATA or
    in POP3's RETR and TOP: a dot that starts it or follows a CRLF doubled,
    a CRLF added if it lacks one, then the final dot line.

    Only after CRLF, not smtplib's ``data()``'s bare LF too: the receiver
    (lines end with CRLF only, RFC 5321 2.3.8) would keep the two dots, and
    the captured bytes would not come through as they are. Not a regular
    expression: its look-behind at every byte was the relay thread's
    largest single cost after the interpreter itself.
    """
    stuffed, end = dot_stuffed_parts(wire)
    return stuffed + end


def dot_stuffed_parts(wire: bytes) -> tuple[bytes, bytes]:
    """`dot_stuffed` as its two parts, ``(body, end)``, for a large message:
    the body is ``wire`` itself (not a copy) when no line of it starts with
    a dot, and the end is the final dot line (after a CRLF if it lacks one)."""
    stuffed = (b"." + wire if wire.startswith(b".") else wire).replace(
        b"\r\n.", b"\r\n.."
    )
    if stuffed and not stuffed.endswith(b"\r\n"):
        return stuffed, b"\r\n.\r\n"
    return stuffed, b".\r\n"
