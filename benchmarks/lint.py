"""Lint cost: `Message.lint` over 1,000 typical messages against parsing them.

Usage::

    python benchmarks/lint.py [--messages 1000] [--repeat 5]

Run it with the project's venv (it imports the working tree). The messages
are what applications send: multipart/mixed with a text/plain and text/html
alternative and a small PDF attachment, about 10 KB each, all different.
Three timings, each the median of ``--repeat`` runs over all messages:

- mail-parser: ``mailparser.parse_from_bytes``, the parse behind
  `Message.text`, `html`, `attachments` and `defects`;
- compat32: ``email.message_from_bytes``, the stdlib parse the sink uses for
  headers and the fallbacks;
- lint: `pytest_smtpsink._lint.lint` on the raw bytes, its own parse
  included (as `Message.lint` on a message nothing else has parsed).

Prints the times and the ratios lint / parse; the goal is lint <= 2x the
sink's parse. Not part of the test suite: nothing asserts on timings.
"""

from __future__ import annotations

import argparse
import email.utils
import random
import statistics
import time
from collections.abc import Callable
from email.message import EmailMessage

import mailparser

from pytest_smtpsink._lint import lint

WORDS = [
    "order",
    "invoice",
    "shipping",
    "account",
    "password",
    "reset",
    "welcome",
    "team",
    "update",
    "delivery",
    "receipt",
    "customer",
    "support",
    "payment",
    "confirm",
    "address",
    "schedule",
]


def typical_message(number: int, rng: random.Random) -> bytes:
    def prose(words: int) -> str:
        lines = []
        for _ in range(words // 12):
            lines.append(
                " ".join(rng.choice(WORDS) for _ in range(12)).capitalize() + "."
            )
        return "\n".join(lines)

    text = prose(400)
    message = EmailMessage()
    message["From"] = "Shop <noreply@shop.example>"
    message["To"] = f"Customer {number} <c{number}@example.com>"
    message["Subject"] = f"Your order #{number}"
    message["Date"] = email.utils.formatdate()
    message["Message-ID"] = email.utils.make_msgid(domain="shop.example")
    message.set_content(text)
    paragraphs = "".join(f"<p>{line}</p>\n" for line in text.splitlines())
    message.add_alternative(f"<html><body>{paragraphs}</body></html>", subtype="html")
    message.add_attachment(
        rng.randbytes(1500),
        maintype="application",
        subtype="pdf",
        filename=f"{number}.pdf",
    )
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


def timed(work: Callable[[bytes], object], messages: list[bytes], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for raw in messages:
            work(raw)
        runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(17)
    messages = [typical_message(n, rng) for n in range(args.messages)]
    sizes = [len(m) for m in messages]
    problems = {p.code for raw in messages[:20] for p in lint(raw)}
    print(
        f"{len(messages)} messages, {statistics.mean(sizes) / 1000:.1f} KB on "
        f"average; lint finds: {sorted(problems) or 'nothing'}"
    )
    mail_parser = timed(mailparser.parse_from_bytes, messages, args.repeat)
    compat32 = timed(email.message_from_bytes, messages, args.repeat)
    linted = timed(lint, messages, args.repeat)
    print(f"mail-parser parse: {mail_parser:.3f} s")
    print(f"compat32 parse:    {compat32:.3f} s")
    print(f"lint:              {linted:.3f} s")
    print(f"lint / mail-parser parse: {linted / mail_parser:.2f}x")
    print(f"lint / compat32 parse:    {linted / compat32:.2f}x")


if __name__ == "__main__":
    main()
