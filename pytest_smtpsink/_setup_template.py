"""A connection's aiosmtpd set-up, copied from the first connection's.

Loop side: used by `RecordingSMTP.__init__` on the sink's server thread.

aiosmtpd's ``SMTP.__init__`` runs for every connection and works out the
same things each time from the same settings: it lists the protocol's and
the handler's methods (``dir``, ``inspect.getmembers``) to find the
``smtp_*`` commands, the ``auth_*`` mechanisms and the ``handle_*`` hooks.
That was about 250,000 instructions per connection, most of a test's server
cost after the SMTP round trips themselves.

So the first connection of a sink runs it in full, and `take` keeps what it
set; later connections get the same attributes by `apply`: values are
shared, and what belongs to one connection is made again for the new one
(bound methods bound to it, dicts and tuples holding them). asyncio's own
part of the protocol (``StreamReaderProtocol.__init__``, a new reader) still
runs for every connection. Only values known to be safe to share are
accepted: anything else (a new aiosmtpd that keeps, say, a list per
connection) refuses the template, and every connection runs aiosmtpd's own
set-up, slower but right. ``tests/test_aiosmtpd_contract.py`` compares the
two set-ups attribute by attribute.

One difference remains, by design: the commands, mechanisms and hooks are
the functions found at a sink's first connection. Patching
``RecordingSMTP.smtp_X`` or a handler hook on the class while a sink runs
is not seen by that sink's later connections, as it was when aiosmtpd
looked them up for every connection.
"""

from __future__ import annotations

import asyncio
import ssl
import types
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

#: Types whose values are shared as they are between connections (`take`
#: also shares the objects it is given as ``shared``).
_IMMUTABLE = (str, bytes, int, float, bool, type(None), frozenset)


class Refused(Exception):
    """A value `take` does not know how to copy safely."""


def _stream_protocol_names(loop: asyncio.AbstractEventLoop) -> frozenset[str]:
    """The attributes asyncio's ``StreamReaderProtocol.__init__`` sets (they
    vary between Python versions): those are never copied."""
    # With a callback, as aiosmtpd gives one: some attributes exist only then.
    probe = asyncio.StreamReaderProtocol(
        asyncio.StreamReader(loop=loop),
        client_connected_cb=lambda reader, writer: None,
        loop=loop,
    )
    closed = getattr(probe, "_closed", None)
    if isinstance(closed, asyncio.Future):
        closed.cancel()  # the one thing the probe made on the loop
    return frozenset(vars(probe))


Maker = Callable[[object], Any]


class Template(NamedTuple):
    """`take`'s result: attributes shared as they are, and how to make the
    others for a new connection."""

    shared: dict[str, Any]
    made: list[tuple[str, Maker]]


def take(
    protocol: object, shared: tuple[object, ...], loop: asyncio.AbstractEventLoop
) -> Template:
    """What aiosmtpd's set-up gave ``protocol``, to `apply` to later ones.

    ``shared`` are the objects every connection of the sink shares (the
    handler, the loop, the TLS context); ``loop`` is the sink's. Raises
    `Refused` when a value is neither one of those, nor immutable, nor a
    method bound to ``protocol`` or to one of them, nor a dict or tuple of
    such values. The template keeps no reference to ``protocol``, so the
    first connection is freed like any other.
    """
    stream_names = _stream_protocol_names(loop)
    template = Template({}, [])
    for name, value in vars(protocol).items():
        if name in stream_names:
            continue
        maker = _maker(value, protocol, shared, name)
        if maker is None:
            template.shared[name] = value
        else:
            template.made.append((name, maker))
    return template


def apply(template: Template, protocol: object) -> None:
    """Give ``protocol`` the attributes of a `take` template."""
    attributes = vars(protocol)
    attributes.update(template.shared)
    for name, make in template.made:
        attributes[name] = make(protocol)


def _maker(
    value: Any, owner: object, shared: tuple[object, ...], name: str
) -> Maker | None:
    """How to make ``value`` for a new connection; None to share it."""
    if isinstance(value, _IMMUTABLE) or any(value is s for s in shared):
        return None
    if isinstance(value, types.MethodType):
        if value.__self__ is owner:
            # The function's own __get__ binds it as MethodType does, in C:
            # a Python frame less for each of the dozen or so methods every
            # connection gets.
            bind: Maker = value.__func__.__get__
            return bind
        if any(value.__self__ is s for s in shared):
            return None
    elif type(value) is dict:
        # A new dict for each connection, even one without bound methods.
        base = dict(value)
        items = [
            (key, maker)
            for key, item in value.items()
            if (maker := _maker(item, owner, shared, name)) is not None
        ]
        for key, _ in items:
            base[key] = None  # made per connection; keeps the keys' order

        def make_dict(protocol: object) -> dict[Any, Any]:
            made = base.copy()
            for key, make in items:
                made[key] = make(protocol)
            return made

        return make_dict
    elif type(value) is tuple or (
        isinstance(value, tuple) and hasattr(type(value), "_fields")
    ):
        makers = [_maker(item, owner, shared, name) for item in value]
        if all(maker is None for maker in makers):
            return None  # immutable
        # What is made per connection is not kept (it is bound to `owner`).
        parts = [
            (None if make is not None else item, make)
            for item, make in zip(value, makers, strict=True)
        ]
        rebuild: Callable[[Iterable[Any]], tuple[Any, ...]] = (
            tuple if type(value) is tuple else type(value)._make  # type: ignore[attr-defined]
        )

        def make_tuple(protocol: object) -> tuple[Any, ...]:
            return rebuild(
                item if make is None else make(protocol) for item, make in parts
            )

        return make_tuple
    elif isinstance(value, ssl.SSLContext):
        return None  # the sink's, made once per sink
    raise Refused(f"{name}: {type(value).__name__}")
