"""What ships for production: the systemd unit (checked by systemd-analyze and read for the
directives production needs) and the nginx example (run for real in front of `helpdesk
web`, over TLS, with `[web] proxies = 1`)."""
from __future__ import annotations

import configparser
import http.client
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from daemon.cli import build_parser, cmd_run
from daemon.service import THREAD_JOIN_SECONDS
from tests.conftest import BASE_CONFIG, merge, require
from tests.test_daemon import ROOT, free_port, listening, wait_until
from tests.tomlwrite import write_config

UNIT = ROOT / "deploy" / "helpdesk.service"
SYSUSERS = ROOT / "deploy" / "helpdesk.sysusers"
NGINX_SITE = ROOT / "deploy" / "nginx-helpdesk.conf"


def read_unit(path: Path = UNIT) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd's keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def seconds(text: str) -> float:
    """A systemd time span: '120', '90s', '2min', '1min 30s'."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+)\s*([a-z]*)", text)
    assert parts and "".join(n + u for n, u in parts) == text.replace(" ", ""), text
    return sum(int(n) * units[u] for n, u in parts)


def console_scripts() -> dict[str, str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


# -- the systemd unit -------------------------------------------------------------------------
def test_the_unit_has_what_production_needs():
    service = read_unit()["Service"]
    assert service["User"] and service["User"] != "root" and service["Group"] == service["User"]
    assert f"u {service['User']} " in SYSUSERS.read_text()  # the user the unit runs as is made
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "helpdesk"  # the one writable place: /var/lib/helpdesk
    assert service["WorkingDirectory"] == "/var/lib/helpdesk"
    assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
    # Room for the threads' own wait, the jobs running and the receiver's saves.
    assert seconds(service["TimeoutStopSec"]) >= 3 * THREAD_JOIN_SECONDS
    assert service["NoNewPrivileges"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert set(service["RestrictAddressFamilies"].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert service["Environment"] == "HELPDESK_CONFIG=/etc/helpdesk/helpdesk.toml"


def test_the_units_command_is_the_packages_run():
    executable, *arguments = read_unit()["Service"]["ExecStart"].split()
    assert Path(executable).is_absolute()
    assert console_scripts()[Path(executable).name] == "daemon.cli:main"
    assert build_parser().parse_args(arguments).func is cmd_run


def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    require(analyze is not None, "systemd-analyze is not installed (Debian: apt-get install systemd)")
    installed = Path(sys.executable).with_name("helpdesk")
    require(installed.exists(), f"the helpdesk command is not installed beside {sys.executable}")
    # verify wants ExecStart's program to exist: the one this Python installed stands in
    # for /opt/helpdesk/bin/helpdesk; nothing else of the unit is changed.
    executable = read_unit()["Service"]["ExecStart"].split()[0]
    unit = tmp_path / "helpdesk.service"
    unit.write_text(UNIT.read_text().replace(executable, str(installed)))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# -- nginx in front of the web -----------------------------------------------------------------
def nginx_config(tmp_path: Path, *, tls_port: int, http_port: int, web_port: int) -> Path:
    """The shipped site on loopback ports with a self-signed certificate, in a main config
    of its own (no daemon, files under TMP_PATH)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=helpdesk.jantar.pl", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    site = NGINX_SITE.read_text()
    for shipped, here in (("listen [::]:80;", ""), ("listen [::]:443 ssl;", ""),
                          ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                          ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
                          ("/etc/letsencrypt/live/helpdesk.jantar.pl/fullchain.pem",
                           str(tmp_path / "cert.pem")),
                          ("/etc/letsencrypt/live/helpdesk.jantar.pl/privkey.pem",
                           str(tmp_path / "key.pem")),
                          ("/var/www/html", str(tmp_path)),
                          ("http://127.0.0.1:8080;", f"http://127.0.0.1:{web_port};")):
        assert shipped in site, shipped
        site = site.replace(shipped, here)
    (tmp_path / "site.conf").write_text(site)
    temp = tmp_path / "nginx-temp"
    temp.mkdir()
    main = tmp_path / "nginx.conf"
    # As root, nginx's workers would be nobody, who may not write under TMP_PATH.
    main.write_text(f"""
{"user root;" if os.geteuid() == 0 else ""}
daemon off;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {tmp_path}/site.conf;
}}
""")
    return main


class Browser:
    """HTTPS to nginx as a browser of helpdesk.jantar.pl would: cookies kept, no cert check."""

    def __init__(self, port: int):
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.port, self.context, self.cookies = port, context, {}

    def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context,
                                                 timeout=60)
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection.request(method, path, body=body, headers={
            "Host": "helpdesk.jantar.pl", **({"Cookie": cookie} if cookie else {}),
            **(headers or {})})
        response = connection.getresponse()
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response, response.read().decode(errors="replace")


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
             .encode() for name, value in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
              f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
              .encode() + content + b"\r\n" for name, (filename, content) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def test_nginx_in_front_carries_the_form_over_tls_and_the_web_believes_it(tmp_path):
    """The shipped site, run by a real nginx before `helpdesk web` with `[web] proxies = 1`:
    a report with a 2 MB photo goes through (nginx's own 1 MB limit would refuse it), and
    the web knows the visitor came over https: a POST without a Referer is refused as
    Flask-WTF refuses it on https only, so X-Forwarded-Proto reached it and was believed."""
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()),
                                          None)
    require(nginx is not None and shutil.which("openssl") is not None,
            "nginx or openssl is not installed (Debian: apt-get install nginx)")
    tls_port, http_port, web_port = free_port(), free_port(), free_port()
    doc = merge(BASE_CONFIG, {"web": {"listen": f"127.0.0.1:{web_port}", "proxies": 1}})
    doc["helpdesk"] = {**doc["helpdesk"], "web_url": "https://helpdesk.jantar.pl",
                       "data_dir": str(tmp_path / "data"),
                       "database_url": f"sqlite:///{tmp_path / 'helpdesk.db'}"}
    config = write_config(tmp_path / "helpdesk.toml", doc)
    web = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), "web"],
                           cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen([nginx, "-c", str(nginx_config(tmp_path, tls_port=tls_port,
                                                            http_port=http_port,
                                                            web_port=web_port))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: listening(web_port) and listening(tls_port), what="web and nginx")
        browser = Browser(tls_port)
        response, page = browser.request("GET", "/")
        assert response.status == 200, page
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        fields = {"csrf_token": token, "name": "Jan Kowalski", "email": "jan.nowak@bursztyn.pl",
                  "client": "Sieć Bursztyn", "location": "Sklep 12", "category": "other",
                  "subject": "Terminal nie łączy się z bankiem", "description": "Od rana."}
        body, content_type = multipart(fields, {"attachments": ("ekran.jpg", b"\xff" * 2_000_000)})
        refused, _ = browser.request("POST", "/", body, {"Content-Type": content_type})
        assert refused.status == 400  # no Referer: refused because the web knows it is https
        sent, page = browser.request("POST", "/", body, {
            "Content-Type": content_type, "Referer": "https://helpdesk.jantar.pl/"})
        assert sent.status == 303, page
        _, page = browser.request("GET", sent.headers["Location"].split("helpdesk.jantar.pl")[-1])
        assert "JAN-1" in page
    finally:
        proxy.send_signal(signal.SIGQUIT)
        web.send_signal(signal.SIGTERM)
        proxy.wait(timeout=30)
        web.wait(timeout=30)
