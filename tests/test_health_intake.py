"""/healthz tells the truth about intake (issue 20, point 6).

A mail the intake could not commit (the SMTP/LMTP receiver answered 451, an IMAP batch
stayed on the server, the web form answered 503) makes /healthz name "intake" for
`[limits] intake_unhealthy_for`; a data folder that cannot be written, or is below
`min_free_bytes`, does so with no mail at all; /metrics counts the refusals.

The faults are real: a full tmpfs and a read-only bind mount over the data folder, made
in a private mount namespace (the test runs itself again inside `unshare -m`, so the
machine never sees the mount; where mounts are forbidden it skips, and fails under
CI=true), and PostgreSQL cut off by a TCP proxy. Mail goes to the real receiver, the
real puller on Dovecot and the real form; the clock is one the test steps, so "the
window passed" is exact.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import smtplib
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from daemon import config as config_module
from daemon.store import Store
from daemon.store.migrate import upgrade
from tests.conftest import BASE_CONFIG, NOW, merge, require
from tests.fixtures_web import HttpBrowser
from tests.mailfactory import make_mail
from tests.test_daemon import ROOT, free_port, helpdesk, listening, wait_until
from tests.test_db_outage import pg_proxy  # noqa: F401 - a fixture
from tests.test_ops_web import parse_exposition
from tests.test_web_form import submit
from tests.tomlwrite import write_config
from webform import create_app

PRIVATE_MOUNT = "HELPDESK_TEST_PRIVATE_MOUNT"
MiB = 1024 * 1024
DEFAULT_WINDOW = timedelta(minutes=5)


# -- a private mount namespace ---------------------------------------------------------------
def _mounts_allowed() -> bool:
    from tests.test_datadir import _mounts_allowed as allowed
    return allowed()


def in_private_mount(request, folder: Path, setup: str) -> Path | None:
    """FOLDER after SETUP (shell; `{folder}` in it is FOLDER) mounted something over it.

    Inside the private mount namespace this returns FOLDER. Outside, it runs this very
    test again inside `unshare -m`, where SETUP runs first, asserts that run passed, and
    returns None: the caller returns at once, the inner run having been the test.
    """
    if os.environ.get(PRIVATE_MOUNT):
        return Path(os.environ[PRIVATE_MOUNT])
    require(_mounts_allowed(), "mounts are not permitted here (unshare -m / mount failed)")
    folder.mkdir(parents=True, exist_ok=True)
    script = (setup.format(folder=shlex.quote(str(folder))) + "\n"
              f"exec {shlex.quote(sys.executable)} -m pytest -q -rs -p no:cacheprovider "
              f"--show-capture=no {shlex.quote(request.node.nodeid)}")
    inner = subprocess.run(["unshare", "-m", "sh", "-ec", script], cwd=ROOT, text=True,
                           capture_output=True, timeout=240,
                           env={**os.environ, PRIVATE_MOUNT: str(folder)})
    output = inner.stdout[-8000:] + inner.stderr[-4000:]
    skipped = inner.returncode == 0 and " skipped" in inner.stdout and " passed" not in inner.stdout
    require(not skipped, f"skipped inside the mount namespace:\n{output}")
    assert inner.returncode == 0 and " passed" in inner.stdout, output
    return None


def fill(folder: Path, leave: int = 0) -> Path:
    """Take FOLDER's filesystem down to about LEAVE free bytes with one file."""
    filler = folder / "filler"
    stats = os.statvfs(folder)
    with open(filler, "wb") as file:
        chunk = b"\0" * 65536
        remaining = stats.f_bavail * stats.f_frsize - leave
        try:
            while remaining > 0:
                remaining -= file.write(chunk[:remaining])
                file.flush()
        except OSError:
            pass  # full: what `leave = 0` asks for
    return filler


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode},bind", str(folder)], check=True)


# -- the intake of one process ----------------------------------------------------------------
class StepClock:
    def __init__(self, at: datetime = NOW):
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> None:
        self.at += delta


def config_on(data: Path, database_url: str, **sections) -> config_module.Config:
    doc = merge(BASE_CONFIG, sections)
    doc["helpdesk"] = {**doc["helpdesk"], "database_url": database_url, "data_dir": str(data)}
    return config_module.from_dict(doc, env={})


def migrated(url: str) -> Store:
    store = Store(url)
    upgrade(store)
    return store


@dataclass
class Intake:
    """The receiver and the web of one process, sharing one refusal recorder and one clock."""

    clock: StepClock
    port: int
    lmtp: bool
    client: object

    def deliver(self, raw: bytes) -> int:
        """The reply code to DATA (250, 451, ...)."""
        connect = smtplib.LMTP if self.lmtp else smtplib.SMTP
        with connect("127.0.0.1", self.port, timeout=60) as session:
            try:
                session.sendmail("jan.nowak@bursztyn.pl", ["sklep@jantar.pl"], raw)
            except smtplib.SMTPResponseException as exc:
                return exc.smtp_code
            except smtplib.SMTPRecipientsRefused as exc:
                return next(iter(exc.recipients.values()))[0]
        return 250

    def health(self) -> tuple[int, dict, str]:
        response = self.client.get("/healthz")
        return response.status_code, response.get_json(), response.get_data(as_text=True)

    def refusals(self) -> dict[str, float]:
        response = self.client.get("/metrics")
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        samples = parse_exposition(response.get_data(as_text=True))
        return {dict(labels)["channel"]: count for (name, labels), count in samples.items()
                if name == "helpdesk_intake_refusals_total"}


@pytest.fixture
def intake():
    """intake(config, store, protocol="smtp") -> Intake: receiver and web app, one recorder."""
    from daemon.ingest.refusals import IntakeRefusals
    from daemon.ingest.smtp import start_receiver
    receivers = []

    def start(config, store, protocol: str = "smtp") -> Intake:
        clock = StepClock()
        refusals = IntakeRefusals(clock.now)
        config = dataclasses.replace(config, smtp_server=dataclasses.replace(
            config.smtp_server, listen=("127.0.0.1", 0), protocol=protocol))
        receivers.append(start_receiver(config, store, clock, refusals=refusals))
        app = create_app(config, store=store, clock=clock, testing=True, intake_refusals=refusals)
        return Intake(clock, receivers[-1].port, protocol == "lmtp", app.test_client())

    yield start
    for receiver in receivers:
        receiver.stop()


def assert_no_detail(text: str, *details: str) -> None:
    """The /healthz answer names parts, never a path, a host or an error text."""
    for detail in (*details, "disk is full", "readonly", "refused", "Traceback"):
        assert detail not in text


# -- with no mail at all: the data folder -----------------------------------------------------
@pytest.mark.parametrize("fault", ["below min_free_bytes", "not writable"])
def test_a_data_folder_intake_cannot_write_fails_healthz_before_any_mail(
        fault, tmp_path, store):
    data = tmp_path / "data"
    sections = {"web": {"secret_key": "s" * 40}}  # no secret file to write into DATA
    if fault == "below min_free_bytes":
        sections["limits"] = {"min_free_bytes": 1 << 60}
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("a file where the data folder's parent should be")
        data = blocker / "data"
    config = config_on(data, store.url, **sections)
    client = create_app(config, store=store, clock=StepClock(), testing=True).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["failing"] == ["intake"] and body["store"] == "ok"
    why = "data_dir_low_on_space" if fault == "below min_free_bytes" else "data_dir_not_writable"
    assert body["intake"]["state"] == "failing" and body["intake"]["why"] == [why]
    assert body["intake"]["last_failure_at"] is None
    assert body["intake"]["refusals"] == {"smtp": 0, "lmtp": 0, "imap": 0, "web": 0}
    assert_no_detail(response.get_data(as_text=True), str(tmp_path))


def test_a_healthy_intake_is_reported_with_its_window(web_app):
    body = web_app(limits={"intake_unhealthy_for": "90s"}).test_client().get("/healthz").get_json()
    assert body["status"] == "ok"
    assert body["intake"] == {"state": "ok", "why": [], "last_failure_at": None,
                              "unhealthy_for_seconds": 90,
                              "refusals": {"smtp": 0, "lmtp": 0, "imap": 0, "web": 0}}


# -- a full data folder ---------------------------------------------------------------------
def test_a_full_data_folder_refuses_smtp_and_fails_healthz_until_fixed_and_the_window_passed(
        request, tmp_path, intake):
    data = in_private_mount(request, tmp_path / "data", "mount -t tmpfs -o size=8m tmpfs {folder}")
    if data is None:
        return
    store = migrated(f"sqlite:///{data / 'helpdesk.db'}")
    desk = intake(config_on(data, store.url, limits={"min_free_bytes": MiB}), store)
    assert desk.deliver(make_mail(message_id="<before@bursztyn.pl>")) == 250
    assert desk.health()[0] == 200

    filler = fill(data)
    assert desk.deliver(make_mail(message_id="<full@bursztyn.pl>")) == 451
    status, body, text = desk.health()
    assert status == 503 and body["failing"] == ["intake"], body
    assert body["intake"]["why"] == ["recent_refusal", "data_dir_low_on_space"]
    assert body["intake"]["last_failure_at"] == NOW.isoformat()
    assert body["intake"]["refusals"]["smtp"] == 1
    assert_no_detail(text, str(data))
    assert desk.refusals() == {"smtp": 1, "lmtp": 0, "imap": 0, "web": 0}

    filler.unlink()  # fixed, but a refusal a moment ago still counts for the window
    desk.clock.advance(DEFAULT_WINDOW - timedelta(seconds=1))
    status, body, _ = desk.health()
    assert status == 503 and body["intake"]["why"] == ["recent_refusal"]
    desk.clock.advance(timedelta(seconds=1))
    status, body, _ = desk.health()
    assert status == 200 and body["intake"]["state"] == "ok"
    assert body["intake"]["last_failure_at"] == NOW.isoformat()  # still shown, no longer failing
    assert desk.deliver(make_mail(message_id="<after@bursztyn.pl>")) == 250
    assert desk.refusals()["smtp"] == 1
    store.dispose()


# -- a read-only store ----------------------------------------------------------------------
def test_a_read_only_store_refuses_lmtp_and_fails_healthz_until_fixed_and_the_window_passed(
        request, tmp_path, intake):
    data = in_private_mount(request, tmp_path / "data", "mount --bind {folder} {folder}")
    if data is None:
        return
    store = migrated(f"sqlite:///{data / 'helpdesk.db'}")
    desk = intake(config_on(data, store.url, limits={"intake_unhealthy_for": "2m"}), store,
                  protocol="lmtp")
    assert desk.deliver(make_mail(message_id="<before@bursztyn.pl>")) == 250

    store.dispose()  # the kernel refuses to remount a folder with files open for writing
    remount(data, "ro")
    assert desk.deliver(make_mail(message_id="<read-only@bursztyn.pl>")) == 451
    status, body, text = desk.health()
    # SQLite cannot even open a WAL store in a read-only folder: the store is named too.
    assert status == 503 and body["failing"] == ["store", "intake"], body
    assert body["intake"]["why"] == ["store_unreachable", "recent_refusal", "data_dir_read_only"]
    assert body["intake"]["refusals"]["lmtp"] == 1 and body["intake"]["refusals"]["smtp"] == 0
    assert_no_detail(text, str(data))

    remount(data, "rw")
    desk.clock.advance(timedelta(minutes=1))
    assert desk.health()[1]["intake"]["why"] == ["recent_refusal"]
    desk.clock.advance(timedelta(minutes=1))
    assert desk.health()[0] == 200
    assert desk.deliver(make_mail(message_id="<read-only@bursztyn.pl>")) == 250  # the retry
    assert desk.refusals() == {"smtp": 0, "lmtp": 1, "imap": 0, "web": 0}
    store.dispose()


# -- an IMAP batch that cannot be saved -------------------------------------------------------
def test_an_imap_batch_the_store_cannot_take_stays_on_the_server_and_fails_healthz(
        request, tmp_path):
    data = in_private_mount(request, tmp_path / "data", "mount -t tmpfs -o size=8m tmpfs {folder}")
    if data is None:
        return
    from daemon.service import Daemon
    imap_account = request.getfixturevalue("imap_account")
    store = migrated(f"sqlite:///{data / 'helpdesk.db'}")
    clock = StepClock()
    config = config_on(data, store.url, mailboxes=[imap_account.mailbox_settings()],
                       limits={"min_free_bytes": 64 * 1024})
    daemon = Daemon(config, store, clock)
    client = create_app(config, store=store, clock=clock, testing=True,
                        intake_refusals=daemon.intake_refusals).test_client()
    big = make_mail(message_id="<big@bursztyn.pl>", body="Zrzut ekranu kasy.\n" * 120_000)
    uid = imap_account.append(big)
    # Room for the lease and the cursor, not for a 2 MB mail.
    filler = fill(data, leave=512 * 1024)
    [puller] = daemon.pullers()  # one puller throughout: its lease stays its own
    with pytest.raises(Exception) as failed:
        puller.poll_once()
    assert "full" in str(failed.value)
    assert b"$Helpdesk" not in imap_account.flags()[uid]  # it waits on the server
    response = client.get("/healthz")
    assert response.status_code == 503
    intake_state = response.get_json()["intake"]
    # The failed write may have used the last bytes too (data_dir_low_on_space): not asked.
    assert intake_state["why"][0] == "recent_refusal" and intake_state["refusals"]["imap"] == 1

    filler.unlink()
    with puller:
        assert puller.poll_once() == 1
    assert b"$Helpdesk" in imap_account.flags()[uid]
    clock.advance(DEFAULT_WINDOW)
    assert client.get("/healthz").status_code == 200
    store.dispose()


# -- PostgreSQL cut off ---------------------------------------------------------------------
def test_postgresql_cut_off_refuses_smtp_and_the_form_and_fails_healthz_until_the_window_passed(
        pg_proxy, tmp_path, intake):  # noqa: F811 - pg_proxy is the imported fixture
    proxy, url = pg_proxy
    store = Store(url, connect_args={"connect_timeout": 3})
    config = config_on(tmp_path / "data", url, limits={"intake_unhealthy_for": "2m"})
    desk = intake(config, store)
    assert desk.deliver(make_mail(message_id="<before@bursztyn.pl>")) == 250

    proxy.down()
    assert desk.deliver(make_mail(message_id="<cut@bursztyn.pl>")) == 451
    form = submit(desk.client)
    assert form.status_code == 503 and "Baza danych niedostępna" in form.get_data(as_text=True)
    status, body, text = desk.health()
    assert status == 503 and body["failing"] == ["store", "intake"], body
    assert body["intake"]["why"] == ["store_unreachable", "recent_refusal"]
    assert body["intake"]["refusals"] == {"smtp": 1, "lmtp": 0, "imap": 0, "web": 1}
    assert_no_detail(text, str(proxy.port), "psycopg")

    proxy.up()
    status, body, _ = desk.health()
    assert status == 503 and body["failing"] == ["intake"] and body["store"] == "ok"
    assert desk.refusals() == {"smtp": 1, "lmtp": 0, "imap": 0, "web": 1}
    desk.clock.advance(timedelta(minutes=2))
    assert desk.health()[0] == 200
    assert desk.deliver(make_mail(message_id="<cut@bursztyn.pl>")) == 250
    store.dispose()


# -- the daemon: one recorder for its receiver and its web ------------------------------------
def test_helpdesk_run_names_intake_on_its_own_healthz_after_its_receiver_refused(
        pg_proxy, tmp_path):  # noqa: F811
    proxy, url = pg_proxy
    smtp_port, web_port = free_port(), free_port()
    config = write_config(tmp_path / "helpdesk.toml", {
        "helpdesk": {"database_url": url, "data_dir": str(tmp_path / "data"),
                     "web_url": f"http://127.0.0.1:{web_port}"},
        "smtp_server": {"listen": f"127.0.0.1:{smtp_port}"},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "outbound": {"transport": "maildir", "maildir": str(tmp_path / "sent")},
        "mailboxes": [{"address": "sklep@jantar.pl"}],
    })
    assert helpdesk(config, "migrate").returncode == 0
    log = tmp_path / "daemon.log"
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), "run"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("a"))
    web = f"http://127.0.0.1:{web_port}"
    try:
        wait_until(lambda: listening(smtp_port) and listening(web_port), what="receiver and web")
        browser = HttpBrowser()
        assert browser.get(f"{web}/healthz").status_code == 200
        proxy.down()
        desk = Intake(StepClock(), smtp_port, False, None)
        assert desk.deliver(make_mail(message_id="<cut@bursztyn.pl>")) == 451
        proxy.up()
        response = browser.get(f"{web}/healthz")
        assert response.status_code == 503, response.text
        assert response.json()["failing"] == ["intake"]
        assert response.json()["intake"]["refusals"]["smtp"] == 1
        samples = parse_exposition(browser.get(f"{web}/metrics").text)
        assert samples[("helpdesk_intake_refusals_total",
                        frozenset({("channel", "smtp")}))] == 1
    finally:
        process.terminate()
        code = process.wait(timeout=60)
    assert code == 0, log.read_text(errors="replace")[-3000:]


# -- the recorder -------------------------------------------------------------------------------
def test_refusals_recorded_from_many_threads_are_all_counted():
    from daemon.ingest.refusals import IntakeRefusals
    clock = StepClock()
    refusals = IntakeRefusals(clock.now)
    start = threading.Barrier(8)

    def refuse(channel: str) -> None:
        start.wait()
        for _ in range(5000):
            refusals.record(channel)

    threads = [threading.Thread(target=refuse, args=(channel,))
               for channel in ("smtp", "imap", "web", "smtp", "lmtp", "smtp", "imap", "web")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen = refusals.seen()
    assert seen.counts == {"smtp": 15000, "lmtp": 5000, "imap": 10000, "web": 10000}
    assert seen.last_at == NOW
    with pytest.raises(ValueError):
        refusals.record("fax")
