"""Side-by-side benchmarks for pytest-smtpsink.

Usage::

    python benchmarks/run.py [--repeat N] [--quick] [--only NAME[,NAME...]]

Runs every scenario against pytest-smtpsink (the working tree, installed
editable into its own venv), its peers (smtpdfix and pytest-localserver, in a
second venv the script builds itself), the floor (a bare aiosmtpd server
that stores raw bytes only, ``floor.py``) and, where Postfix's ``smtp-sink``
is installed, the limit (that C server, ``limit.py``), then prints a Markdown
table of medians and ratios and writes it to ``benchmarks/results.md``.

Both venvs pin the same pytest and aiosmtpd so whole-process times compare
like with like; each pytest run disables (``-p no:NAME``) every pytest11
plugin of its venv except the one under test. The venvs live in
``benchmarks/.venvs/`` and are rebuilt only when the pins or
``pyproject.toml`` change; creating them the first time needs PyPI and
takes a minute or two more than the run itself.

All traffic stays on 127.0.0.1, every loop is bounded, every wait has a
timeout.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import venv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from limit import LimitSink

if TYPE_CHECKING:
    from collections.abc import Sequence

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".venvs"
RESULTS_FILE = BENCH_DIR / "results.md"
WORKERS = BENCH_DIR / "_workers.py"
FLOOR_MODULE = BENCH_DIR / "floor.py"
LIMIT_MODULE = BENCH_DIR / "limit.py"

# Shared pins: the floor runs in the pytest-smtpsink venv and the peers in
# theirs, so both must run the same pytest and aiosmtpd for a fair ratio.
COMMON_PINS = ["pytest==9.2.0", "aiosmtpd==1.4.6"]
PEER_PINS = ["smtpdfix==0.5.3", "pytest-localserver==0.10.0.post0"]
# pytest-smtpsink[speed]: its suites and workers choose the loop explicitly.
SPEED_PINS = ["uvloop==0.23.0"]

SCENARIOS = ("pertest", "throughput", "concurrency", "size", "tls", "memory")
# Per-run timeout for one subprocess: generous, but a hang cannot eat the run.
RUN_TIMEOUT = 300.0


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    tests: int = 1000
    messages: int = 2000
    threads: int = 20
    per_thread: int = 100
    attachment: int = 25_000_000
    tls_tests: int = 100
    memory_messages: int = 10_000


FULL = Sizes()
# --quick: the same scenarios at a fifth of the work, for a smoke check.
QUICK = Sizes(200, 400, 20, 20, 5_000_000, 20, 2000)


# --------------------------------------------------------------------------
# Virtual environments
# --------------------------------------------------------------------------


@dataclass
class Env:
    """A benchmark venv: its requirements, and what went wrong building it."""

    name: str
    requirements: list[str]
    editable: Path | None = None
    error: str | None = None
    plugins: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return CACHE_DIR / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def stamp(self) -> str:
        """Changes whenever the venv must be rebuilt."""
        digest = hashlib.sha256(json.dumps(self.requirements).encode())
        digest.update(sys.version.encode())
        if self.editable is not None:
            digest.update((self.editable / "pyproject.toml").read_bytes())
        return digest.hexdigest()

    def ensure(self) -> None:
        """Create or refresh the venv; on failure record ``error``."""
        stamp_file = self.path / ".bench-stamp"
        try:
            stamp = self.stamp()
            if not (self.python.exists() and _read(stamp_file) == stamp):
                log(f"building venv {self.path} (first run only: a minute or two)")
                shutil.rmtree(self.path, ignore_errors=True)
                venv.EnvBuilder(with_pip=True).create(self.path)
                args = list(self.requirements)
                if self.editable is not None:
                    args += ["-e", str(self.editable)]
                _check_call(
                    [
                        str(self.python),
                        "-m",
                        "pip",
                        "install",
                        "-q",
                        "--disable-pip-version-check",
                        *args,
                    ]
                )
                stamp_file.write_text(stamp)
            self.plugins = json.loads(
                _check_output(
                    [str(self.python), "-c", _LIST_PLUGINS], cwd=BENCH_DIR
                ).strip()
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            self.error = f"venv {self.name}: {_short(exc)}"
            log(f"ERROR {self.error}")

    def disable_flags(self, keep: str | None) -> list[str]:
        """``-p no:X`` for every pytest11 plugin of this venv except ``keep``."""
        flags: list[str] = []
        for plugin in self.plugins:
            if plugin != keep:
                flags += ["-p", f"no:{plugin}"]
        return flags


_LIST_PLUGINS = (
    "import importlib.metadata as m, json; "
    "print(json.dumps(sorted({e.name for e in m.entry_points(group='pytest11')})))"
)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


# PYTHONDONTWRITEBYTECODE goes too: without bytecode caching every run
# compiles the plugin and rewrites the asserts of every test module again
# (pytest caches both in __pycache__). That cost lands on each suite by its
# number of assert statements, not by its SMTP work: the limit's suites have
# two per test, the sink's none, and it doubled the limit's whole-run time.
# Users' runs cache bytecode; the "prepare" pass (--collect-only) warms it.
_DROPPED_VARIABLES = {
    "PYTEST_ADDOPTS",
    "PYTEST_PLUGINS",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "PYTHONDONTWRITEBYTECODE",
}


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment minus anything that changes pytest's setup."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _DROPPED_VARIABLES and not k.startswith(("SMTPD_", "SMTPSINK_"))
    }
    env.update(extra or {})
    return env


def _check_call(cmd: Sequence[str]) -> None:
    # pip's output is kept for the error message only: its warnings are noise.
    subprocess.run(cmd, check=True, env=_clean_env(), capture_output=True, text=True)


def _check_output(cmd: Sequence[str], cwd: Path) -> str:
    return subprocess.run(
        cmd, check=True, env=_clean_env(), cwd=cwd, capture_output=True, text=True
    ).stdout


def _short(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, subprocess.CalledProcessError) and exc.stderr:
        text += ": " + str(exc.stderr)[-300:]
    return " ".join(text.split())[:300]


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Generated pytest suites
# --------------------------------------------------------------------------

_TEST_HEADER = """\
import os
import smtplib
import ssl

import pytest

CLIENT = "bench-client.test"  # fixed EHLO name: no getfqdn() per connection
SENDER = "sender@example.com"
RCPT = "rcpt@example.com"
MESSAGE = (
    b"From: Sender <sender@example.com>\\r\\n"
    b"To: Recipient <rcpt@example.com>\\r\\n"
    b"Subject: Message %d\\r\\n"
    b"Message-ID: <%d@bench.test>\\r\\n"
    b"\\r\\n"
    b"Hello %d, confirm at https://example.com/confirm/%d\\r\\n"
)
"""

_PLAIN_TEST = """
{marker}def test_{n:04d}({fixtures}):
    with smtplib.SMTP({host}, {port}, local_hostname=CLIENT) as client:
        client.sendmail(SENDER, [RCPT], MESSAGE % ({n}, {n}, {n}, {n}))
    {check}
"""

_TLS_TEST = """
{marker}def test_{n:04d}({fixtures}):
    context = {context}
    with smtplib.SMTP({host}, {port}, local_hostname=CLIENT) as client:
        client.starttls(context=context)
        client.sendmail(SENDER, [RCPT], MESSAGE % ({n}, {n}, {n}, {n}))
    {check}
"""

# The limit keeps nothing: the test keeps what it sent and, in the "+ parse"
# suite, parses it as pytest-smtpsink's assert_sent(subject=...) would.
_LIMIT_TEST = """
def test_{n:04d}(limit_sink):
    message = MESSAGE % ({n}, {n}, {n}, {n})
    with smtplib.SMTP(limit_sink.host, limit_sink.port, local_hostname=CLIENT) as client:
        assert not client.sendmail(SENDER, [RCPT], message)
    {check}
"""

_NO_SMTP_TEST = """
def test_{n:04d}():
    assert MESSAGE % ({n}, {n}, {n}, {n})
"""

_FLOOR_CONFTEST = '''\
"""The floor: a session-scoped bare aiosmtpd server, cleared per test."""
import pytest

from floor import FloorSink


@pytest.fixture(scope="session")
def _floor_server():
    with FloorSink() as sink:
        yield sink


@pytest.fixture
def floor_sink(_floor_server):
    _floor_server.clear()
    return _floor_server
'''

_FLOOR_TLS_CONFTEST = '''\
"""The floor with STARTTLS: bare aiosmtpd plus a trustme certificate."""
import ssl

import pytest
import trustme

from floor import FloorSink


@pytest.fixture(scope="session")
def _floor_ca():
    return trustme.CA()


@pytest.fixture(scope="session")
def floor_ctx(_floor_ca):
    context = ssl.create_default_context()
    _floor_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def _floor_server(_floor_ca):
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _floor_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with FloorSink(tls_context=server_context) as sink:
        yield sink


@pytest.fixture
def floor_sink(_floor_server):
    _floor_server.clear()
    return _floor_server
'''

_LIMIT_CONFTEST = '''\
"""The limit: Postfix's smtp-sink (C, keeps nothing), one per session."""
import pytest

from limit import LimitSink


@pytest.fixture(scope="session")
def limit_sink():
    with LimitSink() as sink:
        yield sink
'''

# Loaded into every timed pytest run (``-p _bench_timer``): the time of the
# tests once warm, i.e. setup, call and teardown of each, without the first
# test's setup and the last one's teardown. Those carry the one-time costs
# (session fixtures, a server start, lazy imports, a CA) that the whole-run
# time already counts, and so do interpreter start-up and collection.
_TIMER_PLUGIN = """\
_durations = []


def pytest_runtest_logreport(report):
    _durations.append(report.duration)


def pytest_terminal_summary(terminalreporter):
    warm = sum(_durations[1:-1])
    terminalreporter.write_line(f"bench-tests-seconds {warm:.6f}")
"""
_TIMER_LINE = re.compile(r"^bench-tests-seconds ([0-9.]+)$", re.MULTILINE)

_SMTPDFIX_CHECK = (
    '(message,) = smtpd.messages\n    assert message["Subject"] == "Message {n}"'
)
# smtpdfix writes its self-signed CA certificate there on first use.
_SMTPDFIX_CONTEXT = (
    'ssl.create_default_context(cafile=os.environ["SMTPD_SSL_CERTIFICATE_FILE"])'
)

_SMTPDFIX_TLS_CONFTEST = '''\
"""smtpdfix with STARTTLS: its Config reads SMTPD_USE_STARTTLS per server."""
import os

os.environ["SMTPD_USE_STARTTLS"] = "True"
'''


@dataclass(frozen=True)
class Suite:
    """One generated pytest suite: which venv and plugin, and the test text."""

    key: str
    label: str
    env: str  # "smtpsink" or "peers"
    plugin: str | None  # the pytest11 plugin to keep loaded
    template: str
    fixtures: str = ""
    host: str = ""
    port: str = ""
    check: str = ""
    context: str = ""
    marker: str = ""
    conftest: str = ""
    copy_floor: bool = False
    copy_limit: bool = False
    imports: str = ""
    ini: str = ""  # more lines for the suite's pytest.ini

    def write(self, directory: Path, count: int) -> None:
        directory.mkdir(parents=True)
        # An ini file stops pytest's rootdir search here.
        (directory / "pytest.ini").write_text("[pytest]\n" + self.ini)
        (directory / "_bench_timer.py").write_text(_TIMER_PLUGIN)
        if self.conftest:
            (directory / "conftest.py").write_text(self.conftest)
        if self.copy_floor:
            shutil.copy(FLOOR_MODULE, directory / "floor.py")
        if self.copy_limit:
            shutil.copy(LIMIT_MODULE, directory / "limit.py")
        per_file = 100
        for start in range(0, count, per_file):
            body = [_TEST_HEADER + self.imports]
            for n in range(start, min(count, start + per_file)):
                body.append(
                    self.template.format(
                        n=n,
                        fixtures=self.fixtures,
                        host=self.host,
                        port=self.port,
                        check=self.check.format(n=n),
                        context=self.context,
                        marker=self.marker,
                    )
                )
            (directory / f"test_bench_{start // per_file:02d}.py").write_text(
                "".join(body)
            )


# The smtpsink venv has uvloop (SPEED_PINS): "pytest-smtpsink" is measured
# on asyncio's own loop, as installed without the extra, and the [speed]
# rows on uvloop.
_ASYNCIO_LOOP = "addopts = --smtpsink-event-loop=asyncio\n"
SPEED_LABEL = "pytest-smtpsink[speed] (uvloop)"

_SINK_SUITE = Suite(
    "smtpsink",
    "pytest-smtpsink",
    "smtpsink",
    "smtpsink",
    _PLAIN_TEST,
    fixtures="smtpsink",
    host="smtpsink.host",
    port="smtpsink.port",
    check='smtpsink.assert_sent(subject="Message {n}")',
    ini=_ASYNCIO_LOOP,
)

PERTEST_SUITES = [
    Suite("baseline", "pytest alone (no SMTP)", "smtpsink", None, _NO_SMTP_TEST),
    Suite(
        "floor",
        "floor (bare aiosmtpd, session)",
        "smtpsink",
        None,
        _PLAIN_TEST,
        fixtures="floor_sink",
        host="floor_sink.host",
        port="floor_sink.port",
        check=(
            "(raw,) = floor_sink.messages\n"
            '    assert b"\\r\\nSubject: Message {n}\\r\\n" in raw'
        ),
        conftest=_FLOOR_CONFTEST,
        copy_floor=True,
    ),
    Suite(
        "limit",
        "limit (Postfix smtp-sink, C), send only",
        "smtpsink",
        None,
        _LIMIT_TEST,
        check="",
        conftest=_LIMIT_CONFTEST,
        copy_limit=True,
    ),
    Suite(
        "limit-parse",
        "limit + the parse of the sink's check",
        "smtpsink",
        None,
        _LIMIT_TEST,
        check='assert parse_subject(message) == "Message {n}"',
        conftest=_LIMIT_CONFTEST,
        copy_limit=True,
        imports="from limit import parse_subject\n",
    ),
    _SINK_SUITE,
    dataclasses.replace(
        _SINK_SUITE,
        key="smtpsink-speed",
        label=SPEED_LABEL,
        ini="addopts = --smtpsink-event-loop=uvloop\n",
    ),
    Suite(
        "smtpdfix",
        "smtpdfix",
        "peers",
        "smtpd",
        _PLAIN_TEST,
        fixtures="smtpd",
        host="smtpd.hostname",
        port="smtpd.port",
        check=_SMTPDFIX_CHECK,
    ),
    Suite(
        "localserver",
        "pytest-localserver",
        "peers",
        "localserver",
        _PLAIN_TEST,
        fixtures="smtpserver",
        host="smtpserver.addr[0]",
        port="smtpserver.addr[1]",
        check=(
            "(message,) = smtpserver.outbox\n"
            '    assert message["Subject"] == "Message {n}"'
        ),
    ),
]

TLS_SUITES = [
    Suite(
        "floor",
        "floor (bare aiosmtpd + trustme)",
        "smtpsink",
        None,
        _TLS_TEST,
        fixtures="floor_sink, floor_ctx",
        host="floor_sink.host",
        port="floor_sink.port",
        context="floor_ctx",
        check=(
            "(raw,) = floor_sink.messages\n"
            '    assert b"\\r\\nSubject: Message {n}\\r\\n" in raw'
        ),
        conftest=_FLOOR_TLS_CONFTEST,
        copy_floor=True,
    ),
    Suite(
        "smtpsink",
        "pytest-smtpsink",
        "smtpsink",
        "smtpsink",
        _TLS_TEST,
        fixtures="smtpsink",
        host="smtpsink.host",
        port="smtpsink.port",
        context="smtpsink.ssl_context()",
        marker='@pytest.mark.smtpsink(tls="starttls")\n',
        check='smtpsink.assert_sent(subject="Message {n}")',
        ini=_ASYNCIO_LOOP,
    ),
    Suite(
        "smtpdfix",
        "smtpdfix (SMTPD_USE_STARTTLS)",
        "peers",
        "smtpd",
        _TLS_TEST,
        fixtures="smtpd",
        host="smtpd.hostname",
        port="smtpd.port",
        context=_SMTPDFIX_CONTEXT,
        check=_SMTPDFIX_CHECK,
        conftest=_SMTPDFIX_TLS_CONFTEST,
    ),
]


# --------------------------------------------------------------------------
# Running and collecting samples
# --------------------------------------------------------------------------

Sample = dict[str, Any]


@dataclass
class Results:
    """Samples per (scenario, implementation), and the first error of each."""

    samples: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)
    #: Cells that cannot run here (no smtp-sink, no TLS in it), and why.
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, scenario: str, impl: str, sample: Sample) -> None:
        if "error" in sample:
            self.errors.setdefault((scenario, impl), str(sample["error"]))
        else:
            self.samples.setdefault((scenario, impl), []).append(sample)

    def median(self, scenario: str, impl: str, metric: str) -> float | None:
        values = [
            float(s[metric])
            for s in self.samples.get((scenario, impl), [])
            if metric in s
        ]
        return statistics.median(values) if values else None

    def first(self, scenario: str, impl: str) -> Sample | None:
        found = self.samples.get((scenario, impl))
        return found[0] if found else None


class Runner:
    def __init__(self, envs: dict[str, Env], sizes: Sizes, workdir: Path) -> None:
        self.envs = envs
        self.sizes = sizes
        self.workdir = workdir
        self.results = Results()

    def env_for(self, suite_env: str) -> Env:
        return self.envs[suite_env]

    # -- pytest suites -------------------------------------------------------

    def prepare(self, scenario: str, suites: list[Suite], count: int) -> None:
        """Write each suite, and collect it once so every timed run starts
        with warm bytecode caches (the first run would also pay for them)."""
        for suite in suites:
            env = self.env_for(suite.env)
            if env.error:
                self.results.add(scenario, suite.key, {"error": env.error})
                continue
            if suite.copy_limit and self.skip_limit(scenario, suite.key):
                continue
            directory = self.workdir / scenario / suite.key
            suite.write(directory, count)
            self._pytest(env, suite, directory, ["--collect-only"], timed=False)

    def time_suite(self, scenario: str, suite: Suite, count: int) -> None:
        env = self.env_for(suite.env)
        if (
            env.error
            or (scenario, suite.key) in self.results.errors
            or (scenario, suite.key) in self.results.skipped
        ):
            return
        directory = self.workdir / scenario / suite.key
        sample = self._pytest(env, suite, directory, [], timed=True)
        if "error" not in sample and f"{count} passed" not in sample.pop("out"):
            sample = {"error": "not every test passed"}
        self.results.add(scenario, suite.key, sample)

    def _pytest(
        self, env: Env, suite: Suite, directory: Path, extra: list[str], timed: bool
    ) -> Sample:
        cmd = [str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += ["-p", "_bench_timer"]  # importable: python -m puts cwd first
        cmd += env.disable_flags(suite.plugin) + extra
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=directory,
                env=_clean_env(),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,  # a failing suite is reported, not raised
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {RUN_TIMEOUT:.0f} s"}
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-12:]
            detail = " | ".join(line.strip() for line in tail)
            log(f"{suite.key} in {directory} failed (exit {proc.returncode}): {detail}")
            return {"error": f"pytest exit {proc.returncode}: {detail[-240:]}"}
        if not timed:
            return {}
        sample: Sample = {"seconds": seconds, "out": proc.stdout}
        found = _TIMER_LINE.search(proc.stdout)
        if found:
            sample["tests_seconds"] = float(found.group(1))
        return sample

    # -- in-process workers --------------------------------------------------

    def skip_limit(self, scenario: str, key: str) -> bool:
        """True (and noted) when smtp-sink is not installed here."""
        reason = LimitSink.missing()
        if reason is not None:
            self.results.skipped[(scenario, key)] = reason
        return reason is not None

    def worker(self, scenario: str, key: str, impl: str, args: list[str]) -> None:
        env = self.envs["smtpsink"] if impl.startswith("smtpsink") else self.floor_env()
        if impl == "limit" and self.skip_limit(scenario, key):
            return
        if env.error:
            self.results.add(scenario, key, {"error": env.error})
            return
        cmd = [str(env.python), str(WORKERS), *args, "--impl", impl]
        try:
            proc = subprocess.run(
                cmd,
                cwd=BENCH_DIR,
                env=_clean_env(),
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,  # a failing suite is reported, not raised
            )
            lines = proc.stdout.strip().splitlines()
            sample: Sample = (
                json.loads(lines[-1])
                if lines
                else {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-240:]}"}
            )
        except subprocess.TimeoutExpired:
            sample = {"error": f"timed out after {RUN_TIMEOUT:.0f} s"}
        except json.JSONDecodeError:
            sample = {"error": f"bad worker output: {proc.stdout[-240:]}"}
        if "error" in sample:
            log(f"{scenario}/{key} failed: {sample['error']}")
        self.results.add(scenario, key, sample)

    def floor_env(self) -> Env:
        """The floor runs beside pytest-smtpsink; if that venv could not be
        built (no working tree yet), the peers venv has aiosmtpd too."""
        smtpsink = self.envs["smtpsink"]
        return self.envs["peers"] if smtpsink.error else smtpsink

    # -- scenarios -----------------------------------------------------------

    def run(self, selected: list[str], repeat: int) -> None:
        s = self.sizes
        if "pertest" in selected:
            self.prepare("pertest", PERTEST_SUITES, s.tests)
        if "tls" in selected:
            self.prepare("tls", TLS_SUITES, s.tls_tests)
        impls = ["floor", "smtpsink"]
        # Interleave repeats so that drift in machine load hits every
        # implementation alike instead of biasing whichever ran last.
        for rep in range(1, repeat + 1):
            log(f"round {rep}/{repeat}")
            if "pertest" in selected:
                for suite in PERTEST_SUITES:
                    self.time_suite("pertest", suite, s.tests)
            if "throughput" in selected:
                for impl in [
                    *impls,
                    "smtpsink-speed",
                    "smtpsink-norec",
                    *BARE_IMPLS,
                    "limit",
                ]:
                    count = ["throughput", "--count", str(s.messages)]
                    self.worker("throughput-one", impl, impl, count)
                    if impl == "smtpsink-norec":
                        continue  # the recording control: one connection only
                    self.worker(
                        "throughput-new", impl, impl, [*count, "--new-connection"]
                    )
            if "concurrency" in selected:
                for impl in impls:
                    total = str(s.threads * s.per_thread)
                    args = [
                        "concurrency",
                        "--threads",
                        str(s.threads),
                        "--count",
                        total,
                    ]
                    self.worker("concurrency", impl, impl, args)
            if "size" in selected:
                for impl in impls:
                    self.worker(
                        "size", impl, impl, ["size", "--size", str(s.attachment)]
                    )
            if "tls" in selected:
                self.results.skipped[("tls", "limit")] = _LIMIT_NO_TLS
                for suite in TLS_SUITES:
                    self.time_suite("tls", suite, s.tls_tests)
            if "memory" in selected:
                for impl in impls:
                    args = ["memory", "--count", str(s.memory_messages)]
                    self.worker("memory", impl, impl, args)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

IMPLS = (("floor", "floor"), ("smtpsink", "pytest-smtpsink"))
LIMIT_LABEL = "limit (Postfix smtp-sink, C)"
# The in-process floor (bare.py): canned replies, nothing kept but the bytes.
BARE_IMPLS = {
    "bare": "bare protocol in a thread (asyncio)",
    "bare-uvloop": "bare protocol in a thread (uvloop)",
}
# Postfix 3.7's smtp-sink(1) has no TLS option: it never offers STARTTLS.
_LIMIT_NO_TLS = "skipped: smtp-sink has no TLS (it never offers STARTTLS)"


def _ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base <= 0:
        return "-"
    return f"{value / base:.2f}x"


def _quotient(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f} MB"


@dataclass
class Report:
    """Turns medians into table rows and target checks."""

    results: Results
    sizes: Sizes
    repeat: int
    selected: list[str]
    rows: list[list[str]] = field(default_factory=list)
    targets: list[list[str]] = field(default_factory=list)

    def row(
        self,
        scenario: str,
        label: str,
        result: str,
        ratio: str,
        note: str,
        *,
        vs_limit: str = "-",
    ) -> None:
        self.rows.append([scenario, label, result, ratio, vs_limit, note])

    def skipped_row(self, scenario: str, title: str, key: str, label: str) -> bool:
        """Show a cell that cannot run on this machine, saying why."""
        reason = self.results.skipped.get((scenario, key))
        if reason is not None:
            self.row(title, label, "skipped", "-", reason.replace("|", "/"))
        return reason is not None

    def error_row(self, scenario: str, title: str, key: str, label: str) -> bool:
        """Show an implementation that never produced a sample as an error."""
        error = self.results.errors.get((scenario, key))
        if error is not None and not self.results.samples.get((scenario, key)):
            self.row(title, label, "**error**", "-", error.replace("|", "/")[:200])
            return True
        return False

    def spread(self, scenario: str, key: str, metric: str) -> str:
        """Range of the runs, so readers can judge the noise around a median."""
        values = [
            float(s[metric]) for s in self.results.samples.get((scenario, key), [])
        ]
        if len(values) < 2:
            return ""
        return f" (runs {min(values):.2f}-{max(values):.2f} s)"

    def target(
        self, scenario: str, name: str, value: float | None, limit: float, lower: bool
    ) -> None:
        """A target is met when ``value`` is at most (``lower``) or at least
        ``limit``; targets of scenarios that did not run are left out."""
        if scenario not in self.selected:
            return
        if value is None:
            self.targets.append([name, "-", "not measured"])
            return
        met = value <= limit if lower else value >= limit
        self.targets.append([name, f"{value:.3f}", "yes" if met else "**no**"])

    def build(self) -> None:
        self.pertest()
        self.throughput()
        self.concurrency()
        self.size()
        self.tls()
        self.memory()

    # -- per scenario ---------------------------------------------------------

    def suites(
        self, scenario: str, title: str, suites: list[Suite], count: int
    ) -> None:
        r = self.results
        floor = r.median(scenario, "floor", "seconds")
        floor_tests = r.median(scenario, "floor", "tests_seconds")
        baseline = r.median(scenario, "baseline", "seconds")
        # The honest limit does the parse the sink's tests do.
        limit = r.median(scenario, "limit-parse", "seconds")
        for suite in suites:
            if self.error_row(
                scenario, title, suite.key, suite.label
            ) or self.skipped_row(scenario, title, suite.key, suite.label):
                continue
            seconds = r.median(scenario, suite.key, "seconds")
            if seconds is None:
                continue
            note = f"{seconds / count * 1000:.2f} ms/test"
            if baseline is not None and suite.key != "baseline":
                extra = (seconds - baseline) / count * 1000
                note += f", {extra:+.2f} ms/test over pytest alone"
            note += self.spread(scenario, suite.key, "seconds")
            in_tests = r.median(scenario, suite.key, "tests_seconds")
            if in_tests is not None:
                note += f"; once warm {in_tests / count * 1000:.2f} ms/test"
                if floor_tests and suite.key != "baseline":
                    note += f" ({_ratio(in_tests, floor_tests)} the floor)"
            ratio = "-" if suite.key == "baseline" else _ratio(seconds, floor)
            vs_limit = "-" if suite.key == "baseline" else _ratio(seconds, limit)
            self.row(
                title, suite.label, f"{seconds:.2f} s", ratio, note, vs_limit=vs_limit
            )
        if scenario == "tls":
            self.skipped_row(scenario, title, "limit", LIMIT_LABEL)

    def pertest(self) -> None:
        r, n = self.results, self.sizes.tests
        self.suites("pertest", f"{n} tests, whole run", PERTEST_SUITES, n)
        sink = r.median("pertest", "smtpsink", "seconds")
        floor = r.median("pertest", "floor", "seconds")
        self.target(
            "pertest",
            f"{n}-test suite: smtpsink / floor (<= 1.10)",
            _quotient(sink, floor),
            1.10,
            lower=True,
        )
        limit = r.median("pertest", "limit-parse", "seconds")
        self.target(
            "pertest",
            f"{n}-test suite: smtpsink / limit + parse (<= 1.30)",
            _quotient(sink, limit),
            1.30,
            lower=True,
        )
        self.target(
            "pertest",
            f"{n}-test suite: smtpsink[speed] / limit + parse (<= 1.30)",
            _quotient(r.median("pertest", "smtpsink-speed", "seconds"), limit),
            1.30,
            lower=True,
        )
        for peer in ("smtpdfix", "localserver"):
            other = r.median("pertest", peer, "seconds")
            self.target(
                "pertest",
                f"{n}-test suite: {peer} / smtpsink (>= 1.5)",
                _quotient(other, sink),
                1.5,
                lower=False,
            )

    def throughput(self) -> None:
        r, n = self.results, self.sizes.messages
        for scenario, title in (
            ("throughput-one", f"{n} msgs, one connection"),
            ("throughput-new", f"{n} msgs, new connection each"),
        ):
            base = r.median(scenario, "floor", "seconds")
            limit = r.median(scenario, "limit", "seconds")
            for impl, label in (
                *IMPLS,
                ("smtpsink-speed", SPEED_LABEL),
                *BARE_IMPLS.items(),
                ("limit", LIMIT_LABEL),
            ):
                seconds = r.median(scenario, impl, "seconds")
                if (
                    self.error_row(scenario, title, impl, label)
                    or self.skipped_row(scenario, title, impl, label)
                    or seconds is None
                ):
                    continue
                note = f"{n / seconds:,.0f} msg/s" + self.spread(
                    scenario, impl, "seconds"
                )
                self.row(
                    title,
                    label,
                    f"{seconds:.2f} s",
                    _ratio(seconds, base),
                    note,
                    vs_limit=_ratio(seconds, limit),
                )
            sink = r.median(scenario, "smtpsink", "seconds")
            if scenario == "throughput-one":
                self.target(
                    "throughput",
                    f"{title}: smtpsink / limit time (<= 1.50)",
                    _quotient(sink, limit),
                    1.50,
                    lower=True,
                )
                self.target(
                    "throughput",
                    f"{title}: smtpsink[speed] / limit time (<= 1.50)",
                    _quotient(r.median(scenario, "smtpsink-speed", "seconds"), limit),
                    1.50,
                    lower=True,
                )
            self.target(
                "throughput",
                f"{title}: smtpsink / floor time (<= 1.10)",
                _quotient(sink, base),
                1.10,
                lower=True,
            )
            if scenario == "throughput-one":
                self.recording_overhead(title, sink)

    def recording_overhead(self, title: str, recorded: float | None) -> None:
        """The conversation issue's figure: the same sink with the transcript
        recording switched off, same run (target: within 10%)."""
        off = self.results.median("throughput-one", "smtpsink-norec", "seconds")
        if (
            self.error_row(
                "throughput-one",
                title,
                "smtpsink-norec",
                "pytest-smtpsink, recording off",
            )
            or off is None
        ):
            return
        self.row(
            title,
            "pytest-smtpsink, recording off",
            f"{off:.2f} s",
            "-",
            f"recording costs {_ratio(recorded, off)} of this"
            + self.spread("throughput-one", "smtpsink-norec", "seconds"),
        )
        self.target(
            "throughput",
            f"{title}: recording on / off (<= 1.10)",
            _quotient(recorded, off),
            1.10,
            lower=True,
        )

    def concurrency(self) -> None:
        r, s = self.results, self.sizes
        title = f"{s.threads} threads x {s.per_thread} msgs"
        base = r.median("concurrency", "floor", "seconds")
        for impl, label in IMPLS:
            seconds = r.median("concurrency", impl, "seconds")
            if self.error_row("concurrency", title, impl, label) or seconds is None:
                continue
            samples = r.samples[("concurrency", impl)]
            lost = max(x["lost"] for x in samples)
            dup = max(x["duplicated"] for x in samples)
            rate = s.threads * s.per_thread / seconds
            note = f"{rate:,.0f} msg/s, lost {lost}, duplicated {dup} (worst run)"
            self.row(title, label, f"{seconds:.2f} s", _ratio(seconds, base), note)
            if impl == "smtpsink":
                self.target(
                    "concurrency",
                    "concurrency: messages lost or duplicated (= 0)",
                    lost + dup,
                    0,
                    lower=True,
                )

    def size(self) -> None:
        r = self.results
        title = f"{self.sizes.attachment / 1e6:.0f} MB attachment"
        base = r.median("size", "floor", "seconds")
        for impl, label in IMPLS:
            if self.error_row("size", title, impl, label):
                continue
            seconds = r.median("size", impl, "seconds")
            peak = r.median("size", impl, "peak_rss_delta")
            size = r.median("size", impl, "message_bytes")
            if seconds is None or peak is None or not size:
                continue
            note = (
                f"capture time; peak RSS +{_mb(peak)} = {peak / size:.1f}x the "
                f"{_mb(size)} message" + self.spread("size", impl, "seconds")
            )
            self.row(title, label, f"{seconds:.2f} s", _ratio(seconds, base), note)
            if impl == "smtpsink":
                self.target(
                    "size",
                    f"{title}: smtpsink / floor capture time (<= 1.30)",
                    _quotient(seconds, base),
                    1.3,
                    lower=True,
                )
                self.target(
                    "size",
                    f"{title}: peak RSS / message size (< 3)",
                    peak / size,
                    3.0,
                    lower=True,
                )
        if ("size", "smtpsink") in r.errors and not r.samples.get(("size", "smtpsink")):
            self.target(
                "size", f"{title}: accepted with default settings", 0, 1, lower=False
            )

    def tls(self) -> None:
        r, n = self.results, self.sizes.tls_tests
        self.suites("tls", f"{n} STARTTLS tests, whole run", TLS_SUITES, n)
        for metric, what in (
            ("seconds", "whole run"),
            ("tests_seconds", "once warm"),
        ):
            sink = r.median("tls", "smtpsink", metric)
            other = r.median("tls", "smtpdfix", metric)
            self.target(
                "tls",
                f"{n} STARTTLS tests, {what}: smtpdfix / smtpsink (>= 5)",
                _quotient(other, sink),
                5.0,
                lower=False,
            )

    def memory(self) -> None:
        r, n = self.results, self.sizes.memory_messages
        title = f"RSS after {n:,} msgs"
        base = r.median("memory", "floor", "rss_delta")
        for impl, label in IMPLS:
            if self.error_row("memory", title, impl, label):
                continue
            delta = r.median("memory", impl, "rss_delta")
            total = r.median("memory", impl, "rss_after")
            raw = r.median("memory", impl, "message_bytes")
            if delta is None or total is None or not raw:
                continue
            note = (
                f"{delta / n:,.0f} B/msg for {raw / n:,.0f} B raw; "
                f"process RSS {_mb(total)}"
            )
            self.row(title, label, f"+{_mb(delta)}", _ratio(delta, base), note)

    def markdown(self, header: str) -> str:
        head = [
            "Scenario",
            "Implementation",
            "Median",
            "vs floor",
            "vs limit",
            "Detail",
        ]
        lines = [header, "", *_table(head, self.rows)]
        if self.targets:
            lines += ["", "Targets (issues 8 and 20), measured in this run:", ""]
            lines += _table(["Target", "Measured", "Met"], self.targets)
        return "\n".join(lines) + "\n"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _load_note(load_at_start: float) -> str:
    """Other processes skew every figure: say how busy the machine was."""
    load_at_end = os.getloadavg()[0]
    # Only the load before the run says something about other processes:
    # the benchmark's own client and server keep about one CPU busy, so the
    # end figure always shows it (and a minute's average lags behind).
    note = (
        f"Load average (1 min) {load_at_start:.1f} at start "
        f"({load_at_end:.1f} at end, this run's own work included)"
    )
    cpus = os.cpu_count() or 1
    if load_at_start > cpus / 2:
        note += f": **busy machine ({cpus} CPUs), figures are unreliable**"
    return note + "."


def _header(envs: dict[str, Env], sizes: Sizes, repeat: int, quick: bool) -> str:
    versions = _check_output(
        [
            str(
                envs["peers"].python if envs["peers"].error is None else sys.executable
            ),
            "-c",
            "import importlib.metadata as m\n"
            "for n in ('pytest','aiosmtpd','smtpdfix','pytest-localserver'):\n"
            "    try: print(n, m.version(n))\n"
            "    except m.PackageNotFoundError: pass",
        ],
        cwd=BENCH_DIR,
    ).split("\n")
    mode = " (--quick: reduced sizes, indicative only)" if quick else ""
    return textwrap.dedent(f"""\
        ## Benchmark results

        Medians of {repeat} run(s){mode};
        Python {sys.version.split()[0]}, {os.cpu_count()} CPUs;
        {", ".join(v for v in versions if v)}.
        "vs floor" divides by the bare aiosmtpd floor of the same scenario and
        run (lower is better); "vs limit" by Postfix's C smtp-sink (for test
        suites: its suite whose tests also parse what they sent, as the
        sink's checks do). Whole-run times are whole `python -m pytest`
        processes.""")


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark pytest-smtpsink against its peers and a bare floor.",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measurement; medians are reported (default 3, 1 with --quick)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="reduced sizes for a fast smoke run"
    )
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}"
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(selected) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.selected = selected or list(SCENARIOS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    load_at_start = os.getloadavg()[0]
    sizes = QUICK if args.quick else FULL
    CACHE_DIR.mkdir(exist_ok=True)
    envs = {
        "smtpsink": Env("smtpsink", COMMON_PINS + SPEED_PINS, editable=ROOT),
        "peers": Env("peers", COMMON_PINS + PEER_PINS),
    }
    for env in envs.values():
        env.ensure()
    if envs["smtpsink"].error and envs["peers"].error:
        log("no benchmark venv could be built; giving up")
        return 2
    envs_ready = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="smtpsink-bench-") as tmp:
        runner = Runner(envs, sizes, Path(tmp))
        runner.run(args.selected, args.repeat)

    report = Report(runner.results, sizes, args.repeat, args.selected)
    report.build()
    text = report.markdown(_header(envs, sizes, args.repeat, args.quick))
    text += f"\n{_load_note(load_at_start)}\n"
    finished = time.perf_counter()
    text += (
        f"\nBenchmark time {finished - envs_ready:.0f} s"
        f" (plus {envs_ready - started:.0f} s preparing venvs).\n"
    )
    print(text)
    RESULTS_FILE.write_text(text)
    log(f"table written to {RESULTS_FILE}")
    return 1 if runner.results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
