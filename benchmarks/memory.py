"""Memory: peak RSS of `helpdesk ingest` on a mail with a 25 MB attachment, and idle `helpdesk run`.

Peaks are the kernel's own (ru_maxrss of the finished child, from wait4), so no short
spike is missed between samples. The "idle footprint" the ingest target adds to 4x the
mail's size is the peak of the same command on a one-line mail (interpreter, libraries,
store). The parser's share is measured apart: a process that only reads and parses each
mail. The idle daemon runs with the default configuration but for its ports and
folders (SMTP receiver and web enabled), and its RSS is read once it has settled.

    python -m benchmarks.memory [--attachment-mb 25]
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import psutil

from benchmarks.scale_common import ROOT, write_result

WORK = ROOT / "var" / "bench" / "memory"
IDLE_TARGET_MB = 120


def make_mail(path: Path, attachment_bytes: int) -> None:
    message = EmailMessage()
    message["From"] = "Jan Nowak <jan.nowak@bursztyn.pl>"
    message["To"] = "sklep@jantar.pl"
    message["Subject"] = "Zdjęcia drukarki fiskalnej ze sklepu nr 12"
    message["Message-ID"] = f"<memory-{attachment_bytes}@bursztyn.pl>"
    message["Date"] = "Wed, 25 Nov 2026 10:00:00 +0100"
    message.set_content("Dzień dobry,\nw załączniku nagranie z kasy, drukarka nie drukuje.\n")
    if attachment_bytes:
        payload = os.urandom(attachment_bytes)  # incompressible, like a video or a photo
        message.add_attachment(payload, maintype="application", subtype="octet-stream",
                               filename="nagranie-kasa-3.mp4")
    path.write_bytes(bytes(message))


def config_toml(data_dir: Path, smtp_port: int = 2525, web_port: int = 8080) -> str:
    return (f'[helpdesk]\ndatabase_url = "sqlite:///{data_dir}/helpdesk.db"\n'
            f'data_dir = "{data_dir}"\n'
            f'[smtp_server]\nlisten = "127.0.0.1:{smtp_port}"\n'
            f'[web]\nlisten = "127.0.0.1:{web_port}"\n'
            f'[outbound]\nmaildir = "{data_dir}/sent"\n')


def helpdesk(config: Path) -> list[str]:
    return [sys.executable, "-m", "daemon.cli", "--config", str(config)]


# A program started by a big process reports that process's peak as its own: the kernel
# keeps the peak of the memory a process had before it started the program. Started by
# this small stub instead, the figure is the command's.
_MEASURED = ("import os, subprocess, sys; child = subprocess.Popen(sys.argv[1:]); "
             "_, status, usage = os.wait4(child.pid, 0); "
             "print(f'maxrss_kb={usage.ru_maxrss}', file=sys.stderr); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


def peak_rss_of(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, stderr tail) of COMMAND, from the kernel's accounting."""
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", _MEASURED, *command], cwd=ROOT,
                             capture_output=True)
    seconds = time.perf_counter() - started
    err, _, figure = process.stderr.decode(errors="replace").rstrip("\n").rpartition("\n")
    if process.returncode != 0 or not figure.startswith("maxrss_kb="):
        raise RuntimeError(f"{command} failed: {(err + figure)[-2000:]}")
    return int(figure.removeprefix("maxrss_kb=")) / 1024, seconds, err[-500:]


def ingest_peak(name: str, attachment_bytes: int) -> dict:
    data_dir = WORK / name
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob("helpdesk.db*"):
        old.unlink()
    config = data_dir / "helpdesk.toml"
    config.write_text(config_toml(data_dir))
    subprocess.run([*helpdesk(config), "migrate"], check=True, capture_output=True, cwd=ROOT)
    mail = data_dir / "mail.eml"
    # In a child, so that this process stays small (see _MEASURED).
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from benchmarks.memory import make_mail; "
                    "make_mail(Path(sys.argv[1]), int(sys.argv[2]))", str(mail),
                    str(attachment_bytes)], check=True, cwd=ROOT)
    peak, seconds, _ = peak_rss_of([*helpdesk(config), "ingest", str(mail)])
    return {"mail_mb": round(mail.stat().st_size / 2**20, 2),
            "attachment_mb": round(attachment_bytes / 2**20, 2),
            "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 2)}


def parse_peak(name: str) -> dict:
    """Peak RSS of a process that only reads the mail ingest_peak(NAME) made and parses it:
    the parser's share of the ingest peak, without the store's."""
    mail = WORK / name / "mail.eml"
    code = ("import sys; from daemon.parse import parse_mail; "
            "parse_mail(open(sys.argv[1], 'rb').read())")
    peak, seconds, _ = peak_rss_of([sys.executable, "-c", code, str(mail)])
    return {"peak_rss_mb": round(peak, 1), "seconds": round(seconds, 2)}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def idle_daemon(settle_seconds: float = 60) -> dict:
    data_dir = WORK / "idle"
    data_dir.mkdir(parents=True, exist_ok=True)
    smtp_port, web_port = free_port(), free_port()
    config = data_dir / "helpdesk.toml"
    config.write_text(config_toml(data_dir, smtp_port, web_port))
    process = subprocess.Popen([*helpdesk(config), "run"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    watched = psutil.Process(process.pid)
    samples = []
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < settle_seconds:
            if process.poll() is not None:
                raise RuntimeError(f"helpdesk run exited: {process.stderr.read()[-2000:]!r}")
            samples.append((round(time.perf_counter() - started, 1),
                            round(watched.memory_info().rss / 2**20, 1)))
            time.sleep(1)
        # both listeners answer: the receiver's banner and the web's sign-in page
        with socket.create_connection(("127.0.0.1", smtp_port), timeout=5) as smtp:
            banner = smtp.recv(200).decode(errors="replace").strip()
        import urllib.request
        web_status = urllib.request.urlopen(f"http://127.0.0.1:{web_port}/login", timeout=5).status
        rss = watched.memory_info().rss / 2**20
        uss = watched.memory_full_info().uss / 2**20
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    return {"rss_mb": round(rss, 1), "uss_mb": round(uss, 1), "smtp_banner": banner[:60],
            "web_status": web_status, "settle_seconds": settle_seconds,
            "rss_over_time_mb": samples[::5], "met": rss < IDLE_TARGET_MB}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attachment-mb", type=float, default=25)
    parser.add_argument("--settle", type=float, default=60)
    parser.add_argument("--label", default="memory")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    small = ingest_peak("small", 0)
    big = ingest_peak("big", int(args.attachment_mb * 2**20))
    parse_small, parse_big = parse_peak("small"), parse_peak("big")
    target = 4 * big["mail_mb"] + small["peak_rss_mb"]
    ingest = {"small_mail": small, "big_mail": big, "idle_footprint_mb": small["peak_rss_mb"],
              "target_mb": round(target, 1), "met": big["peak_rss_mb"] < target,
              "peak_over_mail_size": round((big["peak_rss_mb"] - small["peak_rss_mb"])
                                           / big["mail_mb"], 2),
              "parse_only": {"small_mail": parse_small, "big_mail": parse_big,
                             "peak_over_mail_size": round(
                                 (parse_big["peak_rss_mb"] - parse_small["peak_rss_mb"])
                                 / big["mail_mb"], 2)}}
    print(f"  ingest: small peak {small['peak_rss_mb']} MB, {big['mail_mb']} MB mail peak "
          f"{big['peak_rss_mb']} MB (target {target:.0f} MB); parse alone: small "
          f"{parse_small['peak_rss_mb']} MB, big {parse_big['peak_rss_mb']} MB", file=sys.stderr)
    idle = idle_daemon(args.settle)
    print(f"  idle helpdesk run: {idle['rss_mb']} MB RSS (USS {idle['uss_mb']} MB)", file=sys.stderr)
    write_result(args.label, {"ingest": ingest, "idle_run": idle,
                              "idle_target_mb": IDLE_TARGET_MB})
    return 0


if __name__ == "__main__":
    sys.exit(main())
