"""What the scale benchmarks share: stores on both backends, timing figures, result files."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

from daemon.store import Store
from daemon.store.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PG_BASE_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
NOW = datetime(2026, 11, 25, 14, 0, tzinfo=timezone.utc)   # the benchmarks' "now"


def percentile(values: list[float], share: float) -> float:
    """Linear interpolation between closest ranks (share 0..1)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * share
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def timing(samples_ms: list[float]) -> dict:
    return {"n": len(samples_ms), "p50_ms": round(statistics.median(samples_ms), 2),
            "p95_ms": round(percentile(samples_ms, 0.95), 2),
            "min_ms": round(min(samples_ms), 2), "max_ms": round(max(samples_ms), 2)}


@contextlib.contextmanager
def sqlite_store(path: Path, fresh: bool = True) -> Iterator[Store]:
    if fresh:
        for suffix in ("", "-wal", "-shm", ".migrate-lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(f"sqlite:///{path}")
    upgrade(store)
    try:
        yield store
    finally:
        store.dispose()


@contextlib.contextmanager
def pg_store(label: str, keep: bool = False) -> Iterator[Store]:
    """A private schema in the `test` database, migrated, dropped at the end.

    With KEEP the schema is named after LABEL alone (`bench_<label>_kept`), created if
    missing, migrated to the newest revision and left in place, so a later run can reuse
    what it holds (drop it by hand: DROP SCHEMA bench_<label>_kept CASCADE)."""
    schema = f"bench_{label}_kept" if keep else f"bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA {"IF NOT EXISTS " if keep else ""}"{schema}"'))
    store = Store(f"{PG_BASE_URL}?options=-csearch_path%3D{schema}")
    try:
        upgrade(store)
        yield store
    finally:
        store.dispose()
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def pg_available() -> bool:
    try:
        engine = create_engine(PG_BASE_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def machine() -> dict:
    import sqlalchemy
    info = {"python": sys.version.split()[0], "platform": platform.platform(),
            "cpus": os.cpu_count(), "sqlalchemy": sqlalchemy.__version__,
            "sqlite": __import__("sqlite3").sqlite_version}
    try:
        info["postgresql"] = subprocess.run(
            ["psql", PG_BASE_URL, "-Atc", "show server_version"], capture_output=True,
            text=True, timeout=5).stdout.strip()
    except Exception:
        pass
    return info


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), **result}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return path


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start

    @property
    def ms(self) -> float:
        return self.seconds * 1000
