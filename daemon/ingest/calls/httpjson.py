"""A generic paginated JSON API of call records: auth, paging, where the records are.

Paging styles: `page` (page=1,2,… and size), `offset` (offset=0,100,… and limit), `next`
(each answer names the next page's URL at `next_path`) and `none`. Records are the list
at `records_path` (dotted, e.g. "data.calls"; "" when the answer is the list itself);
their fields are found by the same [pbx_sources.columns] mapping, as dotted paths.

With `since_param` the API is asked only for records since the cursor (the newest start
time seen) less `overlap`, so a record the PBX publishes late is still fetched; records
fetched twice are stored once.
"""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from daemon.ingest.calls.config import PbxSource

UTC = timezone.utc


class SourceError(Exception):
    """The source could not be read at all this time (network, auth, not JSON)."""


def fetch_records(source: PbxSource, since: datetime | None
                  ) -> Iterator[tuple[str, int, Any]]:
    """(page URL, record's place on the page from 1, record) for every record of every page."""
    for url, body in _pages(source, since):
        for index, record in enumerate(_records(body, source, url), 1):
            yield url, index, record


def field_values(record: Any, source: PbxSource) -> dict[str, str]:
    """The mapping applied to one JSON record: our field -> text (numbers as written)."""
    values = {}
    for ours, paths in source.columns.items():
        found = [at_path(record, path) for path in paths]
        values[ours] = " ".join(_text(v) for v in found if v is not None and v != "")
    return values


def at_path(document: Any, path: str) -> Any:
    """document["a"]["b"][0] for "a.b.0"; None where the path leads nowhere."""
    value = document
    for part in filter(None, path.split(".")):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and \
                -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


# -- paging -------------------------------------------------------------------------------
def _pages(source: PbxSource, since: datetime | None) -> Iterator[tuple[str, Any]]:
    base = _with_params(source.url, _since_params(source, since))
    if source.paging == "next":
        yield from _next_pages(source, base)
        return
    number = source.first_page
    for _ in range(source.max_pages):
        params = {} if source.paging == "none" else \
            {source.page_param: number, source.size_param: source.page_size}
        url = _with_params(base, params)
        body = _get(source, url)
        yield url, body
        count = len(_records(body, source, url))
        if source.paging == "none" or count < source.page_size:
            return
        number += count if source.paging == "offset" else 1


def _next_pages(source: PbxSource, url: str) -> Iterator[tuple[str, Any]]:
    seen: set[str] = set()
    for _ in range(source.max_pages):
        seen.add(url)
        body = _get(source, url)
        yield url, body
        following = at_path(body, source.next_path or "")
        if not following or not isinstance(following, str):
            return
        url = urllib.parse.urljoin(url, following)
        if url in seen:
            raise SourceError(f"{url}: the next page link leads back to a page already read")


def _since_params(source: PbxSource, since: datetime | None) -> dict[str, Any]:
    if not source.since_param or since is None:
        return {}
    since = since.astimezone(UTC)
    value = {"iso": since.isoformat().replace("+00:00", "Z"),
             "epoch": int(since.timestamp()),
             "epoch_ms": int(since.timestamp() * 1000)}[source.since_format]
    return {source.since_param: value}


def _with_params(url: str, params: dict[str, Any]) -> str:
    if not params:
        return url
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query = [(k, v) for k, v in query if k not in params] + [(k, str(v)) for k, v in params.items()]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _records(body: Any, source: PbxSource, url: str) -> list:
    records = at_path(body, source.records_path)
    if records is None and source.records_path:
        return []   # an empty last page often leaves the list out
    if not isinstance(records, list):
        raise SourceError(f"{url}: {source.records_path or 'the answer'!s} is not a list of "
                          f"records (check records_path)")
    return records


# -- HTTP ---------------------------------------------------------------------------------
def _get(source: PbxSource, url: str) -> Any:
    request = urllib.request.Request(url, headers={"Accept": "application/json",
                                                   "User-Agent": "jantar-helpdesk",
                                                   **_auth_header(source)})
    try:
        with urllib.request.urlopen(request, timeout=source.timeout.total_seconds()) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{_safe(url)}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise SourceError(f"{_safe(url)}: {getattr(exc, 'reason', exc)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SourceError(f"{_safe(url)}: not JSON: {exc}") from None


def _auth_header(source: PbxSource) -> dict[str, str]:
    if source.auth == "bearer":
        return {"Authorization": f"Bearer {source.token}"}
    if source.auth == "basic":
        pair = f"{source.username}:{source.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
    return {}


def _safe(url: str) -> str:
    """URL without credentials, for logs and errors."""
    parts = urllib.parse.urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port
                                                  else host))


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
