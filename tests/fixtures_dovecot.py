"""Dovecot IMAP server started per test session on a loopback port (see the IMAP puller tests).

`dovecot` starts one private Dovecot 2.3 for the whole session: its own configuration,
runtime, state and mail directories under a temporary directory, nothing from /etc/dovecot.
`imap_account` gives each test a fresh, empty user on it, so tests never see each other's
mail. Plain IMAP is always there; IMAPS too when `openssl` could make a certificate.
"""
from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from imapclient import IMAPClient

PASSWORD = "secret"
BASE_USERS = ("sklep@jantar.pl", "serwis@jantar.pl")
START_DEADLINE_SECONDS = 20.0
SPARE_USERS = 200
_APPENDUID_RE = re.compile(rb"APPENDUID (\d+) (\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _system_user(preferred: str, fallback: str = "nobody") -> str:
    """Dovecot's unprivileged service users; Debian creates these, other installs may not."""
    try:
        pwd.getpwnam(preferred)
        return preferred
    except KeyError:
        return fallback


def _mail_owner() -> tuple[int, int]:
    """Mail is owned by nobody: Dovecot refuses to run mail processes as root."""
    user = pwd.getpwnam("nobody")
    try:
        return user.pw_uid, grp.getgrnam("nogroup").gr_gid
    except KeyError:
        return user.pw_uid, user.pw_gid


def _make_certificate(root: Path) -> Path | None:
    """A self-signed certificate for 127.0.0.1 and localhost, or None without openssl."""
    if not shutil.which("openssl"):
        return None
    cert, key = root / "tls" / "cert.pem", root / "tls" / "key.pem"
    cert.parent.mkdir()
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True)
    return cert if done.returncode == 0 else None


def _config_text(root: Path, port: int, tls_port: int, cert: Path | None) -> str:
    uid, gid = _mail_owner()
    if cert is not None:
        tls = f"ssl = yes\nssl_cert = <{cert}\nssl_key = <{cert.parent / 'key.pem'}\n"
    else:
        tls = "ssl = no\n"
    # Every path that would default to /var or /run points into root, so this instance
    # shares nothing with a system Dovecot; instance_name keeps the process titles apart.
    return f"""\
instance_name = jantar-test-{os.getpid()}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/log/dovecot.log
info_log_path = {root}/log/dovecot.log
protocols = imap
listen = 127.0.0.1
{tls}disable_plaintext_auth = no
auth_mechanisms = plain login
# A refused login answers at once (the default waits 2 s, to slow password guessing).
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
default_internal_user = {_system_user("dovecot")}
default_login_user = {_system_user("dovenull")}
first_valid_uid = 1
mail_location = maildir:~/Maildir
# Without inotify, IDLE would notice new mail only every 30 s.
mailbox_idle_check_interval = 1 secs
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/mail/%u allow_all_users=yes
}}
# No brute-force penalty: after a test's wrong password, the next login would wait seconds.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
"""


@dataclass
class DovecotServer:
    """A running private Dovecot: where it listens and how to add users to it."""

    root: Path
    port: int
    tls_port: int | None
    ca_file: Path | None
    host: str = "127.0.0.1"
    users: list[str] = field(default_factory=lambda: list(BASE_USERS))
    # Created ahead, all at once: a passwd-file rewritten during the session is noticed
    # only after up to a second, and a test should not wait for that.
    spare_users: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "log" / "dovecot.log"

    def write_passwd(self) -> None:
        # Dovecot re-reads passwd-file when it changes; rename so it never sees half a file.
        tmp = self.root / "passwd.tmp"
        lines = (f"{user}:{{PLAIN}}{PASSWORD}::::::\n" for user in [*self.users, *self.spare_users])
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)
        tmp.replace(self.root / "passwd")

    def add_spare_users(self, count: int) -> None:
        self.spare_users.extend(f"t-{uuid.uuid4().hex[:12]}@jantar.pl" for _ in range(count))
        self.write_passwd()

    def take_user(self) -> str:
        """A user nobody has used yet (so its mail is empty)."""
        if not self.spare_users:
            self.add_spare_users(SPARE_USERS)
            # Dovecot looks at the file at most once a second: wait until it has.
            _wait_for_login(ImapAccount(self, self.spare_users[0]), deadline_seconds=10)
        user = self.spare_users.pop(0)
        self.users.append(user)
        return user

    def doveadm(self, *args: str) -> str:
        done = subprocess.run(["doveadm", "-c", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass
class ImapAccount:
    """One user on the test Dovecot, with helpers to put mail in and look at it."""

    server: DovecotServer
    user: str
    password: str = PASSWORD

    @contextlib.contextmanager
    def connect(self, *, folder: str | None = None) -> Iterator[IMAPClient]:
        client = IMAPClient(self.server.host, port=self.server.port, ssl=False, timeout=10)
        try:
            client.login(self.user, self.password)
            if folder is not None:
                client.select_folder(folder)
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, raw: bytes, folder: str = "INBOX", flags: Iterable[bytes] = ()) -> int:
        """APPEND one message; returns its UID."""
        return self.append_many([raw], folder, flags)[0]

    def append_many(self, raws: Iterable[bytes], folder: str = "INBOX",
                    flags: Iterable[bytes] = ()) -> list[int]:
        uids = []
        with self.connect() as client:
            for raw in raws:
                answer = client.append(folder, raw, flags=tuple(flags))
                uids.append(int(_APPENDUID_RE.search(answer).group(2)))
        return uids

    def flags(self, folder: str = "INBOX") -> dict[int, set[bytes]]:
        """UID -> flags of every message in FOLDER (\\Recent left out: it is per session)."""
        with self.connect(folder=folder) as client:
            found = client.get_flags(client.search(["ALL"]))
        return {uid: set(flags) - {b"\\Recent"} for uid, flags in found.items()}

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.connect(folder=folder) as client:
            return sorted(client.search(["ALL"]))

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.connect() as client:
            return client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]

    def create_folder(self, folder: str) -> None:
        with self.connect() as client:
            client.create_folder(folder)

    def delete_folder(self, folder: str) -> None:
        with self.connect() as client:
            client.delete_folder(folder)

    def mailbox_settings(self, address: str = "sklep@jantar.pl", *, tls: bool = False,
                         **extra) -> dict:
        """A [[mailboxes]] table for make_config that pulls from this account."""
        if tls:
            from tests.conftest import require
            require(self.server.tls_port is not None,
                    "the test Dovecot has no IMAPS listener (openssl missing or failed)")
        return {"address": address, "imap_host": self.server.host,
                "imap_port": self.server.tls_port if tls else self.server.port,
                "imap_tls": tls, "imap_user": self.user, "imap_password": self.password,
                **extra}


def _wait_for_login(account: ImapAccount, deadline_seconds: float,
                    process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + deadline_seconds
    while True:
        if process is not None and process.poll() is not None:
            stderr = (account.server.root / "log" / "stderr.log").read_text(errors="replace")
            raise RuntimeError(f"dovecot exited with {process.returncode}:\n{stderr}\n"
                               f"{account.server.log_tail()}")
        try:
            with account.connect():
                return
        except (OSError, IMAPClient.Error):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot log in as {account.user} on port "
                                   f"{account.server.port}:\n{account.server.log_tail()}") from None
            time.sleep(0.1)


def _prepare_root() -> Path:
    # Not under pytest's tmp_path: that lies under a 0700 directory that the mail
    # processes (running as nobody) could not traverse.
    root = Path(tempfile.mkdtemp(prefix="jantar-dovecot-"))
    root.chmod(0o755)
    for name in ("run", "state", "log", "mail"):
        (root / name).mkdir()
    uid, gid = _mail_owner()
    os.chown(root / "mail", uid, gid)
    return root


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # the master stops its children on SIGTERM
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot 2.3 on loopback for the whole session; stopped at the end."""
    from tests.conftest import require

    require(bool(shutil.which("dovecot")) and os.geteuid() == 0,
            "Dovecot IMAP tests need /usr/sbin/dovecot and root (to start it privately)")
    root = _prepare_root()
    cert = _make_certificate(root)
    server = DovecotServer(root=root, port=free_port(),
                           tls_port=free_port() if cert else None, ca_file=cert)
    server.config_path.write_text(_config_text(root, server.port, server.tls_port or 0, cert))
    server.add_spare_users(SPARE_USERS)
    # -F keeps the master in the foreground as our child: we know its pid and stop it.
    # Its stderr goes to a file: a pipe nobody reads could fill up and block it.
    with open(root / "log" / "stderr.log", "wb") as stderr:
        process = subprocess.Popen(["dovecot", "-F", "-c", str(server.config_path)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for_login(ImapAccount(server, BASE_USERS[0]), START_DEADLINE_SECONDS, process)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def imap_account(dovecot) -> ImapAccount:
    """A fresh user with an empty INBOX, for this test only."""
    return ImapAccount(dovecot, dovecot.take_user())
