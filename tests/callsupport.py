"""Shared pieces of the call-record tests: the Orange export, its configuration, a JSON API."""
from __future__ import annotations

import codecs
import csv
import io
import json
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from sqlalchemy import select

from daemon.call_views import call_view
from daemon.store.models import Call

WARSAW = ZoneInfo("Europe/Warsaw")
# The columns of Orange's "Wirtualna Centralka" export, as in the example.
ORANGE_HEADER = ["Id połączenia", "Data i godzina", "Numer dzwoniącego", "Numer wybierany",
                 "Czas oczekiwania", "Czas rozmowy", "Status", "Wewnętrzny"]
ORANGE_COLUMNS = {"call_id": "Id połączenia", "started_at": "Data i godzina",
                  "caller": "Numer dzwoniącego", "callee": "Numer wybierany",
                  "wait_seconds": "Czas oczekiwania", "talk_seconds": "Czas rozmowy",
                  "outcome": "Status", "extension": "Wewnętrzny"}
ORANGE_OUTCOMES = {"Odebrane": "answered", "Nieodebrane": "missed", "Porzucone": "abandoned"}
EXTENSIONS = {"101": "anna.kowalska@jantar.pl", "102": "piotr.nowak@jantar.pl"}


def local(text: str) -> datetime:
    """'2026-11-25 10:00' on Warsaw's wall clock, as an aware instant."""
    return datetime.fromisoformat(text).replace(tzinfo=WARSAW)


def orange_source(folder: Path, **overrides) -> dict:
    source = {"name": "orange", "kind": "csv", "path": str(folder / "*.csv"), "every": "5m",
              "timezone": "Europe/Warsaw", "delimiter": ";", "encoding": "windows-1250",
              "columns": dict(ORANGE_COLUMNS), "outcomes": dict(ORANGE_OUTCOMES)}
    source.update(overrides)
    return source


def calls_section(**overrides) -> dict:
    return {"callback_after": "15m", "callback_target": "30m", "service_level_seconds": 20,
            "extensions": dict(EXTENSIONS), **overrides}


def export_bytes(rows: list[list[str]], *, encoding: str = "windows-1250", delimiter: str = ";",
                 bom: bool = False, header: list[str] = ORANGE_HEADER) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = text.getvalue().encode(encoding)
    return codecs.BOM_UTF8 + data if bom else data


def write_export(path: Path, rows: list[list[str]], **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(export_bytes(rows, **kwargs))
    return path


def row(call_id: str, started: str, caller: str, status: str, *, wait: str = "5",
        talk: str = "0", callee: str = "500", extension: str = "") -> list[str]:
    return [call_id, started, caller, callee, wait, talk, status, extension]


def stored_calls(store, tz=WARSAW) -> list[dict]:
    with store.transaction() as session:
        return [call_view(c, tz) for c in session.scalars(
            select(Call).order_by(Call.started_at, Call.id))]


def by_id(calls: list[dict]) -> dict[str, dict]:
    return {c["call_id"]: c for c in calls}


# -- a paginated JSON API on a loopback port ----------------------------------------------
class CallApi:
    """Serves `records` at /calls, filtered by ?since=, paged as the test asks.

    `paging`: page (page/size), offset (offset/limit) or next (a cursor in links.next).
    Every request's query is kept in `requests`. Auth: bearer TOKEN or basic USER:PASS.
    """

    def __init__(self, records: list[dict], paging: str, auth: str | None = None):
        self.records, self.paging, self.auth = records, paging, auth
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                api.handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/calls"

    def __enter__(self) -> CallApi:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(request.path).query).items()}
        self.requests.append(query)
        if self.auth and request.headers.get("Authorization") != self.auth:
            request.send_response(401)
            request.end_headers()
            return
        body = self.page(self.visible(query.get("since")), query)
        data = json.dumps(body).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def visible(self, since: str | None) -> list[dict]:
        if not since:
            return list(self.records)
        limit = datetime.fromisoformat(since.replace("Z", "+00:00"))
        return [r for r in self.records if datetime.fromisoformat(r["start"]) >= limit]

    def page(self, records: list[dict], query: dict) -> dict:
        if self.paging == "page":
            size, number = int(query["size"]), int(query["page"])
            return {"data": {"calls": records[(number - 1) * size:number * size]}}
        if self.paging == "offset":
            offset, limit = int(query["offset"]), int(query["limit"])
            return {"data": {"calls": records[offset:offset + limit]}}
        start = int(query.get("cursor", 0))
        body = {"data": {"calls": records[start:start + 2]}, "links": {}}
        if start + 2 < len(records):
            since = f"&since={query['since']}" if "since" in query else ""
            body["links"]["next"] = f"/calls?cursor={start + 2}{since}"
        return body
