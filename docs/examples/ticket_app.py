"""A small application that reads mail, for the "Testing applications that
read mail" page.

It stands in for a helpdesk, a bounce processor or a mail-to-ticket bridge:
it logs in to a mailbox over POP3, turns each message into a ticket, and
deletes what it has handled, as getmail and django-mailbox do. Its server is
configurable, as it must be for tests.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import poplib
import ssl


@dataclasses.dataclass
class Ticket:
    sender: str
    subject: str


def fetch_tickets(
    host: str,
    port: int,
    user: str,
    password: str,
    context: ssl.SSLContext | None = None,
) -> list[Ticket]:
    """Turn every waiting message into a ticket; delete those it turned."""
    client = poplib.POP3(host, port, timeout=10)
    try:
        if context is not None:
            client.stls(context=context)
        client.user(user)
        client.pass_(password)
        tickets = []
        for line in client.uidl()[1]:
            number = line.split()[0].decode()
            lines = client.retr(int(number))[1]
            message = email.message_from_bytes(
                b"\r\n".join(lines), policy=email.policy.default
            )
            if message["Subject"] is None:
                continue  # not a ticket: leave it for a person
            tickets.append(Ticket(str(message["From"]), str(message["Subject"])))
            client.dele(int(number))
        client.quit()  # deletions happen only now
        return tickets
    finally:
        client.close()
