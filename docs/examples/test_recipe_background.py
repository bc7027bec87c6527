"""Recipe: mail sent in the background, by a thread pool or a process pool."""

from __future__ import annotations

import multiprocessing
import re
import smtplib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from email.message import EmailMessage


def send_receipt(host, port, order):
    """The background job: what a task queue worker would run."""
    message = EmailMessage()
    message["From"] = "shop@example.com"
    message["To"] = "ann@example.com"
    message["Subject"] = f"Receipt for order {order}"
    message.set_content(f"Thank you for order {order}.")
    with smtplib.SMTP(host, port) as smtp:
        smtp.send_message(message)


def test_thread_pool(smtpsink):
    with ThreadPoolExecutor(max_workers=4) as pool:
        jobs = [
            pool.submit(send_receipt, smtpsink.host, smtpsink.port, order)
            for order in range(1, 6)
        ]
        # Still inside the pool: the jobs may not have finished. wait_for
        # wakes as soon as the fifth receipt is stored (no sleep, no polling).
        receipts = smtpsink.wait_for(count=5, subject=re.compile(r"^Receipt"))

    for job in jobs:
        job.result()  # re-raises a job's exception, if one failed
    # The jobs ran concurrently: arrival order is not submission order.
    assert sorted(msg.subject for msg in receipts) == [
        f"Receipt for order {order}" for order in range(1, 6)
    ]


def test_process_pool(smtpsink):
    # "spawn": forking a process that runs threads (the sink's server thread
    # among them) is unsafe, and Python 3.12+ warns about it.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        job = pool.submit(send_receipt, smtpsink.host, smtpsink.port, 7)
        msg = smtpsink.wait_for(subject="Receipt for order 7", timeout=30)
        job.result()

    assert msg.text == "Thank you for order 7.\n"
