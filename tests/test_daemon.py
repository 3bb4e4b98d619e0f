"""`helpdesk run` as a real process: mail in over SMTP, ticket, acknowledgement out, SIGTERM."""
from __future__ import annotations

import json
import mailbox
import signal
import socket
import subprocess
import sys
import time
from email.header import decode_header, make_header
from pathlib import Path

import pytest

from tests.fixtures_smtp import send_mail
from tests.mailfactory import make_mail
from tests.tomlwrite import write_config

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float = 30, what: str = "condition", interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def start_daemon(config: Path, *global_options: str, log_path: Path | None = None) -> subprocess.Popen:
    """`helpdesk run` in its own process; its log goes to `log_path` (appended) or nowhere."""
    command = [sys.executable, "-m", "daemon.cli", "--config", str(config), *global_options, "run"]
    if log_path is None:
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    with open(log_path, "a") as log:  # the child has its own copy of the descriptor
        return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)


def stop_daemon(process: subprocess.Popen, log_path: Path, timeout: float = 60) -> int:
    """SIGTERM once the daemon has logged that it runs, and its exit code.

    A signal that lands while Python is still starting meets the default action (exit
    -15) before the daemon's handler exists. Waiting for the line keeps that race out of a
    test whose work may all be done before the process it checks has started."""
    wait_until(lambda: process.poll() is not None or
               "helpdesk running" in log_path.read_text(errors="replace"),
               timeout=60, what="the daemon's 'helpdesk running' line")
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


def helpdesk(config: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, **kwargs)


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def daemon_config(tmp_path, db_url):
    smtp_port, web_port = free_port(), free_port()
    doc = {
        "helpdesk": {"database_url": db_url, "data_dir": str(tmp_path / "data"),
                     "web_url": f"http://127.0.0.1:{web_port}"},
        "smtp_server": {"listen": f"127.0.0.1:{smtp_port}"},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "outbound": {"transport": "maildir", "maildir": str(tmp_path / "sent")},
        "mailboxes": [{"address": "sklep@jantar.pl"}],
        "clients": [{"name": "Sieć Bursztyn", "domains": ["bursztyn.pl"]}],
        "technicians": [{"name": "Ewa", "email": "koordynator@jantar.pl", "role": "coordinator",
                         "tier": "L2"}],
    }
    return write_config(tmp_path / "helpdesk.toml", doc), smtp_port, tmp_path / "sent"


def test_run_receives_files_acknowledges_and_stops_cleanly_on_sigterm(daemon_config):
    config, smtp_port, sent = daemon_config
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
                               cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: listening(smtp_port), what="the SMTP receiver")
        send_mail(smtp_port, make_mail(subject="Terminal nie łączy się z bankiem",
                                       message_id="<daemon-test@bursztyn.pl>"))

        def acknowledged():
            if not (sent / "new").is_dir():
                return None
            acks = [m for m in mailbox.Maildir(sent, create=False)
                    if m["To"] and "jan.nowak@bursztyn.pl" in m["To"]]
            return acks or None

        [ack] = wait_until(acknowledged, what="the acknowledgement in the Maildir")
        subject = str(make_header(decode_header(ack["Subject"])))
        assert "[#JAN-1]" in subject and ack["In-Reply-To"] == "<daemon-test@bursztyn.pl>"
        tickets = json.loads(helpdesk(config, "tickets", "--json").stdout)
        assert [(t["number"], t["client"], t["channel"]) for t in tickets] == \
            [("JAN-1", "Sieć Bursztyn", "email")]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        log = process.stderr.read()
    assert code == 0, log
    assert "finishing the message in hand" in log and "helpdesk stopped" in log
    assert "<daemon-test@bursztyn.pl>" in log  # log lines lead with the Message-ID


def test_run_once_processes_and_sends_then_exits(daemon_config, tmp_path):
    config, _, sent = daemon_config
    eml = tmp_path / "x.eml"
    eml.write_bytes(make_mail(message_id="<once@bursztyn.pl>"))
    assert helpdesk(config, "ingest", str(eml)).returncode == 0
    result = helpdesk(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["send"]["sent"] >= 2  # the acknowledgement and the coordinator's notice
    outbox = json.loads(helpdesk(config, "outbox", "--json").stdout)
    assert {m["kind"] for m in outbox} == {"ack", "coordinator_new"}
    assert {m["status"] for m in outbox} == {"sent"}


def test_bad_configuration_stops_run_with_the_key_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[smtp_server]\nlisten = "nowhere"\n')
    result = helpdesk(bad, "run")
    assert result.returncode == 2 and "smtp_server.listen: expected HOST:PORT" in result.stderr
