"""Serving the web: from a thread (webform.serve), by `helpdesk run` and `helpdesk web` as real
processes, and by a WSGI server through `webform:create_app()`."""
from __future__ import annotations

import signal
import subprocess
import sys
import urllib.error
import urllib.request

from daemon.clock import Clock
from tests.test_daemon import ROOT, free_port, wait_until
from tests.tomlwrite import write_config
from webform.serve import WebServer, start_web


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_web_server_thread_serves_the_form_and_stops(config, store):
    server = WebServer(config, store, Clock(), listen=("127.0.0.1", 0)).start()
    host, port = server.address
    try:
        status, page = fetch(f"http://{host}:{port}/")
        assert status == 200 and 'name="description"' in page
        assert fetch(f"http://{host}:{port}/tickets")[0] == 200  # redirected to /login
    finally:
        server.stop()
    assert fetch(f"http://{host}:{port}/")[0] == 0


def test_web_can_be_switched_off_for_run(make_config, store):
    assert start_web(make_config(store.url, web={"enabled": False}), store, Clock()) is None


def _config(tmp_path, db_url, web_port: int, **extra) -> str:
    return str(write_config(tmp_path / "helpdesk.toml", {
        "helpdesk": {"database_url": db_url, "data_dir": str(tmp_path / "data")},
        "smtp_server": {"enabled": False},
        "web": {"listen": f"127.0.0.1:{web_port}"},
        "outbound": {"transport": "maildir", "maildir": str(tmp_path / "sent")},
        "mailboxes": [{"address": "sklep@jantar.pl"}],
        **extra,
    }))


def _serve_until_sigterm(command: list[str], port: int) -> str:
    process = subprocess.Popen([sys.executable, "-m", "daemon.cli", *command], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)
    try:
        status, page = wait_until(lambda: (r := fetch(f"http://127.0.0.1:{port}/"))[0] and r,
                                  what="the web on its port")
        assert status == 200 and "Zgłoś problem" in page
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        log = process.stderr.read()
    assert code == 0, log
    assert fetch(f"http://127.0.0.1:{port}/")[0] == 0  # the port is closed again
    return log


def test_helpdesk_run_serves_the_web_on_its_listen_address(tmp_path, db_url):
    port = free_port()
    log = _serve_until_sigterm(["--config", _config(tmp_path, db_url, port), "run"], port)
    assert f"web listening on http://127.0.0.1:{port}/" in log and "helpdesk stopped" in log


def test_helpdesk_web_serves_alone_and_listen_can_be_overridden(tmp_path, db_url):
    port = free_port()
    config = _config(tmp_path, db_url, free_port())
    log = _serve_until_sigterm(["--config", config, "web", "--listen", f"127.0.0.1:{port}"], port)
    assert "web stopped" in log
    assert (tmp_path / "data" / "secret_key").is_file()  # generated on this first run


def test_create_app_without_arguments_reads_helpdesk_config(config_file, monkeypatch):
    from webform import create_app
    path = config_file(form={"max_attachments": 2})
    monkeypatch.setenv("HELPDESK_CONFIG", str(path))
    app = create_app()
    desk = app.extensions["helpdesk"]
    assert desk.config.source == path and desk.web.form.max_attachments == 2
    desk.store.dispose()


def test_check_config_reports_web_keys(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[web]\nlisten = "everywhere"\n[form]\nmax_attachments = "five"\n')
    result = subprocess.run([sys.executable, "-m", "daemon.cli", "--config", str(bad),
                             "check-config"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 2
    assert "web.listen: expected HOST:PORT" in result.stderr
    assert "form.max_attachments: must be int" in result.stderr
