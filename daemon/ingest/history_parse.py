"""Parse a batch of history mail, in the importing process or in a parsing process of
its own (daemon.ingest.archive), which imports this module and the parser only."""
from __future__ import annotations

import hashlib

from daemon.parse import ParsedMail, UnparseableMail, parse_mail

MISSING = "the record's bytes are missing from the store"


def parse_all(raws: list[bytes | None], attachment_max_bytes: int | None
              ) -> list[ParsedMail | str]:
    """Each raw mail parsed, or the reason it cannot be (a quarantine reason).

    Each stored file's SHA-256 comes with it (`digest`, read by
    daemon.ingest.history_writes): in a parsing process the hashing is done beside the
    import too.
    """
    parsed: list[ParsedMail | str] = []
    for raw in raws:
        if raw is None:
            parsed.append(MISSING)
            continue
        try:
            mail = parse_mail(raw, attachment_max_bytes=attachment_max_bytes)
        except UnparseableMail as exc:
            parsed.append(f"unparseable: {exc}")
            continue
        for attachment in mail.attachments:
            if not attachment.truncated:
                attachment.digest = hashlib.sha256(attachment.data).hexdigest()
        parsed.append(mail)
    return parsed
