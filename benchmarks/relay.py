"""What automatic relay adds to the throughput scenario.

Usage::

    python benchmarks/relay.py [--count 2000] [--repeat 5]

The scenario of ``run.py``'s ``throughput`` row (one client connection
sending ``count`` small messages, timed until the sink holds them all), run
three ways, alternating, ``--repeat`` times each:

- ``plain``: a sink without relay (the baseline);
- ``relay, captured``: a sink relaying every message to a second sink, timed
  as the baseline is, until the relaying sink holds them all;
- ``relay, delivered``: the same run, timed until the upstream sink holds
  them all too.

The upstream sink runs in this process (as in a test using two sinks), or,
with ``--upstream-process``, as a standalone sink in a process of its own:
then the relaying process only adds the relay thread's work, not the
upstream's.

Prints the median seconds per message of each and the ratio to the
baseline. Everything stays on 127.0.0.1; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workers import _SMTPSinkAdapter, send_many

from pytest_smtpsink import SMTPSink

WAIT = 300.0


@contextlib.contextmanager
def upstream_process() -> Iterator[int]:
    """A standalone sink in its own process; yields its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_smtpsink", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        match = re.search(r":(\d+)", proc.stdout.readline())
        assert match, "the standalone sink did not start"
        yield int(match.group(1))
    finally:
        proc.terminate()
        proc.wait(WAIT)
        assert proc.stdout is not None
        proc.stdout.close()


def one_run(count: int, relay: bool, port: int | None) -> tuple[float, float]:
    """(seconds until captured, seconds until every relay outcome is in)."""
    with contextlib.ExitStack() as stack:
        if port is None:
            port = stack.enter_context(SMTPSink(hostname="upstream.test")).port
        settings: dict[str, Any] = (
            {"relay": f"smtp://127.0.0.1:{port}", "relay_to": ".*"} if relay else {}
        )
        sink = stack.enter_context(SMTPSink(**settings))
        client = _SMTPSinkAdapter(sink)
        send_many(client, 5, False, "warmup")
        assert client.wait_for(5, WAIT)

        def relayed() -> bool:
            # The relay records outcomes in arrival order: the last message's
            # says that all are in. (Checking every message at every wake-up
            # would time the predicate: 2,000 checks per outcome recorded.)
            last = sink.messages[-1]
            return last.relay is not None and last.relay.done

        if relay:
            sink.wait_until(relayed, WAIT)
        start = time.perf_counter()
        send_many(client, count, False, "m")
        assert client.wait_for(count + 5, WAIT)
        captured = time.perf_counter() - start
        if relay:
            last = sink.messages[-1]
            # Each outcome is recorded once the upstream's 250 is read, so
            # the upstream holds every message by then.
            sink.wait_until(lambda: last.relay is not None and last.relay.done, WAIT)
            statuses = {m.relay.status for m in sink.messages if m.relay}
            assert statuses == {"relayed"}, statuses
        delivered = time.perf_counter() - start
    return captured, delivered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--upstream-process", action="store_true")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        port = (
            stack.enter_context(upstream_process()) if args.upstream_process else None
        )
        return measure(args.count, args.repeat, port)


def measure(count: int, repeat: int, port: int | None) -> int:

    plain: list[float] = []
    captured: list[float] = []
    delivered: list[float] = []
    for _ in range(repeat):
        plain.append(one_run(count, False, port)[0])
        with_relay = one_run(count, True, port)
        captured.append(with_relay[0])
        delivered.append(with_relay[1])

    base = statistics.median(plain)
    where = "its own process" if port else "the same process"
    print(
        f"{count} messages, one connection, median of {repeat} runs; "
        f"upstream in {where}"
    )
    print("| run | µs per message | ratio |")
    print("|---|---:|---:|")
    for name, samples in (
        ("plain", plain),
        ("relay, captured", captured),
        ("relay, delivered", delivered),
    ):
        median = statistics.median(samples)
        print(f"| {name} | {median / count * 1e6:.0f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
