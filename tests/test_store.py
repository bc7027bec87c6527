"""The store owns waiting: `Store.wait` and `Store.wait_async`, without a server."""

from __future__ import annotations

import asyncio
import smtplib
import threading

import pytest

from pytest_smtpsink import Message, SMTPSink
from pytest_smtpsink._store import Store


class Stop(Exception):
    pass


def test_wait_returns_at_once_when_the_predicate_holds() -> None:
    assert Store().wait(lambda: True, timeout=0)


def test_wait_times_out_when_nothing_changes() -> None:
    store = Store()
    assert not store.wait(lambda: False, timeout=0.01)
    assert store.watchers == 0


def test_wait_wakes_on_a_change_from_another_thread() -> None:
    store = Store()
    flag: list[bool] = []
    started = threading.Event()

    def predicate() -> bool:
        started.set()
        return bool(flag)

    def change() -> None:
        started.wait()
        flag.append(True)
        store.touch()

    thread = threading.Thread(target=change)
    thread.start()
    try:
        # A generous timeout: the wait ends on the change, not on the clock.
        assert store.wait(predicate, timeout=60)
    finally:
        thread.join()
    assert store.watchers == 0


def test_the_check_ends_a_wait() -> None:
    store = Store()

    def check() -> None:
        raise Stop

    with pytest.raises(Stop):
        store.wait(lambda: True, timeout=60, check=check)
    assert store.watchers == 0


def test_wait_async_wakes_on_a_change() -> None:
    store = Store()
    flag: list[bool] = []

    async def scenario() -> bool:
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: threading.Thread(target=change).start())
        return await store.wait_async(lambda: bool(flag), timeout=60)

    def change() -> None:
        flag.append(True)
        store.touch()

    assert asyncio.run(scenario())
    assert store.watchers == 0


def test_wait_async_times_out() -> None:
    store = Store()
    assert not asyncio.run(store.wait_async(lambda: False, timeout=0.01))
    assert store.watchers == 0


def test_only_listeners_of_lines_count_as_watchers() -> None:
    # `watchers` makes the protocol touch the store for every line.
    store = Store()
    calls: list[str] = []

    def coarse() -> None:
        calls.append("coarse")

    def fine() -> None:
        calls.append("fine")

    store.add_listener(coarse, lines=False)
    assert store.watchers == 0
    store.add_listener(fine)
    assert store.watchers == 1
    store.touch()  # a change that is not a line reaches both
    assert sorted(calls) == ["coarse", "fine"]
    store.add_listener(fine, lines=False)  # added again: its flag changes
    assert store.watchers == 0
    store.add_listener(coarse)
    assert store.watchers == 1
    store.remove_listener(coarse)
    store.remove_listener(fine)
    store.remove_listener(fine)  # twice: harmless
    assert store.watchers == 0
    calls.clear()
    store.touch()
    assert calls == []


def test_a_message_is_on_its_session_only_once_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server put it on its session first: a test that waited for the
    # session's messages could find it there and not in the sink's.
    seen_on_session_before: list[int] = []
    add_message = Store.add_message

    def add_watched(self: Store, message: Message) -> None:
        seen_on_session_before.append(len(message.session.messages))
        add_message(self, message)

    monkeypatch.setattr(Store, "add_message", add_watched)
    with SMTPSink() as sink:
        with smtplib.SMTP(sink.host, sink.port) as client:
            client.sendmail("a@example.com", ["b@example.com"], b"Subject: s\r\n\r\n")
        message = sink.wait_for(subject="s")
    assert seen_on_session_before == [0]
    assert message.session.messages == (message,)
