"""Write the corpus of malformed and unusual messages (``python make_corpus.py``).

The .eml files are checked in; this script documents how each was made and
regenerates them byte for byte (random content comes from fixed seeds).
Every file uses CRLF line endings, ends with CRLF and keeps every line at
most 998 bytes, so that it crosses SMTP unchanged.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path

HERE = Path(__file__).parent
CRLF = b"\r\n"


def lines(*items: bytes | str) -> bytes:
    out = [i.encode("utf-8") if isinstance(i, str) else i for i in items]
    return CRLF.join(out) + CRLF


HEAD = lines(
    "From: Ann <ann@example.com>",
    "To: bob@example.com",
    "Date: Mon, 1 Jan 2024 10:00:00 +0000",
)[:-2]


def wrap(data: bytes, width: int = 76) -> list[bytes]:
    return [data[i : i + width] for i in range(0, len(data), width)] or [b""]


def corpus() -> dict[str, bytes]:
    rng = random.Random(20240101)
    files: dict[str, bytes] = {}

    files["empty_headers_and_body"] = CRLF
    files["headers_only"] = lines(HEAD, "Subject: headers only, no blank line, no body")
    files["headers_only_blank_line"] = lines(
        HEAD, "Subject: headers and a blank line", ""
    )
    files["no_headers_body_only"] = lines("", "A body with no header at all.")
    files["missing_boundary"] = lines(
        HEAD,
        "Subject: multipart without boundary",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed",
        "",
        "--x",
        "Content-Type: text/plain",
        "",
        "lost",
        "--x--",
    )
    files["broken_boundary"] = lines(
        HEAD,
        "Subject: boundary never used",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="declared"',
        "",
        "--other",
        "Content-Type: text/plain",
        "",
        "text part",
        "--other--",
    )
    files["unterminated_multipart"] = lines(
        HEAD,
        "Subject: no closing boundary",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b1"',
        "",
        "--b1",
        "Content-Type: text/plain",
        "",
        "first part",
        "--b1",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="cut.bin"',
        "",
        "AAEC",
    )
    files["truncated_part_headers"] = lines(
        HEAD,
        "Subject: truncated inside part headers",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="t"',
        "",
        "--t",
        "Content-Type: text/pl",
    )

    # 50 levels of multipart/mixed, a text part at the bottom.
    depth = 50
    nested = [HEAD.decode(), "Subject: 50 levels deep", "MIME-Version: 1.0"]
    for level in range(depth):
        nested += [
            f'Content-Type: multipart/mixed; boundary="level{level}"',
            "",
            f"--level{level}",
        ]
    nested += ["Content-Type: text/plain", "", "the bottom"]
    nested += [f"--level{level}--" for level in reversed(range(depth))]
    files["deep_nesting_50"] = lines(*nested)

    files["invalid_base64"] = lines(
        HEAD,
        "Subject: invalid base64",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "",
        "SGVsbG8gd29ybGQ!!!*** not base64 at all ===",
        "--b",
        "Content-Type: application/pdf",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="bad.pdf"',
        "",
        "JVBERi0xLjQK=",
        "AB",
        "--b--",
    )
    files["invalid_quoted_printable"] = lines(
        HEAD,
        "Subject: invalid quoted-printable",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "bad escapes =ZZ =4 =\t trailing =",
        "=C3=A9 valid, then =E2=82 truncated",
        "=",
    )
    files["unknown_charset"] = lines(
        HEAD,
        "Subject: =?x-unknown-42?Q?caf=E9?= and =?utf-8?B?!!bad?=",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=x-unknown-42",
        "Content-Transfer-Encoding: 8bit",
        "",
        b"caf\xe9 in an unknown charset",
    )
    files["wrong_charset_declared"] = lines(
        HEAD,
        "Subject: latin-1 body declared utf-8",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        b"na\xefve caf\xe9 \xff\xfe",
    )
    files["latin1_headers"] = lines(
        b"From: Ren\xe9 Dupr\xe9 <rene@example.com>",
        b"To: Zo\xeb <zoe@example.com>",
        b"Subject: r\xe9sum\xe9 \xe0 jour",
        "",
        "body",
    )
    files["utf8_headers"] = lines(
        "From: Zoë Ünal <zoe@example.com>",
        "To: 山田 <yamada@example.jp>",
        "Cc: José <jose@example.es>",
        "Subject: 日本語の件名 ✓ — ünïcödé",
        "Message-ID: <ïd@example.com>",
        "",
        "body ✓",
    )
    files["nul_and_control_bytes"] = lines(
        HEAD,
        b"Subject: nul \x00 and bell \x07 in a header",
        "",
        b"body \x00 with \x01\x02 control \x7f bytes",
    )
    files["garbage_headers"] = lines(
        "  folded first line with no header",
        "From: <<<not an address",
        "To: ,,, ; @@@",
        'Cc: "unterminated <x@example.com>',
        "Reply-To: <a@b@c>",
        "Date: not a date at all",
        "Date: Mon, 32 Foo 2024 99:99:99 +9999",
        "Message-ID: no brackets",
        "a line without a colon",
        "Subject: garbage",
        ":empty name",
        "",
        "body",
    )
    files["duplicate_headers"] = lines(
        "From: a@example.com",
        "From: b@example.com",
        "Subject: one",
        "Subject: two",
        "To: c@example.com",
        "To: d@example.com",
        "",
        "body",
    )

    # A 100 KB Subject, folded into 76-byte continuation lines.
    words = " ".join(f"word{i}" for i in range(15000)).encode()[: 100 * 1024]
    files["huge_header_100k"] = lines(
        HEAD, b"Subject: " + b"\r\n ".join(wrap(words)), "X-Many: 1", "", "body"
    )
    files["many_headers"] = lines(
        HEAD, *[f"X-Header-{i}: value {i}" for i in range(5000)], "", "body"
    )
    files["longest_legal_line"] = lines(
        HEAD, "Subject: a 998-byte line", "", b"x" * 998
    )

    blob = bytes(rng.randrange(256) for _ in range(64 * 1024))
    files["binary_attachment"] = lines(
        HEAD,
        "Subject: binary attachment",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="bin"',
        "",
        "--bin",
        "Content-Type: text/plain",
        "",
        "see attached",
        "--bin",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="blob.bin"',
        "",
        *wrap(base64.b64encode(blob)),
        "--bin",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: binary",
        'Content-Disposition: attachment; filename="raw.bin"',
        "",
        # Raw 8-bit content without CR or LF (so that SMTP line structure holds).
        *wrap(bytes(b for b in blob[:8000] if b not in b"\r\n"), 500),
        "--bin--",
    )
    files["non_ascii_filenames"] = lines(
        HEAD,
        "Subject: non-ASCII file names",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="fn"',
        "",
        "--fn",
        "Content-Type: text/plain",
        "",
        "three attachments",
        "--fn",
        "Content-Type: application/pdf",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates%20r%C3%A9sum%C3%A9.pdf",
        "",
        "JVBERi0xLjQK",
        "--fn",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment;",
        " filename*0*=utf-8''%E6%97%A5%E6%9C%AC;",
        " filename*1*=%E8%AA%9E.txt",
        "",
        "5pel5pys6Kqe",
        "--fn",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="=?utf-8?q?na=C3=AFve=2Ebin?="',
        "",
        "AAEC",
        "--fn",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename*=x-bogus''%FF%FE.bin",
        "",
        "AAEC",
        "--fn--",
    )
    files["html_only_broken_markup"] = lines(
        HEAD,
        "Subject: broken html",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<html><body><a href="https://example.com/confirm/1">confirm<a href="http://x',
        "<p><b>unclosed <table><tr><td>",
        '<a href="https://example.com/ok">ok</a> <script>document.write("<a href=\'x\'>")</script>',
    )
    files["message_rfc822_truncated"] = lines(
        HEAD,
        "Subject: forwarded, truncated",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="fw"',
        "",
        "--fw",
        "Content-Type: message/rfc822",
        "",
        "From: inner@example.com",
        "Subject: inner",
        'Content-Type: multipart/mixed; boundary="inner"',
        "",
        "--inner",
        "Content-Type: text/plain",
        "--fw--",
    )
    # A quote never closed, the header folded after it: Dovecot drops the
    # parameter (the sink once gave "unterminated\tfolded: yes").
    files["unterminated_quoted_parameter"] = lines(
        HEAD,
        "Subject: unterminated quoted parameter",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; format=flowed; charset="unterminated',
        "\tfolded: yes",
        'Content-Disposition: attachment; size=4; filename="report.txt',
        "",
        "body",
    )
    files["content_type_garbage"] = lines(
        HEAD,
        "Subject: garbage content type",
        "MIME-Version: 1.0",
        "Content-Type: ;;;/// charset=",
        "Content-Transfer-Encoding: x-unknown-cte",
        "",
        "body",
    )

    # Shapes that once made reading a field raise (issue 13, item 1).
    files["smtputf8_display_name"] = lines(
        "From: Ann <ann@example.com>",
        "To: Zoë <zoë@exämple.com>",
        "Subject: SMTPUTF8 with a display name",
        "",
        "body",
    )
    files["non_ascii_charset_name"] = lines(
        b"Subject: =?\xe9?q?x?=",
        "From: Ann <ann@example.com>",
        "Message-ID: <charset-name@example.com>",
        "",
        "body",
    )
    # 600 nested comments, folded to keep lines short: the stdlib's address
    # parser recurses once per level.
    files["nested_comments_600"] = lines(
        HEAD.replace(b"To: bob@example.com", b"To: " + b"(" * 600),
        b" " + b")" * 600 + b" bob@example.com",
        "Subject: 600 nested comments",
        "",
        "body",
    )
    # The same, never closed (newer stdlib releases check the parentheses
    # before parsing and give up early).
    files["open_parentheses_600"] = lines(
        HEAD.replace(b"To: bob@example.com", b"To: " + b"(" * 600),
        "Subject: 600 open parentheses",
        "",
        "body",
    )
    # The same in the Content-Type: the stdlib's parser reads it even for a
    # header block alone, so `email` fell back to nothing it could build.
    files["nested_comments_content_type_600"] = lines(
        HEAD,
        "Subject: 600 nested comments in the Content-Type",
        "MIME-Version: 1.0",
        b"Content-Type: " + b"(" * 600,
        b" " + b")" * 600 + b" text/plain; charset=utf-8",
        "",
        "body",
    )
    # 1,000 message/rfc822 parts, each the whole body of the one above.
    nested_rfc822 = [HEAD.decode(), "Subject: 1000 levels of message/rfc822"]
    nested_rfc822 += ["MIME-Version: 1.0", "Content-Type: message/rfc822", ""] * 1000
    nested_rfc822 += ["Subject: the bottom", "", "the bottom"]
    files["nested_rfc822_1000"] = lines(*nested_rfc822)
    files["absurd_date"] = lines(
        "From: Ann <ann@example.com>",
        "Date: Mon, 99999999999 Jan 2020 00:00:00 +0000",
        "Subject: a date beyond any calendar",
        "",
        "body",
    )
    files["nul_in_charset_name"] = lines(
        HEAD,
        "Subject: NUL in the charset name",
        "MIME-Version: 1.0",
        b'Content-Type: text/plain; charset="utf-8\x00x"',
        "Content-Transfer-Encoding: 8bit",
        "",
        "café in UTF-8",
    )
    # RFC 2231 parameter sections out of order, missing, twice, and a
    # parameter both whole and in sections (found by fuzzing: the sink's
    # BODYSTRUCTURE differed from Dovecot's).
    sections = [
        "format=flowed",
        "name*1=b; name*0=a",
        "zz*0=a; mm=x; aa*0=b",
        "name*0=a; name*2=c",
        "name*0=a; name*=b",
        "name*0=a%; name*1*=%41",
    ]
    rfc2231 = [HEAD.decode(), "Subject: RFC 2231 sections", "MIME-Version: 1.0"]
    rfc2231 += ["Content-Type: multipart/mixed; boundary=b", ""]
    for params in sections:
        rfc2231 += ["--b", f"Content-Type: text/plain; {params}", "", "body"]
    rfc2231 += ["--b--"]
    files["rfc2231_sections"] = lines(*rfc2231)
    files["html_unknown_marked_section"] = lines(
        HEAD,
        "Subject: unknown marked section",
        "MIME-Version: 1.0",
        "Content-Type: text/html; charset=utf-8",
        "",
        '<p><![foo[ x ]]> <a href="https://example.com/after">after</a></p>',
    )
    # A multipart inside one with the same boundary, as Outlook Express for
    # Mac and some malware write it: a delimiter line belongs to the
    # innermost multipart still open (Dovecot), so the inner one closes
    # first and the attachment after it is the outer one's second part.
    gif = base64.b64encode(bytes(range(48)))
    files["same_boundary_nested"] = lines(
        HEAD,
        "Subject: a multipart inside one with the same boundary",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="X"',
        "",
        "--X",
        'Content-Type: multipart/alternative; boundary="X"',
        "",
        "--X",
        "Content-Type: text/plain",
        "",
        "plain",
        "--X",
        "Content-Type: text/html",
        "",
        "<p>html</p>",
        "--X--",
        "",
        "--X",
        'Content-Type: image/gif; name="xx.gif"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="xx.gif"',
        "",
        gif,
        "--X--",
    )
    # The same, but the inner multipart's header has no blank line (it has
    # no body, so no parts: the lines after it are the outer one's), and
    # with an empty part before it (its delimiter line is no header).
    outer = files["same_boundary_nested"].split(CRLF)
    inner = outer.index(b'Content-Type: multipart/alternative; boundary="X"')
    files["same_boundary_no_blank_line"] = CRLF.join(
        outer[: inner + 1] + outer[inner + 2 :]
    )
    files["same_boundary_after_an_empty_part"] = CRLF.join(
        [*outer[:inner], b"--X", *outer[inner:]]
    )
    three = [HEAD.decode(), "Subject: three levels, one boundary", "MIME-Version: 1.0"]
    three += ["Content-Type: multipart/mixed; boundary=Y", "", "preamble"]
    three += ["--Y", "Content-Type: multipart/mixed; boundary=Y", ""]
    three += ["--Y", "Content-Type: multipart/alternative; boundary=Y", ""]
    for number in (1, 2):
        three += ["--Y", f"Content-Type: text/x-patch{number}", "", f"patch {number}"]
    three += ["--Y--", "--Y", "Content-Type: text/x-patch3", "", "patch 3", "--Y--"]
    three += ["inner epilogue", "--Y", "Content-Type: text/x-patch4", "", "patch 4"]
    three += ["--Y--", "epilogue"]
    files["same_boundary_three_levels"] = lines(*three)
    # A media type without its subtype: unreadable, no text part.
    files["content_type_without_subtype"] = lines(
        HEAD,
        "Subject: a type without its subtype",
        "MIME-Version: 1.0",
        "Content-Type: text; charset=us-ascii",
        "",
        "findable only as a header-less part would be",
    )
    # A type alone, no subtype and nothing after it: Dovecot keeps the type.
    files["content_type_alone"] = lines(
        HEAD,
        "Subject: a type alone",
        "MIME-Version: 1.0",
        "Content-Type: text",
        "",
        "a type with nothing after it",
    )
    # A multipart with no part: its close line alone (and, after it, the
    # outer one's next delimiter, whose CRLF the close line's part holds).
    files["multipart_with_no_part"] = lines(
        HEAD,
        "Subject: a multipart with no part",
        "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=Y",
        "",
        "--Y",
        "Content-Type: multipart/mixed; boundary=Z",
        "",
        "--Z--",
        "--Y",
        "Content-Type: text/plain",
        "",
        "after it",
        "--Y--",
    )
    # An address where the display name goes (a phishing shape; also an
    # application that forgot to quote it): no phrase holds an "@".
    files["address_as_display_name"] = lines(
        "From: alice@example.com <bob@example.com>",
        "To: carol@example.com",
        "Cc: eve@example.com <frank@example.com>, Sales @ Example <s@example.com>",
        'Reply-To: "henry@example.com" <ivan@example.com>',
        "Date: Mon, 1 Jan 2024 10:00:00 +0000",
        "Subject: an address as the display name",
        "",
        "hi",
    )
    return files


def main() -> None:
    for name, data in corpus().items():
        assert data.endswith(CRLF), name
        assert all(len(line) <= 998 for line in data.split(CRLF)), name
        (HERE / f"{name}.eml").write_bytes(data)


if __name__ == "__main__":
    main()
