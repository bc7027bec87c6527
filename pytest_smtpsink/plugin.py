"""The pytest layer: options, fixtures, the marker and report hooks.

Everything here is thin glue over `SMTPSink`; the core never imports pytest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import ipaddress
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pytest

from . import _report
from ._settings import (
    DEFAULT_TIMEOUT,
    SettingsError,
    SinkSettings,
    parse_number,
    parse_size,
    parse_whole,
)
from ._text import Undisplayed, an, close_names, meant_choice, plural, shown_argument

if TYPE_CHECKING:
    # Imported where used: a pytest run that never touches the sink should
    # not pay for asyncio, aiosmtpd and the email parsers (~80 ms).
    from ._mailbox import Mailbox
    from ._message import Message
    from ._server import SMTPSink

_POOL_KEY = pytest.StashKey["_SinkPool"]()
_DEFAULTS_KEY = pytest.StashKey["SinkSettings"]()
_TIMEOUT_KEY = pytest.StashKey[float]()
#: Every mailbox a test opened, for its report section and saved files, and
#: to tell a test's first view of a sink (see _open_view).
_VIEWS_KEY = pytest.StashKey["list[Mailbox]"]()
#: The HTML parts a pytest-html report may still render in frames.
_HTML_FRAMES_KEY = pytest.StashKey["list[int]"]()
_FAILED_KEY = pytest.StashKey[bool]()
#: The smtpsink fixtures a test used, however it asked for them (a fixture
#: of the user's may call request.getfixturevalue("smtpsink")).
_USED_KEY = pytest.StashKey["set[str]"]()
#: A marker's warning, held until the test's end: with the fixtures that
#: would make the marker do something.
_UNUSED_MARKERS_KEY = pytest.StashKey["list[tuple[frozenset[str], str]]"]()
#: Whether the test's call passed, for a test with such warnings held: one
#: skipped or failed may have stopped before it asked for the fixture.
#: When the test's set-up began (``time.time()``): mail that arrived
#: between then and its first mailbox came from a fixture set up before it.
_SET_UP_AT_KEY = pytest.StashKey[float]()
#: When the test's set-up ended: a mailbox made later (in the test's body,
#: by getfixturevalue or smtpsink_factory()) missed mail that arrived after
#: it, which the test itself sent, not a fixture.
_SET_UP_DONE_KEY = pytest.StashKey[float]()
#: Which run of the test this is, from 1: a plugin that reruns failed tests
#: (pytest-rerunfailures) sets a test up again. Each run saves its own mail.
_ATTEMPT_KEY = pytest.StashKey[int]()
#: The save directory's test directories by test (see `_report.saved_runs`),
#: read at the first test's end: an earlier run's are forgotten.
_SAVED_RUNS_KEY = pytest.StashKey[dict[str, list[Path]]]()
#: The reports of the test's run so far (set-up, call): what the end of the
#: run says for the index is said on them too, as a plugin that reruns
#: tests (pytest-rerunfailures before 16.0) logs only a rerun's failed one.
_RUN_REPORTS_KEY = pytest.StashKey["list[pytest.TestReport]"]()
#: The test being run, for the ``smtpsink`` fixture (see `_running_item`);
#: what it was when this config began (an outer run, under pytester).
_OUTER_ITEM_KEY = pytest.StashKey["pytest.Item | None"]()


class _Running:
    item: pytest.Item | None = None


_RUNNING = _Running()
_CALL_PASSED_KEY = pytest.StashKey[bool]()
#: The test itself failed (its call), not only its set-up or teardown:
#: index.html says "failed" then and "error" otherwise, as pytest does.
_FAILED_IN_CALL_KEY = pytest.StashKey[bool]()
#: Why a test skipped or is marked xfail, for index.html: apart from
#: `_REASON_KEY`, so that a teardown's failure after a skip gives its own.
_SKIP_REASON_KEY = pytest.StashKey["str | None"]()
#: The descriptor holding the save directory's lock (`_files.lock_directory`).
_SAVE_LOCK_KEY = pytest.StashKey[int]()
#: Why the test first failed, for index.html (`_report.failure_reason`).
_REASON_KEY = pytest.StashKey["str | None"]()
#: "skipped", "xfailed" or "xpassed" for index.html, as pytest says it.
_OUTCOME_KEY = pytest.StashKey[str]()
#: What one run of a test keeps: a test set up again (a plugin that reruns
#: failed tests) starts without the first run's mailboxes and outcome.
_PER_RUN_KEYS: tuple[pytest.StashKey[Any], ...] = (
    _VIEWS_KEY,
    _SET_UP_DONE_KEY,
    _FAILED_KEY,
    _FAILED_IN_CALL_KEY,
    _REASON_KEY,
    _SKIP_REASON_KEY,
    _OUTCOME_KEY,
    _CALL_PASSED_KEY,
    _USED_KEY,
    _UNUSED_MARKERS_KEY,
)
_SUMMARY_KEY = pytest.StashKey[bool]()
_REPORT_KEY = pytest.StashKey[_report.ReportMode]()
_SAVE_KEY = pytest.StashKey[tuple[Path, _report.SaveMode] | None]()
#: The --smtpsink-save-dir directory, also in a run that saves nothing
#: (--setup-only): see pytest_ignore_collect.
_SAVE_ROOT_KEY = pytest.StashKey["Path | None"]()
#: This xdist worker's id when every worker runs every test (--dist each):
#: the saved files of a test are then per worker (see _report.test_directory).
_SAVE_WORKER_KEY = pytest.StashKey["str | None"]()
#: The tests whose saved files need a hashed directory name, as another
#: test's name is theirs but for case or a "/" (see _report.sharing_names).
_SHARED_NAMES_KEY = pytest.StashKey["set[str]"]()
#: The workerinput key by which the controller says the run is --dist each:
#: a worker's own config says "no" (xdist resets it there).
_EACH_INPUT = "smtpsink_dist_each"
#: The workerinput key with the run's start (`_STARTED_KEY`).
_STARTED_INPUT = "smtpsink_started"
#: When the run began (``time.time()``; the controller's under xdist).
_STARTED_KEY = pytest.StashKey[float]()
#: Whether the test's earlier runs' saved directories were looked at (once
#: per test, by whichever of its runs reaches the save first).
_CLEANED_KEY = pytest.StashKey[bool]()
#: --smtpsink-lint: the severity that fails a test at teardown, or "off".
_LINT_KEY = pytest.StashKey[str]()
_LINT_LEVELS = ("off", "error", "warning", "info")
#: The spamd address in use before this run set --smtpsink-spamd (pytester
#: runs nest in one process: restore it at unconfigure).
_SPAMD_KEY = pytest.StashKey["tuple[str | None]"]()


# -- options ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Option:
    name: str  # the SinkSettings field, or a plugin-only setting
    help: str
    kind: str = "string"
    #: What --help shows the value as, the reference page's word for it.
    metavar: str = ""

    @property
    def flag(self) -> str:
        return "--smtpsink-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "smtpsink_" + self.name


_OPTIONS = (
    _Option(
        "host",
        metavar="HOST",
        help="IP address the sink listens on (default 127.0.0.1).",
    ),
    _Option(
        "port",
        metavar="PORT",
        help="port of the default sink (default 0: a free port per worker).",
    ),
    _Option(
        "hostname",
        metavar="NAME",
        help="name the sink gives in its greeting (default smtpsink.test).",
    ),
    _Option(
        "max_size",
        metavar="SIZE",
        help="largest message accepted, advertised in SIZE: bytes or e.g. 25MB, 64MiB; "
        "0 for no limit (default 64MiB).",
    ),
    _Option(
        "timeout",
        metavar="SECONDS",
        help="default seconds for wait_for and wait_until (and their _async "
        "twins) "
        f"(default {DEFAULT_TIMEOUT:g}).",
    ),
    _Option(
        "report",
        metavar="MODE",
        help="what a failed test shows of its mail: off, summary (one line per "
        "message and session) or full (with transcripts; the default).",
    ),
    _Option(
        "save_dir",
        metavar="DIR",
        help="write each test's messages (.eml) and transcripts (.txt) under this "
        "directory, one sub-directory per test.",
    ),
    _Option(
        "save",
        metavar="WHICH",
        help="which tests --smtpsink-save-dir saves: failed (default) or all.",
    ),
    _Option(
        "summary",
        "list in the terminal summary how many messages and sessions each test "
        "captured (with -v also tests that captured nothing).",
        kind="bool",
    ),
    _Option(
        "lint",
        metavar="SEVERITY",
        help="check every captured message (docs: Checking how mail is built) and "
        "fail the test at teardown if one has a problem of this severity or "
        "worse: off (default), error, warning or info.",
    ),
    _Option(
        "spamd",
        metavar="HOST:PORT",
        help="HOST:PORT of a SpamAssassin spamd that Message.spam_report() and "
        "assert_not_spam() ask (default: none; they fail saying so).",
    ),
    _Option(
        "tls_cert",
        metavar="PEM",
        help="PEM file with the certificate (and chain) every TLS sink presents "
        "instead of the test CA's; it may hold the key too.",
    ),
    _Option(
        "tls_key",
        metavar="PEM",
        help="PEM file with the private key of --smtpsink-tls-cert.",
    ),
    _Option(
        "allow_remote",
        "allow --smtpsink-host to be a non-loopback address (anyone who can "
        "reach it can then send to the sink).",
        kind="bool",
    ),
    _Option(
        "relay",
        metavar="URL",
        help="relay the mail of every sink to this upstream, e.g. smtp://host:port "
        "(see the Relay and MX docs page); needs --smtpsink-relay-to. With "
        "user@host and no password, the password is read from "
        "SMTPSINK_RELAY_PASSWORD.",
    ),
    _Option(
        "relay_to",
        metavar="REGEX",
        help="regular expression of the recipients to relay (matched in full, "
        "ignoring case, the domain in either spelling: Unicode or xn--); "
        "nothing else is relayed.",
    ),
    _Option(
        "relay_allow_remote",
        "allow a --smtpsink-relay upstream that is not a loopback address.",
        kind="bool",
    ),
    _Option(
        "event_loop",
        metavar="LOOP",
        help="event loop of the sink's own thread: auto (default: uvloop when "
        "installed, e.g. by pytest-smtpsink[speed]), asyncio or uvloop.",
    ),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("smtpsink", "SMTP sink (pytest-smtpsink)")
    for option in _OPTIONS:
        if option.kind == "bool":
            group.addoption(
                option.flag, action="store_true", default=None, help=option.help
            )
            # Not type="bool": pytest's own error for a bad value does not
            # name the key, and it refuses the string an ini file holds in
            # pytest 9's native TOML table. _parse_bool takes the same words
            # and names the key; from pytest 9.2, which takes a union, a
            # native TOML true or false is taken too.
            parser.addini(
                option.ini,
                f"{option.help} (ini: true or false)",
                default=None,
                **_BOOL_OR_WORD,
            )
        else:
            group.addoption(
                option.flag,
                default=None,
                metavar=option.metavar or option.name.upper(),
                help=option.help,
            )
            parser.addini(option.ini, option.help, default=None)


def _check_ini_names(config: pytest.Config) -> None:
    """Refuse an ini key that starts with ``smtpsink`` and is none of the
    plugin's (``smtpsink_timout``): pytest only warns of it, at the end of
    collection, and the run went on with the default, silently to a reader
    of the summary. In the ini file or in ``-o``."""
    # pytest 9 keeps the ini file's keys, with -o's, in _inicfg (inicfg, a
    # proxy now, warns); earlier ones in inicfg, and -o's apart.
    written = getattr(config, "_inicfg", None)
    if written is None:
        written = getattr(config, "inicfg", {})
    names = set(written) | {
        item.partition("=")[0].strip()
        for item in config.getoption("override_ini", None) or ()
    }
    known = sorted(option.ini for option in _OPTIONS)
    unknown = sorted(
        name
        for name in names
        if name.lower().startswith("smtpsink")
        and name not in known
        and not _registered_ini(config, name)
    )
    if not unknown:
        return
    meant = close_names(unknown, known)
    raise pytest.UsageError(
        f"unknown ini option {unknown[0]!r}"
        + (f" (did you mean {meant[unknown[0]]}?)" if unknown[0] in meant else "")
        + f"; pytest-smtpsink's are {', '.join(known)}"
    )


def _registered_ini(config: pytest.Config, name: str) -> bool:
    """Whether ``name`` is an ini key that another plugin or a conftest
    registered (``smtpsink_extra_users``): pytest knows it, and so its value
    reads (getini raises ValueError for a key no one registered)."""
    try:
        config.getini(name)
    except ValueError:
        return False
    return True


def _raw_value(config: pytest.Config, option: _Option) -> tuple[Any, str]:
    """The option's value and where it came from (for error messages)."""
    value = config.getoption(option.flag)
    if value is not None:
        return value, option.flag
    # "-o key=value" is an ini value to pytest; an error about it must not
    # send the reader to an ini file that does not have it.
    overrides = getattr(config.option, "override_ini", None) or ()
    given = any(entry.partition("=")[0].strip() == option.ini for entry in overrides)
    return config.getini(option.ini), f"{option.ini} ({'-o' if given else 'ini'})"


def _quoted_ini_hint(config: pytest.Config, error: str) -> str:
    """For an error about an ini value in quotes: an INI file keeps them
    (``smtpsink_hostname = "mail.test"``), where the TOML the docs show
    takes them away; the value copied from one to the other fails."""
    for option in _OPTIONS:
        if error.startswith(f"{option.ini} (ini)"):
            value = config.getini(option.ini)
            if (
                isinstance(value, str)
                and len(value) >= 2
                and value[0] == value[-1]
                and value[0] in "'\""
            ):
                # Not the value again: a relay URL in it holds a password.
                return " (an ini file takes a value without quotes: remove them)"
    return ""


def _from_ini_file(config: pytest.Config, path: str, source: str) -> str:
    """``path`` as given, or, if it is relative and came from the ini file,
    taken from that file's directory: as pytest takes its own path options
    (testpaths, cache_dir), so that a run started from a sub-directory finds
    the same files."""
    if (
        source.endswith(("(ini)", "(-o)"))
        and config.inipath is not None
        and not path.startswith("~")  # a home directory: absolute once expanded
        and not Path(path).is_absolute()
    ):
        return str(config.inipath.parent / path)
    return path


def _parse_bool(text: str) -> bool:
    """The words pytest takes for a bool ini value."""
    word = text.lower()
    if word in ("y", "yes", "t", "true", "on", "1"):
        return True
    if word in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false, yes/no, on/off, 1/0)")


#: addini's type for a bool key: a bool or a word (``"yes"``), where pytest
#: takes a union (9.2 on); a string before it, where native TOML has no bool.
_BOOL_OR_WORD: dict[str, Any] = (
    {"type": bool | str} if pytest.version_tuple[:2] >= (9, 2) else {}
)


def _bool_option(config: pytest.Config, name: str) -> bool:
    """A bool option: the flag when given, else the ini key (default False).

    Raises `pytest.UsageError` naming the ini key when its value is no bool.
    """
    option = next(o for o in _OPTIONS if o.name == name)
    value, source = _raw_value(config, option)
    if value is None or isinstance(value, bool):  # the flag, or TOML (9.2 on)
        return bool(value)
    text = str(value).strip()
    if not text:
        return False
    try:
        return _parse_bool(text)
    except ValueError as error:
        raise pytest.UsageError(f"{source}: {error}") from None


def _parse_int(text: str) -> int:
    try:
        return parse_whole(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def _parse_seconds(text: str) -> float:
    try:
        value = parse_number(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a number of seconds (a decimal number above 0, "
            "such as 10 or 0.5)"
        ) from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a number of seconds > 0, got {text!r}")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "port": _parse_int,
    "max_size": parse_size,
    "timeout": _parse_seconds,
    # A word, as --smtpsink-report and --smtpsink-lint take theirs: any case.
    "event_loop": str.lower,
}


_PLUGIN_ONLY = frozenset(
    {"timeout", "report", "save_dir", "save", "summary", "lint", "spamd"}
)
#: Options for every TLS sink (the default sink has no TLS): see _SinkPool.
_TLS_FILES = frozenset({"tls_cert", "tls_key"})
_TLS_FILES_KEY = pytest.StashKey[dict[str, str]]()


_Choice = TypeVar("_Choice", bound=str)


def _choice(
    config: pytest.Config, name: str, choices: tuple[_Choice, ...], default: _Choice
) -> _Choice:
    option = next(o for o in _OPTIONS if o.name == name)
    value, source = _raw_value(config, option)
    value = (str(value or "").strip() or default).lower()  # blank: the default
    for choice in choices:
        if choice == value:
            return choice
    raise pytest.UsageError(
        f"{source}: must be one of {', '.join(choices)}, got {value!r}"
        f"{meant_choice(value, choices)}"
    )


def _read_reporting(config: pytest.Config) -> None:
    config.stash[_REPORT_KEY] = _choice(config, "report", _report.REPORT_MODES, "full")
    config.stash[_LINT_KEY] = _choice(config, "lint", _LINT_LEVELS, "off")
    spamd, source = _raw_value(config, next(o for o in _OPTIONS if o.name == "spamd"))
    if spamd:
        from . import _spam

        try:
            _spam.parse_address(str(spamd))
        except ValueError as error:
            raise pytest.UsageError(f"{source}: {error}") from None
        config.stash[_SPAMD_KEY] = (_spam.use_spamd(str(spamd).strip()),)
    save_mode = _choice(config, "save", _report.SAVE_MODES, "failed")
    directory, directory_source = _raw_value(
        config, next(o for o in _OPTIONS if o.name == "save_dir")
    )
    if directory:
        # "~/mail" from an ini file (or after "=", where shells leave it):
        # not a directory named "~".
        try:
            directory = str(Path(str(directory)).expanduser())
            directory = _from_ini_file(config, directory, directory_source)
        except RuntimeError as error:  # ~nosuchuser
            raise pytest.UsageError(f"{directory_source}: {error}") from None
    if (
        directory
        and Path(str(directory)).exists()
        and not Path(str(directory)).is_dir()
    ):
        # Found now, not at the first failed test's teardown.
        raise pytest.UsageError(
            f"{directory_source}: {str(directory)!r} exists and is not a directory"
        )
    if directory and _runs_tests(config):
        # Made now, so that a directory that cannot be (a path under a file,
        # under /proc, without permission) is said at the start rather than
        # found missing after the run. Not by a run that runs no test
        # (--collect-only, --fixtures): it changes nothing there.
        try:
            Path(str(directory)).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise pytest.UsageError(
                f"{directory_source}: cannot make the directory {str(directory)!r}: "
                f"{error.strerror or error}"
            ) from None
        from ._html import foreign_index

        if foreign_index(Path(str(directory))):
            raise pytest.UsageError(
                f"{directory_source}: {str(directory)!r} holds an index.html that "
                "pytest-smtpsink did not write, which the run's index would "
                "replace: give it a directory of its own"
            )
    if directory and not hasattr(config, "workerinput") and _runs_tests(config):
        # The run's, its xdist workers' too: the controller holds it. Not
        # for a run that saves nothing (--help, --co, an IDE's collection
        # while a run goes on).
        from ._files import DirectoryInUse, lock_directory

        try:
            lock = lock_directory(Path(str(directory)))
        except DirectoryInUse:
            raise pytest.UsageError(
                f"{directory_source}: another run is saving to "
                f"{str(directory)!r} now (a pytest run or an smtpsink command); "
                "each would replace and remove the other's files: give each "
                "run a directory of its own (under tox: mail/{envname})"
            ) from None
        if lock is not None:
            config.stash[_SAVE_LOCK_KEY] = lock
    save_option = next(o for o in _OPTIONS if o.name == "save")
    chosen, source = _raw_value(config, save_option)
    if chosen and not directory:
        raise pytest.UsageError(
            f"{source}: saving needs a directory: add --smtpsink-save-dir=DIR "
            "(ini: smtpsink_save_dir)"
        )
    config.stash[_SAVE_KEY] = (
        (Path(str(directory)).resolve(), save_mode) if directory else None
    )


def _runs_tests(config: pytest.Config) -> bool:
    """Whether this run may run tests, and so save their mail: not with
    --help, --version, --collect-only, --setup-only, --setup-plan,
    --fixtures, --fixtures-per-test or --markers."""
    option = config.option
    return not any(
        getattr(option, name, False)
        for name in (
            "help",
            "version",
            "collectonly",
            "setuponly",
            "setupplan",
            "showfixtures",
            "show_fixtures_per_test",
            "markers",
        )
    )


#: Settings whose absence is an error of another: named by that one.
_NEEDED_BY = {"relay_to": "relay"}
#: The API's spellings in settings errors, as the plugin's options say them.
_PLUGIN_SPELLING = {
    "relay needs relay_to=REGEX": (
        "needs --smtpsink-relay-to=REGEX (ini: smtpsink_relay_to)"
    ),
    "relay=URL": "--smtpsink-relay=URL (ini: smtpsink_relay)",
    "relay_allow_remote=True": (
        "--smtpsink-relay-allow-remote (ini: smtpsink_relay_allow_remote)"
    ),
    "is the key of tls_cert; give tls_cert too": (
        "is the key of --smtpsink-tls-cert; give --smtpsink-tls-cert too "
        "(ini: smtpsink_tls_cert)"
    ),
    "(no tls_key given:": "(no --smtpsink-tls-key given:",
    # The options are for every TLS sink; a context is a marker's business.
    ", or load it yourself into tls_context=": "",
}


def _read_options(config: pytest.Config) -> tuple[SinkSettings, float]:
    """Settings of the default sink and the default wait timeout.

    Raises `pytest.UsageError` naming the option (or ini key) at fault.
    """
    changes: dict[str, Any] = {}
    tls_files: dict[str, str] = {}
    sources: dict[str, str] = {}
    timeout = DEFAULT_TIMEOUT
    for option in _OPTIONS:
        value, source = _raw_value(config, option)
        if value is None or str(value).strip() == "":  # blank: the default
            continue
        if option.kind == "bool":
            value = _bool_option(config, option.name)
        else:
            try:
                value = _PARSERS.get(option.name, str)(str(value).strip())
            except ValueError as error:
                raise pytest.UsageError(f"{source}: {error}") from None
        if option.name in _PLUGIN_ONLY:
            if option.name == "timeout":
                timeout = value
            continue
        sources[option.name] = source
        if option.name in _TLS_FILES:
            tls_files[option.name] = _from_ini_file(config, value, source)
            continue
        changes[option.name] = value
    try:
        settings = SinkSettings(**changes)
        if tls_files:  # checked now: a missing file or a wrong key fails the run
            settings.replace(tls="starttls", **tls_files)
    except SettingsError as error:
        # A setting that was not given is named by the one that needs it
        # (relay needs relay_to), as the user wrote that one.
        source = sources.get(error.setting) or sources.get(
            _NEEDED_BY.get(error.setting, ""),
            f"--smtpsink-{error.setting.replace('_', '-')}",
        )
        message = str(error).split(": ", 1)[1]
        for api, ours in _PLUGIN_SPELLING.items():
            message = message.replace(api, ours)
        raise pytest.UsageError(f"{source}: {message}") from None
    config.stash[_TLS_FILES_KEY] = tls_files
    return settings, timeout


# -- configuration, marker, header ------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_OUTER_ITEM_KEY] = _RUNNING.item
    config.addinivalue_line(
        "markers",
        "smtpsink(**settings): give this test's smtpsink fixture a sink with these "
        # Every field: a hand-written list left out idle_timeout, relay= ...
        "settings ("
        + ", ".join(f"{field.name}=" for field in dataclasses.fields(SinkSettings))
        + "); one server per distinct set, shared by the tests that ask for it.",
    )
    config.addinivalue_line(
        "markers",
        "smtpsink_fault(kind, *args, **kwargs): inject a fault into this test's "
        "smtpsink: kind is fail, disconnect, delay, hang, drop, limit or hide and "
        "the rest are that method's arguments, e.g. "
        "smtpsink_fault('fail', 'MAIL', 451, times=2). Several may be stacked.",
    )
    config.addinivalue_line(
        "markers",
        "smtpsink_lint(severity=None, *, ignore=()): check this test's captured "
        "mail at teardown as --smtpsink-lint does, at this severity ('off' to "
        "skip; by default the run's --smtpsink-lint level, else 'error'), "
        "leaving out the problem codes in ignore.",
    )
    try:
        _check_ini_names(config)
        settings, timeout = _read_options(config)
        _read_reporting(config)
    except pytest.UsageError as error:
        raise pytest.UsageError(
            f"{error}{_quoted_ini_hint(config, str(error))}"
        ) from None
    save = config.stash[_SAVE_KEY]
    config.stash[_SAVE_ROOT_KEY] = save[0] if save is not None else None
    workerinput = getattr(config, "workerinput", None)
    started = workerinput.get(_STARTED_INPUT) if isinstance(workerinput, dict) else None
    # The run's start, the controller's under xdist: what a save directory
    # holds from before it is an earlier run's.
    config.stash[_STARTED_KEY] = started if isinstance(started, float) else time.time()
    config.stash[_SAVE_WORKER_KEY] = (
        str(workerinput.get("workerid", "worker"))
        if isinstance(workerinput, dict) and workerinput.get(_EACH_INPUT)
        else None
    )
    if config.getoption("setuponly", False):
        # --setup-only and --setup-plan run no test: a test "passing" so
        # must not remove the saved mail of the last run that did.
        config.stash[_SAVE_KEY] = None
    summary = _bool_option(config, "summary")
    # Workers read it too: they only count mail per test when it is shown.
    config.stash[_SUMMARY_KEY] = bool(summary)
    if summary:
        config.pluginmanager.register(
            _PerTestSummary(
                config.getoption("verbose", 0) > 0,
                each=config.getoption("dist", "no") == "each",
            ),
            "smtpsink-summary",
        )
    if not hasattr(config, "workerinput"):
        # Where reports of every worker meet: mail a relay did not deliver
        # is said at the end of the run, the tests having passed or not.
        config.pluginmanager.register(_NotRelayedSummary(), "smtpsink-not-relayed")
    save = config.stash[_SAVE_KEY]
    if save is not None and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_NotSavedSummary(), "smtpsink-not-saved")
        # One index.html per run, written where reports of every worker meet.
        from ._html import IndexWriter

        config.pluginmanager.register(
            IndexWriter(
                save[0],
                each=config.getoption("dist", "no") == "each",
                started=config.stash[_STARTED_KEY],
            ),
            "smtpsink-index",
        )
    config.stash[_DEFAULTS_KEY] = settings
    config.stash[_TIMEOUT_KEY] = timeout
    pool = _SinkPool(settings, config.stash[_TLS_FILES_KEY])
    # For the error, should a fixed port be taken. An xdist worker's config
    # has workerinput (not the environment: a pytester run inside a worker
    # inherits that).
    pool.xdist_worker = hasattr(config, "workerinput")
    if settings.port:
        port_option = next(o for o in _OPTIONS if o.name == "port")
        pool.port_source = _raw_value(config, port_option)[1]
        workers = config.getoption("numprocesses", None)  # an int by now
        if not pool.xdist_worker and isinstance(workers, int) and workers > 1:
            # Said once, now: each worker would fail its tests one by one.
            raise pytest.UsageError(
                f"{pool.port_source}: port {settings.port} cannot serve {workers} "
                "xdist workers, which each start their own sink: use 0 (a free "
                "port per worker), or -n 1"
            )
    config.stash[_POOL_KEY] = pool


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller, before a worker starts: under
    ``--dist each`` every worker runs every test, and each must save its
    files apart from the others' (they replaced one another's)."""
    node.workerinput[_EACH_INPUT] = node.config.getoption("dist", "no") == "each"
    node.workerinput[_STARTED_INPUT] = node.config.stash[_STARTED_KEY]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Never collect the copies of attachments under --smtpsink-save-dir
    (``<dir>/<test>/NNNN-attachments/``): a mailed ``test_x.py``,
    ``conftest.py`` or ``test_x.txt`` (a doctest) is the mail's, not the
    project's. Also in a run without the option (often given in CI only):
    the test's ``smtpsink.json`` beside the folder says what it is, or,
    should writing the attachments have failed before that record was
    written, the messages and transcripts saved beside it, named as the
    sink names them."""
    name = collection_path.name
    if not (name.endswith("-attachments") and name[:4].isdigit()):
        return None  # nearly every path: no stash lookup, no resolve()
    root = config.stash.get(_SAVE_ROOT_KEY, None)
    if root is not None and collection_path.parent.parent.resolve() == root:
        return True
    from ._files import holds_saved_mail
    from ._html import RECORD_NAME

    parent = collection_path.parent
    if (parent / RECORD_NAME).is_file() or holds_saved_mail(parent):
        return True
    return None


#: Markers that configure the ``smtpsink`` fixture's sink and nothing else.
_FIXTURE_MARKERS = {
    "smtpsink": "smtpsink_factory(**settings)",
    "smtpsink_fault": "box.fail(...), box.hang(...) and the like",
}


def pytest_collection_finish(session: pytest.Session) -> None:
    # Every xdist worker collects the same tests, so each decides alike.
    if session.config.stash.get(_SAVE_KEY, None) is not None:
        session.config.stash[_SHARED_NAMES_KEY] = _report.sharing_names(
            item.nodeid for item in session.items
        )


@pytest.hookimpl(tryfirst=True)  # before pytest sets up the fixtures
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Note which test runs (see `_running_item`) and when its set-up began
    (see `_open_view`).

    Hold a warning of a test's own smtpsink or smtpsink_fault marker
    when the test does not ask for the ``smtpsink`` fixture (of its
    smtpsink_lint marker when it asks for neither that nor
    ``smtpsink_factory``): it would do nothing, and a test meant to run
    against a fault would pass without one. (Only the test's own: a
    module's or class's marker may well cover tests that use other sinks.)
    Said at teardown (`pytest_runtest_teardown`) unless the test got the
    fixture after all, by request.getfixturevalue(); not at collection,
    so that under ``-W error`` the test errors with the warning, rather
    than the run with an internal error."""
    __tracebackhide__ = True  # under -W error: the warning, not this hook
    _RUNNING.item = item
    item.stash[_SET_UP_AT_KEY] = time.time()
    # pytest-rerunfailures counts a test's runs across xdist workers (one
    # that crashed has the test run again on another): its count first.
    counted = getattr(item, "execution_count", None)
    if isinstance(counted, int) and not isinstance(counted, bool) and counted > 0:
        item.stash[_ATTEMPT_KEY] = counted
    else:
        item.stash[_ATTEMPT_KEY] = item.stash.get(_ATTEMPT_KEY, 0) + 1
    item.stash[_RUN_REPORTS_KEY] = []
    if _SET_UP_DONE_KEY in item.stash:  # set up before: a rerun
        for key in _PER_RUN_KEYS:
            if key in item.stash:
                del item.stash[key]
    own = item.own_markers
    if not own:
        return
    used = getattr(item, "fixturenames", ("smtpsink",))
    held: list[tuple[frozenset[str], str]] = []
    if "smtpsink_lint" in {mark.name for mark in own} and not (
        "smtpsink" in used or "smtpsink_factory" in used
    ):
        # It lints the mail of both fixtures' sinks; with neither, nothing.
        held.append(
            (
                frozenset({"smtpsink", "smtpsink_factory"}),
                "@pytest.mark.smtpsink_lint does nothing here: it lints the mail "
                f"of the smtpsink and smtpsink_factory fixtures, and {item.name} "
                "uses neither. Request one, or call assert_clean() on the "
                "mailbox the test uses.",
            )
        )
    for name in sorted({mark.name for mark in own} & _FIXTURE_MARKERS.keys()):
        # Held even when the test asks for smtpsink: a conftest's smtpsink
        # fixture that does not ask for the plugin's replaces it, and the
        # marker then did nothing, silently (the teardown sees which ran).
        held.append(
            (
                frozenset({"smtpsink"}),
                f"@pytest.mark.{name} does nothing here: it configures the "
                f"smtpsink fixture, which {item.name} does not use. Request "
                f"smtpsink, or use {_FIXTURE_MARKERS[name]} on the sink the "
                "test uses."
                if "smtpsink" not in used
                else f"@pytest.mark.{name} does nothing here: it configures "
                "the plugin's smtpsink fixture, and the smtpsink that "
                f"{item.name} uses is another (a conftest's fixture of that "
                "name that does not ask for the plugin's). Ask for it in that "
                f"fixture (def smtpsink(smtpsink): ...), or use "
                f"{_FIXTURE_MARKERS[name]} there.",
            )
        )
    if held:
        # Said at the test's end: a fixture of the user's may still ask
        # for smtpsink with request.getfixturevalue().
        item.stash[_UNUSED_MARKERS_KEY] = held


def _shown_positional(value: object) -> str:
    """A setting given without its keyword, for the error that says so: a
    word that is a setting's value (``'starttls'``) as it is; any other
    text or collection by its type, as it may be a relay URL or an auth
    pair, password and all."""
    if isinstance(value, str) and value.lower() in _SETTING_WORDS:
        return repr(value)
    if value is None or isinstance(value, (int, float)):  # bool too
        return shown_argument(value)
    return f"{an(type(value).__name__)} (not shown: it may hold a password)"


#: The values of settings that are words (tls=, auth=, event_loop=).
_SETTING_WORDS = frozenset({"starttls", "implicit", "any", "asyncio", "uvloop", "auto"})


def _after_teardown(views: list[Mailbox], waited: set[int], began: float) -> None:
    """The relay's end of a test, after the fixtures' teardown: a fixture's
    teardown may send (an outbox flushed on shutdown). Mail already waited
    for is not waited for twice, and both waits together take no more than
    the grace (the cut at the end adds at most _CUT_GRACE, for its
    outcomes)."""
    left = RELAY_GRACE - (time.monotonic() - began)
    if waited:
        # Mail still pending after the first wait was cut from the relay as
        # the teardown began (end_relaying_of_test): its outcome ("not
        # relayed") comes at once, unless an upstream hangs with no rule of
        # the test's on it. Waited for briefly, so that the report says so
        # rather than "pending".
        left, waited = max(left, _CUT_GRACE), set()
    with contextlib.suppress(Exception):
        _settle_relays(views, waited, max(0.0, left))
    # What the fixtures' teardowns queued and the grace did not see sent is
    # cut too: relayed later, it reached the upstream during the next test
    # (the cut as the teardown began saw none of it).
    _cut_relays(views)
    relaying = [view for view in views if view.settings.relay is not None]
    if relaying:
        with contextlib.suppress(Exception):
            _settle_relays(relaying, set(), _CUT_GRACE)


def _interrupted_teardown(views: list[Mailbox], interrupted: BaseException) -> None:
    """Raise ``interrupted`` (a timeout's failure, Ctrl-C) once pytest's
    teardown has run, the mail still to relay cut first (without the wait
    for it), as a teardown that ran to its end cuts it: relayed later, it
    reached the upstream during the next test."""
    __tracebackhide__ = True
    _cut_relays(views)
    raise interrupted


def _cut_relays(views: list[Mailbox]) -> None:
    """End the relaying of this test's mail now, without waiting for it."""
    with contextlib.suppress(Exception):
        from ._server import end_relaying_of_test

        for view in views:
            if view.settings.relay is not None:
                end_relaying_of_test(view.sink)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """The warnings `pytest_runtest_setup` held, for markers whose fixture
    a test that ran to its end did not use after all (one skipped or failed
    may have stopped before asking for it); after the fixtures' teardown,
    which a warning raised under ``-W error`` must not cut short (the test
    then errors at teardown with it)."""
    __tracebackhide__ = True
    views = item.stash.get(_VIEWS_KEY, None)
    waited: set[int] = set()
    began = time.monotonic() if views else 0.0
    # A timeout plugin's failure (pytest-timeout raises it from a signal
    # handler, wherever the test's time ran out) or Ctrl-C during the wait
    # below: raised once pytest's own teardown has run. Raised here, it
    # skipped it: the test's fixtures were never finalized, and the next
    # test failed at setup ("previous item was not torn down properly").
    interrupted: BaseException | None = None
    if views:
        # Before the fixtures close the views: a test's upstream sink would
        # drop a connection its fault rule (a delay) still holds, and the
        # relay's outcome would depend on how far it had got.
        try:
            with contextlib.suppress(Exception):  # never an INTERNALERROR
                waited = _settle_relays(views)
        except BaseException as error:
            interrupted = error
        # The connections the test's fault rules hold (a hang, a delay) are
        # closed before any fixture's teardown: pytest-asyncio's loop goes
        # before the sink's fixture, cancelling a client task still held,
        # and aiosmtplib then waited for the reply to its QUIT on that
        # connection, its whole timeout (60 s by default). The rules stay
        # until the sink's fixture ends: a fixture's teardown that sends (an
        # outbox flushed) still meets them.
        try:
            # First: a message whose held connection closes would go again
            # on a new one, reaching the upstream in the next test.
            _cut_relays(views)
            with contextlib.suppress(Exception):
                from ._fault_api import release_held

                for view in views:
                    release_held(view)
        except BaseException as error:
            interrupted = interrupted or error
    try:
        result = yield
    except BaseException as error:
        # Raised even when a fixture's teardown failed too: it took the
        # interrupt's place, and a Ctrl-C let the run go on.
        if interrupted is not None:
            _interrupted_teardown(views or [], interrupted)
        if views:
            if isinstance(error, Exception):
                # What the teardown queued went on being relayed, into the
                # next test's upstream.
                _after_teardown(views, waited, began)
            else:  # Ctrl-C in a teardown: cut, no wait before stopping
                _cut_relays(views)
        raise
    if interrupted is not None:
        _interrupted_teardown(views or [], interrupted)
    if views:
        _after_teardown(views, waited, began)
    held = item.stash.get(_UNUSED_MARKERS_KEY, None)
    if held and item.stash.get(_CALL_PASSED_KEY, False):
        used = item.stash.get(_USED_KEY, set())
        for fixtures, text in held:
            if not fixtures & used:
                item.warn(pytest.PytestWarning(text))
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    # A run inside a test's (pytester's in-process runs) ends: that test's
    # own fixtures may still ask which test runs. Only if this run's
    # configure got that far: one that failed before it (another plugin's
    # UsageError) changed nothing to restore.
    if _OUTER_ITEM_KEY in config.stash:
        _RUNNING.item = config.stash[_OUTER_ITEM_KEY]
    previous_spamd = config.stash.get(_SPAMD_KEY, None)
    if previous_spamd is not None:
        from . import _spam

        _spam.use_spamd(previous_spamd[0])
    pool = config.stash.get(_POOL_KEY, None)
    if pool is not None:
        pool.stop_all()
    lock = config.stash.get(_SAVE_LOCK_KEY, None)
    if lock is not None:
        from ._files import unlock_directory

        del config.stash[_SAVE_LOCK_KEY]
        unlock_directory(lock)  # the save directory is free for another run


def pytest_report_header(config: pytest.Config) -> str:
    settings = config.stash[_DEFAULTS_KEY]
    port = (
        f"port {settings.port} (started on first use)"
        if settings.port
        else "a free port (per worker, started on first use)"
    )
    return (
        f"smtpsink: {settings.host}, {port}, "
        f"greeting {settings.hostname}, max size {_format_size(settings.max_size)}"
        + (
            ""
            if ipaddress.ip_address(settings.host).is_loopback
            else "\nsmtpsink: WARNING: not a loopback address; other hosts can send to the sink"
        )
        + (_relay_header(settings) if settings.relay is not None else "")
    )


def _relay_header(settings: SinkSettings) -> str:
    from ._relay import masked_url

    assert settings.relay is not None
    return (
        f"\nsmtpsink: relaying to {masked_url(settings.relay)} the recipients "
        f"matching {settings.relay_to}"
    )


def _format_size(size: int) -> str:
    if size == 0:
        return "unlimited"
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


#: Sinks a session keeps running at most (`_SinkPool._let_one_go`).
_KEPT_SINKS = 32


class _SinkPool:
    """One running sink per distinct settings, started on first use; at
    most `_KEPT_SINKS`, the least recently used let go first."""

    def __init__(
        self, defaults: SinkSettings, tls_files: dict[str, str] | None = None
    ) -> None:
        self.defaults = defaults
        self._sinks: dict[SinkSettings, SMTPSink] = {}
        # --smtpsink-tls-cert/-key, for TLS sinks that bring no certificate.
        self._tls_files = tls_files or {}
        self._with_files: dict[SinkSettings, SinkSettings] = {}
        # The sink of get() without settings, once started: nearly every
        # test asks for it, and hashing the settings to find it again is a
        # measurable part of a fast test's setup.
        self._default: SMTPSink | None = None
        #: Where a fixed port of the default sink was asked for, and
        #: whether this process is one of several xdist workers sharing it.
        self.port_source = "--smtpsink-port"
        self.xdist_worker = False

    def get(self, settings: SinkSettings | None = None) -> SMTPSink:
        if settings is None:
            sink = self._default
            if sink is None:
                sink = self._default = self._get(self.defaults)
            else:
                self._check_alive(sink)
            return sink
        return self._get(settings)

    def _get(self, settings: SinkSettings) -> SMTPSink:
        if (
            self._tls_files
            and settings.tls is not None
            and settings.tls_cert is None
            and settings.tls_context is None
        ):
            # Cached: replace() loads the files again to check them.
            with_files = self._with_files.get(settings)
            if with_files is None:
                with_files = settings.replace(**self._tls_files)
                self._with_files[settings] = with_files
            settings = with_files
        if settings != self.defaults and settings.port == self.defaults.port != 0:
            # A fixed port given by option belongs to the default sink; sinks
            # with other settings take free ports.
            settings = settings.replace(port=0)
        from ._server import SinkError, SMTPSink, bind_errno

        sink = self._sinks.get(settings)
        if sink is None:
            sink = SMTPSink(settings)
            try:
                sink.start()
            except SinkError as error:
                problem = str(error)
                cause = error.__cause__
                in_use = cause is not None and bind_errno(cause) == errno.EADDRINUSE
            else:
                self._sinks[settings] = sink
                # As many as it takes: after a test that used more than
                # the cap, one each time left the pool above it for good.
                while len(self._sinks) > _KEPT_SINKS and self._let_one_go(sink):
                    pass
                return sink
            holder = next(
                (
                    other
                    for other in self._sinks.values()
                    if in_use
                    and other.port == settings.port
                    and other.settings.host == settings.host
                ),
                None,
            )
            if holder is not None:
                # The user looked for another process: it is this run's own
                # sink, kept for the rest of the session.
                held = holder.settings.describe() or "the default settings"
                problem += (
                    f" (this session's sink with other settings holds it, "
                    f"{held}, for the rest of the run: give these settings "
                    "another port, or leave port= out for a free one)"
                )
            elif settings.port != 0 and settings.port == self.defaults.port:
                problem += f" (the port of {self.port_source}"
                if self.xdist_worker:
                    problem += "; each xdist worker needs a port of its own: use 0"
                problem += ")"
            elif settings.port != 0 and self.xdist_worker:
                # port= of the factory or the marker: every worker starts
                # the same sink, and only the first gets the port.
                problem += (
                    " (each xdist worker starts its own sinks, and another may "
                    "hold this port: leave port= out for a free one)"
                )
            # Outside the except block: the report shows one sentence, not
            # the SinkError "during handling of" another.
            pytest.fail(
                f"pytest-smtpsink could not start a sink: {problem}", pytrace=False
            )
        else:
            self._check_alive(sink)
            if len(self._sinks) > 1:
                # The most recently used last: `_let_one_go` takes the first.
                self._sinks[settings] = self._sinks.pop(settings)
        return sink

    def _let_one_go(self, started: SMTPSink) -> bool:
        """Stop the sink least recently asked for, but not the default sink,
        one the running test uses, nor the one just ``started`` (its view is
        not made yet): with none to let go, more run (False). Each sink keeps two
        threads and four file descriptors: a suite whose tests each ask for
        other settings (a relay to a port of their own, say) ran out of file
        descriptors after some 250 of them. A sink let go is started anew if
        asked for again."""
        item = _RUNNING.item
        in_use = {
            id(view.sink)
            for view in (item.stash.get(_VIEWS_KEY, []) if item is not None else [])
        }
        in_use.add(id(started))
        for settings, sink in self._sinks.items():
            if sink is not self._default and id(sink) not in in_use:
                del self._sinks[settings]
                from ._server import abort_relaying

                abort_relaying(sink)  # an earlier test's mail, reported
                sink.stop()
                # Its last test's mail, reported: the views of the tests
                # that used it (kept in their items' stash) keep the sink
                # alive, and it held the mail for the rest of the session.
                sink.clear()
                return True
        return False

    @staticmethod
    def _check_alive(sink: SMTPSink) -> None:
        try:
            sink.check_alive()
        except Exception as error:
            # Imported here: an import statement costs even when the module
            # is loaded, and this runs before every test.
            from ._server import SinkError

            if not isinstance(error, SinkError):
                raise
            # Fail now, not when the test's app hangs or a read raises.
            import traceback

            failure = error.__cause__
            cause = (
                "\n" + "".join(traceback.format_exception(failure))
                if failure is not None
                else ""
            )
            problem = f"pytest-smtpsink: the sink {sink.url} is unusable: {error}"
        else:
            if sink.running:
                return
            # Stopped by a test (smtpsink_server.stop(), as the docs show
            # for a sink of one's own): the app then met a refused
            # connection, and assert_sent blamed its host and port.
            problem = (
                f"pytest-smtpsink: the sink {sink.url} was stopped during the "
                "run (smtpsink_server.stop()?), and the tests after it cannot "
                "use it. The plugin stops its sinks at the end of the session; "
                "for a sink of your own to start and stop, make an SMTPSink() "
                "(see the Reference)"
            )
            cause = ""
        pytest.fail(problem + cause, pytrace=False)

    def stop_all(self) -> None:
        self._default = None
        sinks, self._sinks = list(self._sinks.values()), {}
        if sinks:
            from ._server import abort_relaying

            for sink in sinks:  # all at once: none waits on the others
                abort_relaying(sink)
        for sink in sinks:
            sink.stop()


#: The relay settings that mean nothing without ``relay``.
_RELAY_DETAILS = ("relay_to", "relay_allow_remote", "relay_timeout")


def _settings_for(
    pool: _SinkPool, source: str, overrides: dict[str, Any], *, pytrace: bool = False
) -> SinkSettings:
    """The settings ``overrides`` make, or a failure naming ``source``; with
    ``pytrace``, pointing at the test's line (a factory call: a test may
    make several)."""
    __tracebackhide__ = True
    # --full-trace shows this frame's variables: the credentials leave them
    # at once (an auth table, a relay URL's password).
    held = Undisplayed(overrides)
    del overrides
    if "relay" in held.value and held.value["relay"] is None:
        # relay=None keeps this sink (a test's own upstream, say) out of a
        # run's --smtpsink-relay: the rest of that relay goes with it.
        fields = SinkSettings.__dataclass_fields__
        held = Undisplayed(
            {
                **{name: fields[name].default for name in _RELAY_DETAILS},
                **held.value,
            }
        )
    try:
        return pool.defaults.replace(**held.value)
    except (SettingsError, TypeError) as error:
        problem = str(error)
    # Outside the except block: the report shows one sentence, not the
    # SettingsError "during handling of" another.
    pytest.fail(f"{source}: {problem}", pytrace=pytrace)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtpsink_server(pytestconfig: pytest.Config) -> SMTPSink:
    """The session's default `SMTPSink` (one per xdist worker), started on first use."""
    return pytestconfig.stash[_POOL_KEY].get()


def _open_view(config: pytest.Config, sink: SMTPSink, item: pytest.Item) -> Mailbox:
    view = sink.view()
    stash = item.stash
    views = stash.get(_VIEWS_KEY, None)
    if views is None:
        views = stash[_VIEWS_KEY] = []
    first = next((opened for opened in views if opened.sink is sink), None)
    set_up_at = stash.get(_SET_UP_AT_KEY, None)
    if set_up_at is not None:
        from . import _mailbox  # loaded with the sink

        set_up_done = stash.get(_SET_UP_DONE_KEY, None)
        _mailbox.note_set_up_mail(view, set_up_at, set_up_done, first)
    # The previous test's mail is of no more use: drop it so that memory
    # stays flat over a long session. Only on the test's first view of this
    # sink: a second view (smtpsink_factory called twice with the same
    # settings, or with the marker's) must not empty the first one.
    if first is None:
        sink.forget_before(view)
    view.default_timeout = config.stash[_TIMEOUT_KEY]
    views.append(view)
    from . import _mailbox  # loaded with the sink

    _mailbox.share_test(view, views)
    return view


def _running_item() -> pytest.Item:
    """The test being set up or run, for the ``smtpsink`` fixture.

    Not its ``request`` argument: pytest (9) makes a new fixture definition
    for every use of ``request``, three per test here, which cost 40 µs of
    the fixture's 140 µs set-up (measured, 2 cores); so does any fixture
    that takes ``request`` (``pytestconfig`` does). `pytest_runtest_setup`
    notes the test before pytest sets up its fixtures, and a run inside a
    test (pytester) gives back the outer one when it ends."""
    item = _RUNNING.item
    if item is None:  # never in a test's set-up, call or teardown
        raise RuntimeError("the smtpsink fixture was asked for outside a test")
    return item


@pytest.fixture
def smtpsink() -> Iterator[Mailbox]:
    """This test's mailbox on the default sink (or on the sink that
    ``@pytest.mark.smtpsink(...)`` asks for): empty when the test starts."""
    item = _running_item()
    config = item.config
    pool = config.stash[_POOL_KEY]
    item.stash.setdefault(_USED_KEY, set()).add("smtpsink")
    lint = _lint_choice(item)
    # Held where --full-trace shows no variable of it (an auth table, a
    # relay URL's password): see `_settings_for`.
    marked = Undisplayed(item.get_closest_marker("smtpsink"))
    if marked.value is not None:
        if marked.value.args:
            given = ", ".join(map(_shown_positional, marked.value.args))
            pytest.fail(
                f"@pytest.mark.smtpsink takes keyword settings only, got {given} "
                '(e.g. @pytest.mark.smtpsink(tls="starttls"))',
                pytrace=False,
            )
        settings = _settings_for(
            pool, "@pytest.mark.smtpsink", dict(marked.value.kwargs)
        )
        sink = pool.get(settings)
    else:
        # The pool, not getfixturevalue("smtpsink_server"): same sink, and a
        # dynamic fixture lookup is a measurable part of a fast test's cost.
        sink = pool.get()
    view = _open_view(config, sink, item)
    try:
        _apply_fault_markers(item, view)
        yield view
        _enforce_lint(item, view, *lint)
    finally:
        view.close()  # its faults go, even if the test failed


@pytest.fixture
def smtpsink_factory(request: pytest.FixtureRequest) -> Callable[..., Mailbox]:
    """Make mailboxes on sinks with other settings (TLS, AUTH, ...): equal
    settings share one server (at most 32 run at once); every call returns
    a new, empty mailbox.

    For example::

        def test_tls(smtpsink_factory):
            sink = smtpsink_factory(tls="starttls", auth={"ann": "secret"})
    """
    config = request.config
    pool = config.stash[_POOL_KEY]
    request.node.stash.setdefault(_USED_KEY, set()).add("smtpsink_factory")
    lint = _lint_choice(request.node)

    def factory(*args: Any, **settings: Any) -> Mailbox:
        __tracebackhide__ = True
        # --full-trace shows this frame's variables: see `_settings_for`.
        held = Undisplayed(settings)
        del settings
        if args:
            # As the marker says it: a bare "takes 0 positional arguments"
            # named a function of the plugin's, not what to write.
            given = ", ".join(map(_shown_positional, args))
            del args  # a relay URL with its password, for --full-trace
            raise TypeError(
                f"smtpsink_factory() takes keyword settings only, got {given} "
                '(e.g. smtpsink_factory(tls="starttls"))'
            )
        chosen = _settings_for(pool, "smtpsink_factory()", held.value, pytrace=True)
        sink = pool.get(chosen)
        view = _open_view(config, sink, request.node)
        request.addfinalizer(view.close)  # its faults go at the end of the test
        request.addfinalizer(lambda: _enforce_lint(request.node, view, *lint))
        return view

    return factory


def _lint_choice(item: pytest.Item) -> tuple[str, tuple[str, ...]]:
    """The lint level and the codes to ignore for this test: its
    ``@pytest.mark.smtpsink_lint`` markers or ``--smtpsink-lint``. Checked
    as the test starts, so that a bad marker fails it before it runs.

    The closest marker that names a severity sets it; without one, the
    run's level holds (``error`` if the run's lint is off: the marker turns
    it on). The codes every marker (the test's, its class's, its module's)
    ignores are ignored: a marker that only left out one code set the level
    to ``error``, and its other warnings passed under
    ``--smtpsink-lint=warning``; a test's marker dropped its module's
    ``ignore=``."""
    markers = list(item.iter_markers("smtpsink_lint"))
    run_level: str = item.config.stash[_LINT_KEY]
    if not markers:
        return run_level, ()
    severity: str | None = None
    ignore: list[str] = []
    for marker in markers:  # the closest first
        given, codes = _lint_marker(marker)
        if severity is None:
            severity = given
        ignore += [code for code in codes if code not in ignore]
    if severity is None:
        severity = "error" if run_level == "off" else run_level
    return severity, tuple(ignore)


def _lint_marker(marker: pytest.Mark) -> tuple[str | None, tuple[str, ...]]:
    """One ``smtpsink_lint`` marker's severity (None if it gives none) and
    the codes it ignores; a bad one fails the test."""
    severity = marker.kwargs.get("severity", marker.args[0] if marker.args else None)
    unknown = sorted(set(marker.kwargs) - {"severity", "ignore"})
    if marker.args and "severity" in marker.kwargs:
        problem = (
            f"severity given twice: {marker.args[0]!r} by position and "
            f"severity={marker.kwargs['severity']!r}"
        )
    elif len(marker.args) > 1:
        problem = (
            "takes one severity and ignore=(codes...), got "
            f"{', '.join(map(repr, marker.args))}"
        )
    elif unknown:
        problem = f"unknown argument {unknown[0]}=; it takes severity and ignore"
    elif severity is not None and severity not in _LINT_LEVELS:
        problem = (
            f"severity must be one of {', '.join(_LINT_LEVELS)}, got {severity!r}"
            f"{meant_choice(severity, _LINT_LEVELS)}"
        )
    else:
        from ._lint import check_ignore

        try:
            return severity, check_ignore(marker.kwargs.get("ignore", ()))
        except (TypeError, ValueError) as error:
            problem = str(error)
    # Outside the except block: the report shows one sentence.
    pytest.fail(f"@pytest.mark.smtpsink_lint: {problem}", pytrace=False)


def _enforce_lint(
    item: pytest.Item,
    view: Mailbox,
    severity: str,
    ignore: tuple[str, ...],
) -> None:
    """``--smtpsink-lint`` / ``@pytest.mark.smtpsink_lint``: fail at teardown
    if a captured message is badly built. Not after a failed, xfailed or
    skipped test: its own failure (or skip) is the news. Nor after an
    xpassed one: pytest would count the teardown's failure as the expected
    one, a second outcome for one test."""
    stash = item.stash
    if (
        severity == "off"
        or stash.get(_FAILED_KEY, False)
        or stash.get(_OUTCOME_KEY, None) in ("xfailed", "xpassed", "skipped")
    ):
        return
    from ._lint import unclean_report

    messages, _ = view.captured()
    failure = unclean_report(messages, severity, ignore)  # type: ignore[arg-type]
    if failure is not None:
        # Where the check comes from: an ini key set long ago fails a test
        # whose author never asked for it.
        markers = list(item.iter_markers("smtpsink_lint"))
        by_marker = any(
            m.args or m.kwargs.get("severity") is not None for m in markers
        ) or (
            bool(markers) and item.config.stash[_LINT_KEY] == "off"
        )  # a marker without a level keeps the run's (_lint_choice)
        source = (
            "@pytest.mark.smtpsink_lint"
            if by_marker
            else "--smtpsink-lint (ini smtpsink_lint)"
        )
        pytest.fail(
            f"smtpsink lint ({severity}): {failure}\n(checked at the end of the "
            f"test, set by {source}; @pytest.mark.smtpsink_lint('off') exempts "
            "a test or a module, @pytest.mark.smtpsink_lint(ignore=[codes]) some "
            "codes: assert_clean(ignore=...) in the test does not reach this "
            "check)",
            pytrace=False,
        )


def _apply_fault_markers(item: pytest.Item, view: Mailbox) -> None:
    """``@pytest.mark.smtpsink_fault(...)``: module and class markers first,
    then the test's own, top to bottom."""
    for marker in reversed(list(item.iter_markers("smtpsink_fault"))):
        # Imported here, not above: most tests have no such marker, and an
        # import statement costs even when the module is loaded.
        from ._fault_api import apply_marker
        from ._faults import FaultError

        try:
            apply_marker(view, marker.args, dict(marker.kwargs))
        except FaultError as error:
            problem = str(error)
        else:
            continue
        # Outside the except block: the report shows one sentence, not the
        # FaultError "during handling of" another.
        pytest.fail(f"@pytest.mark.smtpsink_fault: {problem}", pytrace=False)


# -- reports: a section on failure, saved files, the terminal summary --------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "teardown":
        # Kept no longer than the run: the reports are pytest's to keep.
        run_reports = [*item.stash.get(_RUN_REPORTS_KEY, []), report]
        item.stash[_RUN_REPORTS_KEY] = []
    elif item.config.stash.get(_SAVE_KEY, None) is not None:
        item.stash.setdefault(_RUN_REPORTS_KEY, []).append(report)
    if report.when == "setup":
        item.stash[_SET_UP_DONE_KEY] = time.time()
    elif report.when == "call" and _UNUSED_MARKERS_KEY in item.stash:
        item.stash[_CALL_PASSED_KEY] = report.passed
    opened = item.stash.get(_VIEWS_KEY, None)
    if not opened or not (report.failed or report.when == "teardown"):
        # A passed setup or call: nothing to add. What a skip or an xfail
        # is called in index.html, should --smtpsink-save=all save it.
        if opened and hasattr(report, "wasxfail"):
            item.stash[_OUTCOME_KEY] = "xfailed" if report.skipped else "xpassed"
        elif opened and report.skipped:
            item.stash[_OUTCOME_KEY] = "skipped"
        if (
            opened
            and (report.skipped or hasattr(report, "wasxfail"))
            and item.config.stash.get(_SAVE_KEY, None) is not None
        ):
            with contextlib.suppress(Exception):  # a reason is a nicety
                item.stash[_SKIP_REASON_KEY] = _report.skip_reason(
                    report, _report.distinct(opened)
                )
        return report
    views = _report.distinct(opened)
    config = item.config
    if report.failed:
        item.stash[_FAILED_KEY] = True
        if report.when == "call":
            item.stash[_FAILED_IN_CALL_KEY] = True
        if config.stash[_SAVE_KEY] is not None and _REASON_KEY not in item.stash:
            try:
                reason = _report.failure_reason(report, views)
            except Exception:  # last resort, as for the section below
                reason = None
            item.stash[_REASON_KEY] = reason
        try:
            text = _report.section_text(views, config.stash[_REPORT_KEY])
        except Exception as error:
            # Last resort (messages are shown safely already): an exception
            # here would be an INTERNALERROR that ends the whole run.
            text = f"could not show the captured mail: {type(error).__name__}: {error}"
        if text is not None:
            report.sections.append((f"Captured email {report.when}", text))
        if config.pluginmanager.hasplugin("html") and config.getoption("htmlpath"):
            # pytest-html is active: only then is it imported.
            from ._html import FRAMES_IN_INDEX, pytest_html_extras

            try:
                extras = pytest_html_extras(
                    views, config.stash.setdefault(_HTML_FRAMES_KEY, [FRAMES_IN_INDEX])
                )
            except Exception as error:  # last resort, as for the section
                extras = []
                report.sections.append(
                    ("smtpsink", f"could not add the mail to the HTML report: {error}")
                )
            if extras:
                report.extras = [*getattr(report, "extras", []), *extras]  # type: ignore[attr-defined]
    if report.when == "teardown":
        failed = item.stash.get(_FAILED_KEY, False)
        save = config.stash[_SAVE_KEY]
        worker = config.stash.get(_SAVE_WORKER_KEY, None)
        hashed = item.nodeid in config.stash.get(_SHARED_NAMES_KEY, set())
        attempt = item.stash.get(_ATTEMPT_KEY, 1)
        if save is not None and not item.stash.get(_CLEANED_KEY, False):
            # An earlier run's files for this test (its first run's, its
            # reruns') would read as this run's in a CI artifact.
            item.stash[_CLEANED_KEY] = True
            with contextlib.suppress(OSError):  # never an INTERNALERROR
                _forget_earlier_runs(config, save[0], item.nodeid)
        # A test that passed saves nothing unless all are saved (a passing
        # rerun leaves the failed runs' files: they are this run's).
        if save is not None and (failed or save[1] == "all"):
            # Never over another run of this test saved in this run.
            directory, attempt = _report.free_run_directory(
                save[0],
                item.nodeid,
                worker,
                hashed,
                attempt=attempt,
                started=config.stash[_STARTED_KEY],
            )
            try:
                # One look for the files and the record (mail may still come).
                captured = _report.capture(views)
                written = _report.save(views, directory, captured)
                from ._html import REPORT_ATTRIBUTE, record_test

                if failed:
                    # As pytest's summary says it: ERROR at setup or teardown.
                    in_call = item.stash.get(_FAILED_IN_CALL_KEY, False)
                    outcome = "failed" if in_call else "error"
                else:
                    outcome = item.stash.get(_OUTCOME_KEY, "passed")
                if record_test(
                    views,
                    nodeid=item.nodeid,
                    outcome=outcome,
                    directory=directory,
                    written=written,
                    root=save[0],
                    reason=item.stash.get(
                        _REASON_KEY if failed else _SKIP_REASON_KEY, None
                    ),
                    captured=captured,
                    attempt=attempt,
                ):
                    # Read by _html.IndexWriter on the controller.
                    _say_on_run_reports(
                        run_reports,
                        REPORT_ATTRIBUTE,
                        directory.relative_to(save[0]).as_posix(),
                    )
            except Exception as error:
                # A full disk (or anything else) must not turn into an
                # INTERNALERROR for the run.
                not_saved = f"could not save the mail in {directory}: {error}"
                report.sections.append(("smtpsink", not_saved))
                # Said at the end of the run: pytest shows no section of a
                # teardown that passed.
                _say_on_run_reports(run_reports, _NOT_SAVED_ATTRIBUTE, not_saved)
            else:
                if written:
                    report.sections.append(
                        ("smtpsink", f"saved {len(written)} files in {directory}")
                    )
        try:
            not_relayed = _not_relayed(views)
        except Exception:  # last resort, as for the sections above
            not_relayed = []
        if not_relayed:
            setattr(report, _NOT_RELAYED_ATTRIBUTE, not_relayed)
        if config.stash[_SUMMARY_KEY]:
            # Not view.messages: it raises once the sink died or overflowed.
            snapshots = [view.captured() for view in views]
            messages = sum(len(m) for m, _ in snapshots)
            sessions = sum(len(s) for _, s in snapshots)
            # An attribute of the report travels with it from xdist workers
            # (as index.html's directory does); not user_properties, which
            # --junitxml writes into every test's record.
            setattr(report, _COUNTS_ATTRIBUTE, [messages, sessions])
        # Read for the last time above: a mailbox kept past its test would
        # list the next tests' mail as its own.
        from . import _mailbox  # loaded with the sink

        for view in opened:
            _mailbox.end_of_test(view, item.nodeid)
    return report


def _say_on_run_reports(
    reports: Sequence[pytest.TestReport], attribute: str, value: str
) -> None:
    """Set ``attribute`` on each of a run's ``reports`` (see
    `_RUN_REPORTS_KEY`): a plugin may log the earlier ones only now."""
    for report in reports:
        setattr(report, attribute, value)


def _forget_earlier_runs(config: pytest.Config, root: Path, nodeid: str) -> None:
    """Remove what an earlier run saved for the test ``nodeid``: its
    directory, its reruns' and its ``--dist each`` workers' (see
    `_report.saved_runs`), under either of its names (which one a test
    gets depends on the tests the run selected, `_report.sharing_names`).
    Not this run's: under xdist, a test whose worker crashed is run again
    on another."""
    if _SAVED_RUNS_KEY not in config.stash:
        config.stash[_SAVED_RUNS_KEY] = _report.saved_runs(root)
    saved = config.stash[_SAVED_RUNS_KEY]
    started = config.stash[_STARTED_KEY]
    for either in (False, True):
        name = _report.test_directory(root, nodeid, None, either, 1).name
        for directory in saved.pop(name, []):
            if _report.saved_before(directory, started):
                _report.forget_saved(directory)


#: The report attribute with a test's [messages, sessions] for the summary.
_COUNTS_ATTRIBUTE = "smtpsink_counts"
#: The report attribute with the summary lines of a test's mail that a relay
#: did not deliver (failed, refused, or still pending as the test ended).
_NOT_RELAYED_ATTRIBUTE = "smtpsink_not_relayed"
#: The report attribute saying why a test's mail could not be saved.
_NOT_SAVED_ATTRIBUTE = "smtpsink_not_saved"


#: How long the end of a test waits for its mail still being relayed.
RELAY_GRACE = 2.0
#: How long it waits, past that, for the outcomes of the mail it cut.
_CUT_GRACE = 0.25


def _settle_relays(
    views: Sequence[Mailbox],
    waited: Collection[int] = (),
    grace: float = RELAY_GRACE,
) -> set[int]:
    """Wait up to ``grace`` (`RELAY_GRACE`) for the mail of ``views`` still being
    relayed: a test that waited for the upstream to store its mail ends
    before the relay has read the upstream's 250, which is no news for the
    saved files or the end of the run. The wait ends as soon as they
    settle (on the store's condition). Not for mail still pending after
    an earlier wait (the ``id()`` of each message in ``waited``). Returns
    the ids of the messages still pending. One grace for all of them: two
    mailboxes of one sink (or of two) waited twice as long."""
    pending: set[int] = set()
    deadline = time.monotonic() + grace
    sinks: set[int] = set()
    for view in views:
        # A sink's first mailbox of the test sees all its later ones see.
        if view.settings.relay is None or id(view.sink) in sinks:
            continue
        sinks.add(id(view.sink))
        messages = view.captured()[0]
        unsettled = [m for m in messages if m.relay is not None and not m.relay.done]
        left = deadline - time.monotonic()
        if left > 0 and any(id(m) not in waited for m in unsettled):
            # Not AssertionError alone: a stopped or overflowed sink raises
            # SinkError, which must not end the run (an INTERNALERROR).
            with contextlib.suppress(Exception):
                view.wait_until(
                    functools.partial(_relays_settled, messages), timeout=left
                )
        pending.update(
            id(m) for m in messages if m.relay is not None and not m.relay.done
        )
    return pending


def _not_relayed(views: Sequence[Mailbox]) -> list[str]:
    """The summary lines of the messages of ``views`` (relaying sinks only)
    whose relay did not succeed, as the test ends: also those the upstream
    took for some recipients and refused for others, who never got them."""
    from ._message import summary_with_relay

    lines = []
    for view in views:
        if view.settings.relay is None:
            continue
        for message in view.captured()[0]:
            relay = message.relay  # once: the relay thread may settle it
            if relay is None:
                continue
            if relay.status in ("failed", "refused", "pending") or (
                relay.delivery is not None and relay.delivery.refused
            ):
                lines.append(summary_with_relay(message, relay))
    return lines


def _relays_settled(messages: Sequence[Message]) -> bool:
    return all(m.relay is None or m.relay.done for m in messages)


class _NotRelayedSummary:
    """Mail a relaying sink did not deliver, listed at the end of the run:
    with --smtpsink-relay, a passing run would otherwise say nothing of an
    upstream that refused or was down. (A test that checks
    ``message.relay`` fails on its own.)"""

    #: Lines listed per test; the count says how many there were.
    SHOWN = 3

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        lines = getattr(report, _NOT_RELAYED_ATTRIBUTE, None)
        if report.when == "teardown" and lines:
            self.found[report.nodeid] = list(cast("Sequence[str]", lines))

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> None:
        if not self.found:
            return
        total = sum(len(lines) for lines in self.found.values())
        terminalreporter.write_sep(
            "=", f"smtpsink: {plural(total, 'message')} not relayed", yellow=True
        )
        for nodeid, lines in sorted(self.found.items()):
            terminalreporter.write_line(f"{nodeid}: {len(lines)} not relayed")
            for line in lines[: self.SHOWN]:
                terminalreporter.write_line(f"  {line}")
            if len(lines) > self.SHOWN:
                terminalreporter.write_line(f"  ... and {len(lines) - self.SHOWN} more")


#: A run of a test in a summary: its name and which run it is (1 unless a
#: plugin ran it again), kept apart until shown, so that it sorts by number.
_Run = tuple[str, int]


def _run_of(report: pytest.TestReport, name: str | None = None) -> _Run:
    """``name`` (the report's test id by default), and which run of the test
    the report is when a plugin ran it again (pytest-rerunfailures counts
    the earlier runs on each report): each run's line of a summary is its
    own, where the last run's replaced the others' without saying so."""
    earlier = getattr(report, "rerun", 0)
    attempt = earlier + 1 if isinstance(earlier, int) and earlier > 0 else 1
    return (report.nodeid if name is None else name, attempt)


def _run_labels(runs: Collection[_Run]) -> dict[_Run, str]:
    """How a summary names each run: "(attempt N)" after the test's name
    when it ran more than once, the first run too (it is not the total)."""
    rerun = {name for name, attempt in runs if attempt > 1}
    return {
        (name, attempt): f"{name} (attempt {attempt})" if name in rerun else name
        for name, attempt in runs
    }


class _NotSavedSummary:
    """Tests whose mail --smtpsink-save-dir could not save (a full disk),
    listed at the end of the run: the CI artifact would be missing them."""

    def __init__(self) -> None:
        self.found: dict[_Run, str] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # On any of a run's reports (see _say_on_run_reports).
        reason = getattr(report, _NOT_SAVED_ATTRIBUTE, None)
        if reason:
            self.found[_run_of(report)] = str(reason)

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> None:
        if not self.found:
            return
        tests = {name for name, _ in self.found}
        terminalreporter.write_sep(
            "=", f"smtpsink: mail of {plural(len(tests), 'test')} not saved", red=True
        )
        labels = _run_labels(self.found)
        for run, reason in sorted(self.found.items()):
            terminalreporter.write_line(f"{labels[run]}: {reason}")


class _PerTestSummary:
    """Counts from each test's teardown report (sent by xdist workers too),
    listed at the end of the run. Registered only when asked for."""

    def __init__(self, verbose: bool, each: bool = False) -> None:
        self.verbose = verbose
        #: Under ``--dist each`` every worker runs every test: counted apart.
        self.each = each
        self.counts: dict[_Run, tuple[int, int]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        counts = getattr(report, _COUNTS_ATTRIBUTE, None)
        if report.when == "teardown" and counts is not None:
            messages, sessions = cast("Sequence[int]", counts)
            name = report.nodeid
            worker = getattr(getattr(report, "node", None), "gateway", None)
            if self.each and worker is not None:
                name += f" [{getattr(worker, 'id', '?')}]"
            self.counts[_run_of(report, name)] = (messages, sessions)

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter
    ) -> None:
        if not self.counts:
            return
        # A section of its own ("="): a "-" title after -rA's PASSES
        # section read as one more part of the last passed test's report.
        terminalreporter.write_sep("=", "smtpsink: mail captured per test")
        # Sorted: under xdist, reports arrive in whatever order workers finish.
        labels = _run_labels(self.counts)
        shown = [
            (labels[run], messages, sessions)
            for run, (messages, sessions) in sorted(self.counts.items())
            if messages or sessions or self.verbose
        ]
        for nodeid, messages, sessions in shown:
            terminalreporter.write_line(
                f"{nodeid}: {messages} message{'' if messages == 1 else 's'}, "
                f"{sessions} session{'' if sessions == 1 else 's'}"
            )
        if not shown:  # a bare title read as a section cut off
            count = len(self.counts)
            terminalreporter.write_line(
                f"no mail and no SMTP session in {count} "
                f"test{'' if count == 1 else 's'} using the sink (-v lists each)"
            )


def pytest_assertrepr_compare(
    config: pytest.Config, op: str, left: object, right: object
) -> list[str] | None:
    """Readable failures for plain ``assert`` on messages and mailboxes."""
    if op != "==":
        return None
    from ._message import Message
    from ._messages import Messages, compared_lines
    from ._text import shorten

    if isinstance(left, Message) and isinstance(right, Message):
        lines = [
            "two different messages:",
            f"  {left.summary()}",
            f"  {right.summary()}",
        ]
        for name in ("subject", "from_", "to", "cc", "text", "html"):
            mine, theirs = getattr(left, name), getattr(right, name)
            if mine != theirs:
                lines.append(
                    f"  {name}: {shorten(repr(mine), 120)} != {shorten(repr(theirs), 120)}"
                )
        return lines
    for side, other in ((left, right), (right, left)):
        if isinstance(side, Messages) and isinstance(other, (list, tuple, Messages)):
            return compared_lines(side, other)
    if isinstance(left, SinkSettings) and isinstance(right, SinkSettings):
        # pytest's own explanation of two dataclasses drills into their
        # fields' reprs: an auth table's passwords, a relay URL's.
        from ._settings import shown_setting

        lines = ["two different sink settings (passwords not shown):"]
        for field in dataclasses.fields(SinkSettings):
            mine, theirs = getattr(left, field.name), getattr(right, field.name)
            if mine == theirs:
                continue
            shown = shown_setting(field.name, mine), shown_setting(field.name, theirs)
            if shown[0] == shown[1]:  # only a password differs
                shown = f"{shown[0]} (a password differs)", shown[1]
            lines.append(f"  {field.name}: {shown[0]} != {shown[1]}")
        return lines
    return None
