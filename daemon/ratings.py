"""Customer ratings: signed one-click links in the "resolved" mail, and recording what they say.

A link carries the ticket's id, a score (1-5) and an expiry, signed with the web's secret
key (the same one Flask signs sessions with: [web] secret_key, else <data_dir>/secret_key),
so the mail side signs without a Flask app and the web checks without a sign-in. The
expiry is inside the signed payload and checked against a `now` passed in, not the wall
clock, so tests (and `--now`) decide what "expired" means.

Recording is idempotent: the same click twice changes nothing; a later click with another
score replaces the rating (the audit trail keeps both).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import Ticket
from daemon.tickets import record_event

log = logging.getLogger(__name__)

SCORES = (1, 2, 3, 4, 5)
# Salted apart from Flask's session signatures: a session cookie is never a rating token.
SALT = "jantar-ticket-rating"
VALID_FOR = timedelta(days=90)
MAX_COMMENT_CHARS = 4000


class BadRating(ValueError):
    """A token that was not signed by us or says something impossible (HTTP 400)."""


class ExpiredRating(ValueError):
    """A genuine token past its expiry (HTTP 410)."""


@dataclass(frozen=True)
class RatingClaim:
    ticket_id: int
    score: int


def rating_secret(config: Config) -> str:
    """The web's secret key, from the very source the web reads it from."""
    # Imported here: the daemon needs the web's key, not the web's import-time wiring.
    from webform.config import web_config
    from webform.setup import secret_key
    return secret_key(web_config(config), config.data_dir)


def sign(secret: str, ticket_id: int, score: int, expires: datetime) -> str:
    return URLSafeSerializer(secret, salt=SALT).dumps([ticket_id, score, int(expires.timestamp())])


def verify(secret: str, token: str, now: datetime) -> RatingClaim:
    """What TOKEN claims; BadRating if it was tampered with, ExpiredRating if too old."""
    try:
        ticket_id, score, expires = URLSafeSerializer(secret, salt=SALT).loads(token)
    except (BadData, TypeError, ValueError):
        raise BadRating("not a rating link of ours") from None
    if score not in SCORES or not isinstance(ticket_id, int) or not isinstance(expires, int):
        raise BadRating("a rating link with an impossible payload")
    if now.timestamp() >= expires:
        raise ExpiredRating("the rating link has expired")
    return RatingClaim(ticket_id, score)


def rating_links(config: Config, ticket: Ticket, now: datetime) -> list[dict]:
    """[{score, url}] for the five scores; [] when the key cannot be had (the mail goes anyway)."""
    try:
        secret = rating_secret(config)
    except (OSError, RuntimeError) as exc:
        log.warning("%s: resolved mail without rating links: %s", ticket.number, exc)
        return []
    expires = now + VALID_FOR
    return [{"score": score,
             "url": f"{config.web_url}/rate/{sign(secret, ticket.id, score, expires)}"}
            for score in SCORES]


def record_rating(session: Session, ticket: Ticket, score: int, now: datetime) -> bool:
    """Store SCORE on TICKET; False (and nothing recorded) when it already had that score."""
    if ticket.rating == score:
        return False
    record_event(session, ticket, "rated", now, actor=ticket.requester_email or "customer",
                 score=score, previous=ticket.rating)
    ticket.rating, ticket.rated_at = score, now
    return True


def record_comment(session: Session, ticket: Ticket, comment: str, now: datetime) -> bool:
    """Store the customer's comment beside the rating; False when it is empty or unchanged."""
    comment = comment.replace("\x00", "").strip()[:MAX_COMMENT_CHARS]
    if not comment or comment == ticket.rating_comment:
        return False
    ticket.rating_comment = comment
    record_event(session, ticket, "rating_commented", now,
                 actor=ticket.requester_email or "customer", chars=len(comment))
    return True
