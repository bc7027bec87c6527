"""Recipe: error logs mailed by logging.handlers.SMTPHandler."""

from __future__ import annotations

import logging
import logging.handlers
import queue

import pytest


@pytest.fixture
def mailed_logger(smtpsink):
    """A logger whose ERROR records are mailed to ops@example.com."""
    handler = logging.handlers.SMTPHandler(
        mailhost=(smtpsink.host, smtpsink.port),
        fromaddr="app@example.com",
        toaddrs=["ops@example.com"],
        subject="Error in the shop",
        timeout=10,
    )
    handler.setLevel(logging.ERROR)
    logger = logging.getLogger("shop.payments")
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)
    handler.close()


def test_errors_are_mailed(mailed_logger, smtpsink):
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        mailed_logger.exception("payment failed for order %s", 42)
    mailed_logger.warning("below ERROR: not mailed")

    msg = smtpsink.assert_sent(to="ops@example.com", subject="Error in the shop")
    assert "payment failed for order 42" in msg.text
    assert "ZeroDivisionError" in msg.text  # the traceback is in the mail


def test_mailed_from_a_queue_listener(smtpsink):
    # Apps often keep the slow SMTP handler off the request path with a
    # QueueHandler: the mail then leaves from the listener's thread, some
    # time after the log call. wait_for wakes when it arrives.
    smtp_handler = logging.handlers.SMTPHandler(
        (smtpsink.host, smtpsink.port), "app@example.com", ["ops@example.com"], "Alert"
    )
    records: queue.Queue[logging.LogRecord] = queue.Queue()
    listener = logging.handlers.QueueListener(records, smtp_handler)
    logger = logging.getLogger("shop.background")
    queue_handler = logging.handlers.QueueHandler(records)
    logger.addHandler(queue_handler)
    listener.start()
    try:
        logger.error("stock sync failed")
        msg = smtpsink.wait_for(subject="Alert", timeout=10)
    finally:
        listener.stop()
        logger.removeHandler(queue_handler)
        smtp_handler.close()
    assert "stock sync failed" in msg.text
