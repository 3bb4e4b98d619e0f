"""PBX reports by mail: CSV attachments of mail to a `mail` source's mailbox are call records.

Called by the pipeline step `pbx_report` inside the raw record's transaction, so the
calls, the callback tickets they open and the record's "processed" status are
committed together; a redelivered report is the same raw record (or its rows are
recognised by call id), so nothing is stored twice.
"""
from __future__ import annotations

import io
from datetime import datetime

from sqlalchemy.orm import Session

from daemon.config import Config, derived
from daemon.ingest.calls.config import calls_config
from daemon.ingest.calls.csvsource import import_csv_stream, read_layout
from daemon.ingest.calls.files import FileProblem, TextLines
from daemon.ingest.calls.run import record_run
from daemon.ingest.calls.writer import CallWriter, ImportResult, in_session
from daemon.parse import ParsedAttachment, ParsedMail, parse_mail
from daemon.rules.callbacks import callbacks_in_session
from daemon.store.models import RawMessage

CSV_TYPES = ("text/csv", "application/csv", "text/comma-separated-values", "text/x-csv")


def is_report_mail(config: Config, raw: RawMessage) -> bool:
    """Whether RAW came to a `mail` PBX source's mailbox. Asked of every record: the
    mailboxes are worked out once per Config, not read from its sections each time."""
    return (raw.mailbox or "").lower() in derived(config, ("pbx report mailboxes",), lambda: {
        s.mailbox for s in calls_config(config).sources if s.kind == "mail"})


def import_report(session: Session, config: Config, raw: RawMessage, mail: ParsedMail,
                  now: datetime) -> ImportResult:
    """Every CSV attachment of MAIL into the calls of the mailbox's source; then callbacks."""
    calls = calls_config(config)
    source = calls.mail_source(raw.mailbox)
    result = ImportResult(source.name)
    writer = CallWriter(in_session(session), source, calls.settings, now, result)
    for attachment in csv_attachments(mail, raw):
        label = f"{mail.message_id or f'raw {raw.id}'}/{attachment.filename}"
        result.files.append(attachment.filename)
        lines = TextLines(io.BytesIO(attachment.data), source.encoding)
        try:
            import_csv_stream(lines, read_layout(lines, source), source, writer, label)
        except FileProblem as exc:
            result.error(label, exc.line, str(exc))
    writer.flush()
    if result.files:
        result.callbacks = dict(callbacks_in_session(session, config, now))
        record_run(session, source.name, now, result)
    return result


def csv_attachments(mail: ParsedMail, raw: RawMessage) -> list[ParsedAttachment]:
    found = [a for a in mail.attachments if _is_csv(a)]
    if any(a.truncated for a in found):
        # Over the attachment cap for storing files: a report is read whole all the same.
        whole = parse_mail(raw.raw, attachment_max_bytes=None)
        found = [a for a in whole.attachments if _is_csv(a)]
    return found


def _is_csv(attachment: ParsedAttachment) -> bool:
    return attachment.filename.lower().endswith(".csv") or \
        attachment.content_type.lower() in CSV_TYPES
