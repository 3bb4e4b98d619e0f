"""Every message of the shared corpus goes through `helpdesk ingest`: one record per mail, a
ticket message or a quarantined record with its reason, never an exception, within a
memory and CPU bound for the whole run (both backends)."""
from daemon.store import Store
from tests.test_hostile_mail import MiB, assert_each_input_accounted_for, ingest_measured

CORPUS_FILES = 396
# The whole corpus (9 MB) in one `helpdesk ingest`: 110-130 MiB and 4-7 CPU seconds here.
CORPUS_RSS, CORPUS_CPU_SECONDS = 384 * MiB, 120.0


def test_whole_corpus_is_ingested_without_an_exception(corpus_dir, config_file, db_url, tmp_path):
    files = sorted(p for p in corpus_dir.rglob("*.eml"))
    assert len(files) == CORPUS_FILES
    folders = sorted(p for p in corpus_dir.iterdir() if p.is_dir())  # not README, SOURCES
    summary, usage = ingest_measured(config_file(), folders, tmp_path / "usage.json")
    assert sum(summary["files"].values()) == len(files)

    raws = [path.read_bytes() for path in files]
    store = Store(db_url)
    try:
        outcomes = assert_each_input_accounted_for(store, raws)
    finally:
        store.dispose()
    assert summary["processed"] == dict(outcomes), (summary, outcomes)
    assert outcomes["quarantined"] < 10, outcomes
    assert outcomes["processed"] > CORPUS_FILES * 0.9, outcomes
    assert usage.peak_rss <= CORPUS_RSS, f"peak RSS {usage.peak_rss / MiB:.0f} MiB"
    assert usage.cpu_seconds <= CORPUS_CPU_SECONDS, f"{usage.cpu_seconds:.0f} CPU seconds"
