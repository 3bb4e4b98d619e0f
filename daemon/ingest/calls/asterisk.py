"""Asterisk call records: Master.csv (cdr_csv, no header) and, when configured, queue_log.

Master.csv has the standard cdr_csv column order: accountcode, src, dst, dcontext, clid,
channel, dstchannel, lastapp, lastdata, start, answer, end, duration, billsec,
disposition, amaflags, uniqueid, userfield (later versions add more; they are kept in
the raw row). Disposition ANSWERED / NO ANSWER / BUSY / FAILED / CONGESTION gives the
outcome; billsec is the talk time, duration - billsec the ring time.

A call into a queue is answered by Asterisk itself, so its CDR says ANSWERED even when
the caller gave up. queue_log tells the truth: CONNECT (holdtime: the wait; the agent),
ABANDON and EXITWITHTIMEOUT (waittime), COMPLETEAGENT/COMPLETECALLER (talk time). Its
lines carry the call's uniqueid, so they update calls already stored; facts about calls
whose CDR line has not arrived yet are kept in the source's cursor for the next run.
"""
from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select

from daemon.ingest.calls.config import PbxSource
from daemon.ingest.calls.csvsource import PROGRESS_ROWS, Progress
from daemon.ingest.calls.files import TextLines
from daemon.ingest.calls.matching import CallDirectory
from daemon.ingest.calls.numbers import extension_of
from daemon.ingest.calls.records import CALLBACK_OUTCOMES, RowError, make_record
from daemon.ingest.calls.writer import CallWriter, Transaction
from daemon.store.models import Call

CDR_COLUMNS = ("accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel",
               "lastapp", "lastdata", "start", "answer", "end", "duration", "billsec",
               "disposition", "amaflags", "uniqueid", "userfield")
MIN_CDR_FIELDS = 15           # through disposition; uniqueid is optional (loguniqueid)
QUEUE_BATCH = 1000
PENDING_KEEP = timedelta(days=2)   # queue facts waiting this long for their CDR are dropped
PENDING_MAX = 20000
QUEUE_END_EVENTS = ("CONNECT", "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY", "EXITWITHKEY",
                    "COMPLETEAGENT", "COMPLETECALLER")


# -- Master.csv ---------------------------------------------------------------------------
def import_master_csv(lines: TextLines, source: PbxSource, writer: CallWriter, label: str,
                      progress: Progress | None = None) -> None:
    start = lines.line + 1
    for count, cells in enumerate(csv.reader(lines, delimiter=","), 1):
        line, start = start, lines.line + 1
        if not cells or not any(c.strip() for c in cells):
            continue
        if progress and count % PROGRESS_ROWS == 0:
            progress(lines.offset)
        try:
            record = make_record(cdr_values(cells, lines, line), source)
        except RowError as exc:
            writer.result.read += 1
            writer.result.error(label, line, str(exc))
            continue
        writer.add(record, dict(zip(CDR_COLUMNS, cells)) | _extra(cells), f"{label}:{line}")


def cdr_values(cells: list[str], lines: TextLines, line: int) -> dict[str, str]:
    """One Master.csv line as our fields (texts), read the way make_record reads any source."""
    if any(n in lines.undecodable for n in range(line, lines.line + 1)):
        raise RowError(f"bytes that are not {lines.encoding}")
    if len(cells) < MIN_CDR_FIELDS:
        raise RowError(f"{len(cells)} fields; a Master.csv line has at least {MIN_CDR_FIELDS} "
                       f"(accountcode … disposition)")
    cdr = dict(zip(CDR_COLUMNS, (c.strip() for c in cells)))
    answered = cdr["disposition"].upper() == "ANSWERED"
    duration, billsec = _int(cdr["duration"], "duration"), _int(cdr["billsec"], "billsec")
    outcome = "voicemail" if cdr["lastapp"].lower() == "voicemail" and not answered \
        else cdr["disposition"]
    return {
        "call_id": cdr.get("uniqueid", ""), "caller": cdr["src"], "callee": cdr["dst"],
        "started_at": cdr["start"], "answered_at": cdr["answer"], "ended_at": cdr["end"],
        "talk_seconds": str(billsec if answered else 0),
        "wait_seconds": str(max(duration - billsec, 0) if answered else duration),
        "outcome": outcome,
        "queue": cdr["lastdata"].split(",")[0] if cdr["lastapp"].lower() == "queue" else "",
        "extension": extension_of(cdr["dstchannel"]) or "",
    }


def _int(text: str, name: str) -> int:
    try:
        return int(text or 0)
    except ValueError:
        raise RowError(f"{name}: {text!r} is not a number of seconds") from None


def _extra(cells: list[str]) -> dict:
    return {"more": cells[len(CDR_COLUMNS):]} if len(cells) > len(CDR_COLUMNS) else {}


# -- queue_log ----------------------------------------------------------------------------
@dataclass
class QueueFacts:
    """What queue_log says about one call (by its uniqueid)."""

    at: float = 0.0                # the last event's time (epoch seconds)
    queue: str | None = None
    outcome: str | None = None
    wait_seconds: int | None = None
    talk_seconds: int | None = None
    agent: str | None = None
    ended: bool = False

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class QueueLog:
    """queue_log facts gathered in one run, plus those carried over from the last one."""

    facts: dict[str, QueueFacts] = field(default_factory=dict)

    @classmethod
    def carried(cls, saved: dict | None) -> QueueLog:
        return cls({k: QueueFacts(**v) for k, v in (saved or {}).items()})

    def read(self, lines: TextLines) -> Iterator[None]:
        """Take in every line; yields every QUEUE_BATCH finished calls, to apply them."""
        finished = 0
        for text in lines:
            parts = text.rstrip("\r\n").split("|")
            if len(parts) < 5 or not parts[1] or parts[1] == "NONE":
                continue
            facts = self.facts.setdefault(parts[1], QueueFacts())
            if _apply_event(facts, parts) and facts.ended:
                finished += 1
                if finished % QUEUE_BATCH == 0:
                    yield

    def keep(self, now: datetime) -> dict:
        """The facts still waiting for their call's CDR, as the cursor stores them."""
        oldest = (now - PENDING_KEEP).timestamp()
        kept = {k: f for k, f in self.facts.items() if f.at >= oldest}
        newest = sorted(kept.items(), key=lambda item: item[1].at)[-PENDING_MAX:]
        return {k: f.as_dict() for k, f in newest}


def _apply_event(facts: QueueFacts, parts: list[str]) -> bool:
    """Fold one queue_log line into FACTS; False for a line that says nothing we use."""
    try:
        at, event, data = float(parts[0]), parts[4].upper(), parts[5:] + ["", "", "", ""]
        facts.at = max(facts.at, at)
        if parts[2] and parts[2] != "NONE":
            facts.queue = parts[2][:100]
        if event == "CONNECT":
            facts.outcome, facts.wait_seconds = "answered", int(data[0] or 0)
            facts.agent = parts[3] if parts[3] != "NONE" else facts.agent
        elif event in ("ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY"):
            facts.outcome = "abandoned" if event == "ABANDON" else "missed"
            facts.wait_seconds, facts.talk_seconds, facts.ended = int(data[2] or 0), 0, True
        elif event == "EXITWITHKEY":
            facts.outcome, facts.wait_seconds = "missed", int(data[3] or 0)
            facts.talk_seconds, facts.ended = 0, True
        elif event in ("COMPLETEAGENT", "COMPLETECALLER"):
            facts.outcome = "answered"
            facts.wait_seconds, facts.talk_seconds = int(data[0] or 0), int(data[1] or 0)
            facts.agent, facts.ended = parts[3] if parts[3] != "NONE" else facts.agent, True
        else:
            return False
    except ValueError:
        return False   # a line another Asterisk version writes differently: not ours to judge
    return True


def apply_queue_facts(transaction: Transaction, source: PbxSource, queue_log: QueueLog,
                      directory_of) -> int:
    """Update the stored calls queue_log has finished facts for; returns how many.

    Applied facts leave QUEUE_LOG; the rest (no CDR yet, or the call still going on)
    stay, to be carried to the next run.
    """
    updated = 0
    ready = [k for k, f in queue_log.facts.items() if f.ended]
    for start in range(0, len(ready), QUEUE_BATCH):
        chunk = ready[start:start + QUEUE_BATCH]
        with transaction() as session:
            directory = directory_of(session)
            for call in session.scalars(select(Call).where(Call.source == source.name,
                                                           Call.call_id.in_(chunk))):
                _update_call(call, queue_log.facts.pop(call.call_id), directory)
                updated += 1
    return updated


def _update_call(call: Call, facts: QueueFacts, directory: CallDirectory) -> None:
    call.outcome = facts.outcome or call.outcome
    call.wait_seconds = facts.wait_seconds if facts.wait_seconds is not None else call.wait_seconds
    call.talk_seconds = facts.talk_seconds if facts.talk_seconds is not None else call.talk_seconds
    call.queue = facts.queue or call.queue
    if facts.agent:
        call.extension = extension_of(facts.agent) or facts.agent[:100]
        call.technician_id = directory.technician(facts.agent) or call.technician_id
    needs_check = (call.direction == "in" and call.outcome in CALLBACK_OUTCOMES
                   and (call.caller or "").startswith("+"))
    if needs_check and call.callback is None:
        call.callback = "pending"
    elif not needs_check and call.callback == "pending":
        call.callback = None
