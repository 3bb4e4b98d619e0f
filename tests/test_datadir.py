"""A read-only or full data folder at start: a clear error, a non-zero exit, no store written.

The real conditions (a read-only bind mount, a full tmpfs) need mounts, done inside
`unshare -m` so nothing leaks to the machine; where that is forbidden they skip, except
under CI=true (CI runs as root, where `unshare -m` works), where they fail. The variants
through a blocked path and the free-space threshold always run.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from tests.conftest import BASE_CONFIG, merge, require
from tests.tomlwrite import write_config

ROOT = Path(__file__).resolve().parents[1]


def config_for(tmp_path: Path, data: Path, **limits) -> Path:
    doc = merge(BASE_CONFIG, {"limits": limits} if limits else {})
    doc["helpdesk"] = {**doc["helpdesk"], "data_dir": str(data),
                       "database_url": f"sqlite:///{data / 'helpdesk.db'}"}
    doc["smtp_server"] = {"enabled": False}
    doc["web"] = {"enabled": False}
    return write_config(tmp_path / "helpdesk.toml", doc)


def _mounts_allowed() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True, check=False)
    return probe.returncode == 0


def run_in_namespace(setup: str, config: Path, command: str) -> subprocess.CompletedProcess:
    """SETUP (shell, as root in a private mount namespace), then `helpdesk COMMAND` there."""
    require(_mounts_allowed(), "mounts are not permitted here (unshare -m / mount failed)")
    helpdesk = f"{sys.executable} -m daemon.cli --config {config} {command}"
    return subprocess.run(["unshare", "-m", "sh", "-ec", f"{setup}\n{helpdesk}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("command", ["run --once", "migrate"])
def test_read_only_data_folder_refused_before_the_store(tmp_path, command):
    data = tmp_path / "data"
    data.mkdir()
    config = config_for(tmp_path, data)
    result = run_in_namespace(f"mount --bind {data} {data}\nmount -o remount,ro,bind {data}",
                              config, command)
    assert result.returncode == 1, result.stderr
    assert f"data folder {data}: not writable: read-only file system" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(data.iterdir()) == []  # no store, no lock file, no probe left behind


def test_full_data_folder_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = config_for(tmp_path, data, min_free_bytes=0)
    fill = (f"mount -t tmpfs -o size=256k tmpfs {data}\n"
            f"dd if=/dev/zero of={data}/filler bs=4k 2>/dev/null || true")
    result = run_in_namespace(fill, config, "migrate")
    assert result.returncode == 1, result.stderr
    assert f"data folder {data}: not writable: no space left on device" in result.stderr
    assert "Traceback" not in result.stderr


def test_small_filesystem_is_under_the_free_space_threshold(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    config = config_for(tmp_path, data)  # default min_free_bytes: 100 MiB
    result = run_in_namespace(f"mount -t tmpfs -o size=1m tmpfs {data}", config, "run --once")
    assert result.returncode == 1, result.stderr
    assert f"data folder {data}: only 1.0 MiB free, less than [limits] min_free_bytes" \
        in result.stderr


# -- always run: conditions any user can make ------------------------------------------------------
def test_data_folder_under_a_file_is_refused(tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    data = blocker / "data"
    config = config_for(tmp_path, data)
    for command in ("migrate", "run"):
        assert main(["--config", str(config), command]) == 1
        err = capsys.readouterr().err
        assert f"data folder {data}: cannot be created: Not a directory" in err
    assert blocker.read_text() == "a file where a folder should be"


def test_free_space_below_the_threshold_is_refused(tmp_path, capsys):
    data = tmp_path / "data"
    config = config_for(tmp_path, data, min_free_bytes=1 << 60)
    assert main(["--config", str(config), "run", "--once"]) == 1
    err = capsys.readouterr().err
    assert f"data folder {data}: only" in err and "min_free_bytes" in err
    assert not (data / "helpdesk.db").exists()


def test_a_writable_roomy_folder_starts(tmp_path, capsys):
    data = tmp_path / "data"
    config = config_for(tmp_path, data, min_free_bytes=1024)
    assert main(["--config", str(config), "migrate"]) == 0
    assert (data / "helpdesk.db").exists()
    assert not [p for p in data.iterdir() if p.name.startswith(".write-probe")]


def test_negative_threshold_is_a_config_error(tmp_path, capsys):
    config = config_for(tmp_path, tmp_path / "data", min_free_bytes=-1)
    assert main(["--config", str(config), "check-config"]) == 2
    assert "limits.min_free_bytes: must be 0 or more, got -1" in capsys.readouterr().err
