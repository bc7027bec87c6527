"""A small mailer for the "Checking how mail is built" examples.

It stands in for your code: it builds mail with the stdlib, signs it with
dkimpy when it has a key (as many applications do), and sends it with
smtplib, over STARTTLS when told to.
"""

from __future__ import annotations

import email.utils
import smtplib
import ssl
from email.message import EmailMessage

import dkim


class Mailer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        dkim_key: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.dkim_key = dkim_key
        self.tls = tls

    def password_reset(self, address: str) -> None:
        message = self._base("Reset your password", address)
        link = "https://shop.example/reset/3f9a"
        message.set_content(f"Reset your password: {link}\n")
        message.add_alternative(
            f'<p><a href="{link}">Reset your password</a></p>', subtype="html"
        )
        self._send(message)

    def newsletter(self, address: str) -> None:
        message = self._base("Our November news", address, sender="news@shop.example")
        message["List-Unsubscribe"] = "<https://shop.example/unsubscribe/3f9a>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content("New in the shop this month: winter boots.\n")
        message.add_alternative(
            "<p>New in the shop this month: winter boots.</p>", subtype="html"
        )
        self._send(
            message,
            sign=[
                "from",
                "to",
                "subject",
                "date",
                "message-id",
                "list-unsubscribe",
                "list-unsubscribe-post",
            ],
        )

    def _base(
        self, subject: str, to: str, sender: str = "noreply@shop.example"
    ) -> EmailMessage:
        message = EmailMessage()
        message["From"] = f"Shop <{sender}>"
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = email.utils.formatdate()
        message["Message-ID"] = email.utils.make_msgid(domain="shop.example")
        return message

    def _send(self, message: EmailMessage, sign: list[str] | None = None) -> None:
        raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        if self.dkim_key is not None:
            headers = [h.encode() for h in sign or ["from", "to", "subject", "date"]]
            raw = (
                dkim.sign(
                    raw,
                    b"mail",
                    b"shop.example",
                    self.dkim_key.encode(),
                    include_headers=headers,
                )
                + raw
            )
        with smtplib.SMTP(self.host, self.port) as client:
            if self.tls is not None:
                client.starttls(context=self.tls)
            client.sendmail("bounces@shop.example", [message["To"]], raw)
