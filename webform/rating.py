"""The customer's rating page: a signed link from the resolved mail records a score, no sign-in.

GET /rate/<token> records the score the link carries (the same click twice changes
nothing, another score replaces it) and thanks the customer, offering a comment box;
POST /rate/<token> (with the page's CSRF token) keeps the comment. A tampered link is
400, an expired one 410. The token is checked with the app's secret key, the key
daemon.ratings signed it with when the mail was written.
"""
from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request

from daemon.ratings import (BadRating, ExpiredRating, RatingClaim, record_comment, record_rating,
                            verify)
from daemon.store.models import Ticket
from webform import helpdesk
from webform.auth import public

blueprint = Blueprint("rating", __name__)


def _claim(token: str, now) -> RatingClaim:
    try:
        return verify(current_app.secret_key, token, now)
    except ExpiredRating:
        abort(410)
    except BadRating:
        abort(400)


@blueprint.route("/rate/<token>", methods=["GET", "POST"])
@public
def rate(token: str):
    desk = helpdesk()
    now = desk.clock.now()
    claim = _claim(token, now)
    saved = False
    with desk.store.transaction() as session:
        ticket = session.get(Ticket, claim.ticket_id)
        if ticket is None:
            abort(404)
        # The link's score stands behind the comment too: a comment never comes without it.
        record_rating(session, ticket, claim.score, now)
        if request.method == "POST":
            saved = record_comment(session, ticket, request.form.get("comment", ""), now)
        page = render_template("rating.html", number=ticket.number, score=claim.score,
                               comment=ticket.rating_comment or "", saved=saved,
                               posted=request.method == "POST")
    # Scanners and previews follow mail links; nothing here should be cached or indexed.
    return page, {"X-Robots-Tag": "noindex", "Referrer-Policy": "no-referrer"}
