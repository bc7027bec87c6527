"""A real Dovecot (POP3 and IMAP) for differential tests and benchmarks.

Debian's ``dovecot-pop3d`` and ``dovecot-imapd``, started in the foreground
(``dovecot -F``) from a configuration written into a temporary directory that
holds everything it touches: its runtime sockets (``base_dir``), its state,
its log, the certificate and one home per mail user. It listens on 127.0.0.1
only, on four free ports (POP3, POP3S, IMAP, IMAPS), with a certificate from
the project's own test CA, so clients verify it exactly as they verify the
sink (`Dovecot.ssl_context`, `Dovecot.ca_path`).

Privileges: started as root (as CI runs), Dovecot keeps its own split
(master as root, login processes as ``dovenull``, internal ones as
``dovecot``), and mail is accessed as ``nobody``: Dovecot refuses mail access
as root outright ("Mail access not allowed for root", whatever
``first_valid_uid`` says), so the honest setting is a real unprivileged
uid. The mail homes are owned by it and the temporary directory is made
traversable for it. Started as anyone else, every Dovecot process runs as
that user (Dovecot's "rootless" mode: no chroot, no uid change).

Seeding writes Maildir files the way a delivery agent does (``tmp/`` then a
rename into ``new/``, or ``cur/`` with ``:2,`` flags when flags are given),
named so that Dovecot's sort by the leading timestamp keeps the order given,
with ``S=`` and ``W=`` sizes so Dovecot need not read the files to answer
STAT and LIST. Nothing here needs pytest: benchmarks import it too; the
``dovecot`` fixture lives in ``tests/conftest.py``. Used from the thread that
runs the test or the benchmark.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType

from pytest_smtpsink._tls import authority

#: Where Debian installs the master binary (not on a non-root user's PATH).
SBIN = "/usr/sbin"
#: Debian's per-protocol files: present only when dovecot-pop3d/-imapd are.
PROTOCOLS_DIR = Path("/usr/share/dovecot/protocols.d")
INSTALL_HINT = "apt-get install dovecot-pop3d dovecot-imapd"

HOST = "127.0.0.1"
#: The greeting both protocols send, so transcripts do not name the distro.
GREETING = "Dovecot ready."
#: Seconds Dovecot may take to start listening and greet (a loaded machine).
START_TIMEOUT = 60.0
#: Seconds it may take to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 15.0
#: Attempts with fresh ports when another process took one in between.
PORT_ATTEMPTS = 5

#: Maildir flag letters (the "2," info), by IMAP system flag, in the
#: alphabetical order the Maildir specification requires.
MAILDIR_FLAGS = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
    "\\Deleted": "T",
}
#: The filename timestamp of the first seeded message; each next one adds a
#: second. Dovecot numbers new files in the order of that number (its
#: comparison looks at nothing else), so distinct numbers keep seed order.
_FIRST_STAMP = 1_600_000_000


class DovecotError(RuntimeError):
    """Dovecot did not start, or did not stop; the message has its log."""


def find_program() -> str | None:
    """The ``dovecot`` binary with the POP3 and IMAP services, or None."""
    program = shutil.which("dovecot") or shutil.which("dovecot", path=SBIN)
    if program is None:
        return None
    if PROTOCOLS_DIR.is_dir() and not all(
        (PROTOCOLS_DIR / name).exists() for name in ("pop3d.protocol", "imapd.protocol")
    ):
        return None
    return program


def _free_ports(count: int) -> list[int]:
    """*count* distinct ports free right now (all bound at once, so the
    kernel cannot hand out the same one twice)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((HOST, 0))
        return [probe.getsockname()[1] for probe in probes]


def _virtual_size(data: bytes) -> int:
    """The size POP3 and IMAP report: every bare LF counted as CRLF."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


def _flag_letters(flags: Iterable[str]) -> str:
    letters = []
    for flag in flags:
        letter = MAILDIR_FLAGS.get(flag)
        if letter is None:
            raise ValueError(
                f"cannot seed flag {flag!r}: only {', '.join(MAILDIR_FLAGS)}"
            )
        letters.append(letter)
    return "".join(sorted(set(letters)))


class Dovecot:
    """One Dovecot instance in a temporary directory of its own.

    *passwords*: None accepts any password for any user; a mapping accepts
    only those users with those passwords (a passwd-file), for comparing
    failed logins. *tls_required*: ``ssl = required``, so no login without
    TLS; Dovecot counts a connection whose source address equals the
    listening address as secure, so clients must connect from
    `client_address` (127.0.0.2) to see the refusal.
    """

    host = HOST
    #: A loopback source address Dovecot does not treat as "local".
    client_address = "127.0.0.2"

    def __init__(
        self,
        *,
        passwords: Mapping[str, str] | None = None,
        tls_required: bool = False,
        lmtp: bool = False,
        program: str | None = None,
    ) -> None:
        found = program or find_program()
        if found is None:
            raise DovecotError(f"Dovecot is not installed ({INSTALL_HINT})")
        self.program = found
        self.doveadm = shutil.which("doveadm") or str(Path(found).parent / "doveadm")
        self.passwords = dict(passwords) if passwords is not None else None
        for user, password in (self.passwords or {}).items():
            if any(c in user + password for c in ":\r\n\0") or not user:
                raise ValueError(
                    f"user {user!r}: a passwd-file cannot hold ':', line "
                    "breaks or NUL in a user name or password"
                )
        self.tls_required = tls_required
        # LMTP (Debian dovecot-lmtpd) delivers as Dovecot's own agent: its
        # 250 comes once the message is in the mailbox (for benchmarks).
        self.lmtp = lmtp
        self.lmtp_port = 0
        self.pop3_port = self.pop3s_port = self.imap_port = self.imaps_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: Path | None = None
        self._stamp = _FIRST_STAMP
        if os.geteuid() == 0:
            self._mail_uid = pwd.getpwnam("nobody").pw_uid
            self._mail_gid = grp.getgrnam("nogroup").gr_gid
        else:
            self._mail_uid, self._mail_gid = os.geteuid(), os.getegid()

    # -- paths ------------------------------------------------------------

    @property
    def directory(self) -> Path:
        if self._directory is None:
            raise DovecotError("Dovecot is not started")
        return self._directory

    @property
    def log_path(self) -> Path:
        return self.directory / "dovecot.log"

    @property
    def ca_path(self) -> str:
        """The CA file that verifies this server (the sink's test CA)."""
        return authority().ca_path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies this server's certificate."""
        return authority().client_context()

    def home(self, user: str) -> Path:
        return self.directory / "home" / user

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir++ directory of *folder* ("/" separates levels)."""
        if folder.upper() == "INBOX":
            return self.home(user) / "Maildir"
        return self.home(user) / "Maildir" / ("." + folder.replace("/", "."))

    def log(self) -> str:
        """Dovecot's log so far (its own lines and its stderr)."""
        parts = []
        for path in (self.directory / "stderr.log", self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- life cycle -------------------------------------------------------

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Dovecot:
        """Start Dovecot and return once all four ports greet."""
        if self._process is not None:
            raise DovecotError("Dovecot is already started")
        self._directory = Path(tempfile.mkdtemp(prefix="smtpsink-dovecot-"))
        # The mail user (nobody, as root) must reach its home through here.
        self._directory.chmod(0o755)
        try:
            self._write_files()
            for attempt in range(1, PORT_ATTEMPTS + 1):
                ports = _free_ports(5 if self.lmtp else 4)
                self.pop3_port, self.pop3s_port, self.imap_port, self.imaps_port = (
                    ports[:4]
                )
                self.lmtp_port = ports[4] if self.lmtp else 0
                self._write_config()
                if self._launch(last=attempt == PORT_ATTEMPTS):
                    return self
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL to its process group) and
        remove its directory. Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            self._end(process)
        directory, self._directory = self._directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_TIMEOUT)
        # The master ends its children on SIGTERM; anything left of the group
        # it leads (it was started in a session of its own) is killed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def _launch(self, *, last: bool) -> bool:
        """Start the master; True once it serves, False on a port race."""
        directory = self.directory
        self.log_path.unlink(missing_ok=True)
        with open(directory / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [self.program, "-F", "-c", str(directory / "dovecot.conf")],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self._process = process
        deadline = time.monotonic() + START_TIMEOUT
        ports = [self.pop3_port, self.imap_port, self.pop3s_port, self.imaps_port]
        for port in ports + ([self.lmtp_port] if self.lmtp else []):
            while not self._answers(port, deadline):
                if process.poll() is not None:
                    log = self.log()
                    self._process = None
                    if "Address already in use" in log and not last:
                        return False
                    raise DovecotError(
                        f"Dovecot exited with status {process.returncode} while "
                        f"starting:\n{_tail(log)}"
                    )
                if time.monotonic() > deadline:
                    raise DovecotError(
                        f"Dovecot did not serve port {port} within "
                        f"{START_TIMEOUT:g} s:\n{_tail(self.log())}"
                    )
                # Polling a port that is not yet bound: nothing to wait on.
                time.sleep(0.02)
        return True

    def _answers(self, port: int, deadline: float) -> bool:
        """Whether *port* accepts a connection and sends its first bytes (for
        the TLS ports: completes a verified handshake first)."""
        timeout = max(0.1, min(5.0, deadline - time.monotonic()))
        try:
            with socket.create_connection((HOST, port), timeout=timeout) as raw:
                if port in (self.pop3s_port, self.imaps_port):
                    with self.ssl_context().wrap_socket(
                        raw, server_hostname=HOST
                    ) as tls:
                        return bool(tls.recv(1))
                return bool(raw.recv(1))
        except (OSError, ssl.SSLError):
            return False

    # -- configuration ----------------------------------------------------

    def _write_files(self) -> None:
        directory = self.directory
        leaf = authority().leaf
        leaf.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
        key = directory / "key.pem"
        leaf.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        home = directory / "home"
        home.mkdir()
        os.chown(home, self._mail_uid, self._mail_gid)
        if self.passwords is not None:
            # Read by the auth process, which runs as the internal user.
            passwd = directory / "passwd"
            passwd.write_text(
                "".join(
                    f"{user}:{{PLAIN}}{password}::::::\n"
                    for user, password in self.passwords.items()
                )
            )
            passwd.chmod(0o600)
            if os.geteuid() == 0:
                os.chown(passwd, pwd.getpwnam("dovecot").pw_uid, -1)

    def _write_config(self) -> None:
        directory = self.directory
        if self.passwords is None:
            passdb = "driver = static\n  args = nopassword=y"
        else:
            passdb = f"driver = passwd-file\n  args = {directory / 'passwd'}"
        if os.geteuid() == 0:
            privileges = "mail_uid = nobody\nmail_gid = nogroup\n"
            no_chroot = ""
        else:
            user = pwd.getpwuid(os.geteuid()).pw_name
            group = grp.getgrgid(os.getegid()).gr_name
            privileges = (
                f"default_internal_user = {user}\n"
                f"default_internal_group = {group}\n"
                f"default_login_user = {user}\n"
            )
            # Chrooting needs root; the rootless mode turns it off.
            no_chroot = "  chroot =\n"
        config = f"""\
# Written by tests/dovecot.py for one test run.
base_dir = {directory / "run"}
state_dir = {directory / "state"}
instance_name = smtpsink-{directory.name}
log_path = {self.log_path}
protocols = pop3 imap{" lmtp" if self.lmtp else ""}
listen = {HOST}
{privileges}
ssl = {"required" if self.tls_required else "yes"}
ssl_cert = <{directory / "cert.pem"}
ssl_key = <{directory / "key.pem"}
auth_mechanisms = plain login
disable_plaintext_auth = {"yes" if self.tls_required else "no"}
# Failed logins answer at once: no failure delay, and no per-IP penalty
# (each login from an address after a failure waits 2, 4, 8, up to 15 s);
# see the anvil service below.
auth_failure_delay = 0
login_greeting = {GREETING}
mail_location = maildir:~/Maildir
mail_fsync = never
# Parallel benchmark clients for one user from one address.
mail_max_userip_connections = 100
pop3_uidl_format = %08Xu%08Xv
# A second POP3 session on the same maildrop gets -ERR [IN-USE] (after
# about 10 s of waiting for the session lock, whatever mail_max_lock_timeout).
pop3_lock_session = yes
namespace inbox {{
  inbox = yes
  separator = /
  prefix =
}}
passdb {{
  {passdb}
}}
userdb {{
  driver = static
  args = home={directory / "home"}/%u
}}
service anvil {{
{no_chroot}  # The auth process cannot open the penalty socket, so it turns
  # penalties off (Dovecot's documented way to disable them).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service pop3-login {{
{no_chroot}  inet_listener pop3 {{
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service imap-login {{
{no_chroot}  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""
        if self.lmtp:
            config += f"""\
service lmtp {{
  inet_listener lmtp {{
    address = {HOST}
    port = {self.lmtp_port}
  }}
}}
"""
        (directory / "dovecot.conf").write_text(config)

    # -- mailboxes --------------------------------------------------------

    def _make_dir(self, path: Path) -> None:
        """Create *path* and missing parents below the homes, owned by the
        mail user (mode 0700, as Dovecot creates them)."""
        root = self.directory / "home"
        missing = []
        while path != root and not path.exists():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700)
            os.chown(directory, self._mail_uid, self._mail_gid)

    def seed(
        self,
        user: str,
        messages: Sequence[bytes],
        folder: str = "INBOX",
        flags: Iterable[str] = (),
        date: datetime | None = None,
    ) -> list[Path]:
        """Deliver *messages* to *user*'s *folder*, in order, as a delivery
        agent would; returns their files. Messages get UIDs in the order
        given, after any already there. *flags* (IMAP system flags) apply
        to every message of the call; without flags a message is new
        (``\\Recent``). *date* is the internal date (default: now).

        Dovecot then indexes the folder (``doveadm mailbox status``), as it
        does on its own deliveries: otherwise a client's APPEND to a folder
        Dovecot has not opened yet would get UIDs before the seeded mail.
        """
        letters = _flag_letters(flags)
        maildir = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            self._make_dir(maildir / sub)
        mtime = date.timestamp() if date is not None else time.time()
        paths = []
        for data in messages:
            self._stamp += 1
            base = (
                f"{self._stamp}.M{self._stamp % 1_000_000}P{os.getpid()}.smtpsink,"
                f"S={len(data)},W={_virtual_size(data)}"
            )
            temporary = maildir / "tmp" / base
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchown(fd, self._mail_uid, self._mail_gid)
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.utime(temporary, (mtime, mtime))
            final = (
                maildir / "cur" / f"{base}:2,{letters}"
                if letters
                else maildir / "new" / base
            )
            temporary.rename(final)
            paths.append(final)
        self._index(user, folder)
        return paths

    def _index(self, user: str, folder: str) -> None:
        command = [self.doveadm, "-c", str(self.directory / "dovecot.conf")]
        command += ["mailbox", "status", "-u", user, "messages", folder]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm could not index {user}'s {folder!r} "
                f"(status {result.returncode}): {result.stderr.strip()}"
            )

    def messages(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """The messages now in *user*'s *folder*, in seed (UID) order."""
        maildir = self.maildir(user, folder)
        files = [
            path
            for sub in ("new", "cur")
            if (maildir / sub).is_dir()
            for path in (maildir / sub).iterdir()
        ]
        files.sort(key=lambda path: int(path.name.split(".", 1)[0]))
        return [path.read_bytes() for path in files]

    def flags(self, user: str, folder: str = "INBOX") -> list[set[str]]:
        """The IMAP flags of each message in *user*'s *folder*, in UID order,
        as Dovecot's index has them now."""
        command = [self.doveadm, "-c", str(self.directory / "dovecot.conf")]
        command += ["-f", "tab", "fetch", "-u", user, "flags", "mailbox", folder]
        result = subprocess.run(
            [*command, "all"], capture_output=True, text=True, timeout=60, check=False
        )
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm could not fetch {user}'s flags in {folder!r} "
                f"(status {result.returncode}): {result.stderr.strip()}"
            )
        # A header line ("flags"), then a line per message.
        return [set(line.split()) for line in result.stdout.splitlines()[1:]]

    def reset(self, user: str) -> None:
        """Remove *user*'s home (mail, indexes, UIDVALIDITY): the next login
        starts empty. The home is renamed away first, so a Dovecot process
        still finishing a session for the user writes into the old one."""
        home = self.home(user)
        if not home.exists():
            return
        graveyard = self.directory / "removed"
        graveyard.mkdir(exist_ok=True)
        away = Path(tempfile.mkdtemp(dir=graveyard))
        home.rename(away / user)
        shutil.rmtree(away, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _tail(log: str, lines: int = 30) -> str:
    return "\n".join(log.splitlines()[-lines:]) or "(the log is empty)"
