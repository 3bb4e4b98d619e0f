"""Server-side web sessions: opened at sign-in, checked on every request, ended on the server.

The browser's session cookie (signed by Flask) carries a random token; the store keeps
only its SHA-256 in `web_sessions`, with when the session began and was last seen. A
session counts while it has not ended, its account may still sign in, it was seen
within the idle timeout and began within the lifetime; the first request that finds
one of these broken ends it, with the reason. Sign-out ends the session it is made
from; a new password or a disabled account ends every session of that account.

`last_seen_at` is written at most once per `touch_every` (a minute) per session, not on
every page view, which on SQLite would be a write per click; so the idle timeout is kept
to within that minute.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from daemon.store.models import Technician, WebSession

TOKEN_BYTES = 32
TOUCH_EVERY = timedelta(minutes=1)
# Ended and expired sessions stay this long past their lifetime (who was signed in from
# where); each sign-in of the account deletes its older ones.
KEEP_ENDED = timedelta(days=30)
MAX_CLIENT_IP = 64                 # the column's width; X-Forwarded-For can say anything

# ended_reason values
SIGNED_OUT, PASSWORD, DISABLED, IDLE, EXPIRED = "signed_out", "password", "disabled", "idle", "expired"


@dataclass(frozen=True)
class SessionPolicy:
    """How long a session may sit unused, and how long it may last at all."""

    idle_timeout: timedelta
    lifetime: timedelta

    @property
    def touch_every(self) -> timedelta:
        return min(TOUCH_EVERY, self.idle_timeout / 10)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(db: Session, technician: Technician, policy: SessionPolicy, *,
                 client_ip: str, now: datetime) -> str:
    """A new session for TECHNICIAN; returns its token (for the cookie, never stored)."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    db.execute(delete(WebSession).where(WebSession.technician_id == technician.id,
                                        WebSession.created_at < now - policy.lifetime - KEEP_ENDED))
    db.add(WebSession(token_hash=token_hash(token), technician_id=technician.id,
                      created_at=now, last_seen_at=now,
                      client_ip="".join(c for c in client_ip if c.isprintable())[:MAX_CLIENT_IP]))
    db.flush()
    return token


def live_session(db: Session, token: str, policy: SessionPolicy,
                 now: datetime) -> tuple[WebSession, Technician] | None:
    """The session TOKEN names and its account, if it still counts; else None.

    A session found past its time, or of an account that may no longer sign in, is
    ended here with the reason. A live one is marked seen when its mark is older than
    policy.touch_every.
    """
    found = db.execute(select(WebSession, Technician)
                       .join(Technician, Technician.id == WebSession.technician_id)
                       .where(WebSession.token_hash == token_hash(token),
                              WebSession.ended_at.is_(None))).first()
    if found is None:
        return None
    web_session, technician = found
    reason = ending_reason(web_session, technician, policy, now)
    if reason:
        web_session.ended_at, web_session.ended_reason = now, reason
        return None
    if now - web_session.last_seen_at >= policy.touch_every:
        web_session.last_seen_at = now
    return web_session, technician


def ending_reason(web_session: WebSession, technician: Technician, policy: SessionPolicy,
                  now: datetime) -> str | None:
    """Why WEB_SESSION no longer counts at NOW, or None while it does."""
    if not technician.active or not technician.password_hash:
        return DISABLED
    if now - web_session.created_at >= policy.lifetime:
        return EXPIRED
    if now - web_session.last_seen_at >= policy.idle_timeout:
        return IDLE
    return None


def end_session(db: Session, token: str, reason: str, now: datetime) -> bool:
    """End the one session TOKEN names (sign-out); False if it had ended already."""
    ended = db.execute(update(WebSession)
                       .where(WebSession.token_hash == token_hash(token),
                              WebSession.ended_at.is_(None))
                       .values(ended_at=now, ended_reason=reason)
                       .execution_options(synchronize_session=False))
    return ended.rowcount > 0


def end_sessions(db: Session, technician_id: int, reason: str, now: datetime) -> int:
    """End every session of one account (new password, disabled); how many were live."""
    ended = db.execute(update(WebSession)
                       .where(WebSession.technician_id == technician_id,
                              WebSession.ended_at.is_(None))
                       .values(ended_at=now, ended_reason=reason)
                       .execution_options(synchronize_session=False))
    return ended.rowcount
