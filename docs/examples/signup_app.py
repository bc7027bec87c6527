"""A tiny application for the documentation's examples.

It stands in for your code: something that sends mail with `smtplib`, told
where the SMTP server is by its configuration.
"""

from __future__ import annotations

import smtplib
import threading
from email.message import EmailMessage


class SignupApp:
    """Sends a welcome email with a confirmation link and a one-time code."""

    def __init__(self, smtp_host: str, smtp_port: int) -> None:
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.sender = "Example App <noreply@app.example.com>"

    def welcome_email(self, address: str, code: str = "482913") -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = address
        message["Subject"] = "Welcome to Example App"
        confirm = f"https://app.example.com/confirm/{code}"
        message.set_content(
            f"Hello!\n\nConfirm your address: {confirm}\n"
            f"or type the code {code} in the app.\n"
        )
        message.add_alternative(
            f'<p>Hello!</p><p><a href="{confirm}">Confirm your address</a> '
            f"or type the code <b>{code}</b>.</p>"
            '<p><a href="https://app.example.com/help">Help</a></p>',
            subtype="html",
        )
        return message

    def signup(self, address: str, *, bcc: str | None = None) -> None:
        message = self.welcome_email(address)
        recipients = [address] + ([bcc] if bcc else [])
        with smtplib.SMTP(
            self.smtp_host, self.smtp_port, local_hostname="app.example.com"
        ) as smtp:
            smtp.send_message(message, to_addrs=recipients)

    def send_invoice(self, address: str, pdf: bytes) -> None:
        message = EmailMessage()
        message["From"] = "Billing <billing@app.example.com>"
        message["To"] = address
        message["Subject"] = "Your invoice"
        message.set_content("Your invoice is attached.\n")
        message.add_attachment(
            pdf, maintype="application", subtype="pdf", filename="invoice.pdf"
        )
        with smtplib.SMTP(self.smtp_host, self.smtp_port) as smtp:
            smtp.send_message(message)

    def signup_in_background(
        self, address: str, delay: float = 0.2
    ) -> threading.Thread:
        """Like a task queue: the email leaves a little after the call returns."""

        def work() -> None:
            threading.Event().wait(delay)
            self.signup(address)

        thread = threading.Thread(target=work)
        thread.start()
        return thread
