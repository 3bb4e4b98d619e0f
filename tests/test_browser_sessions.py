"""Sign-out ends the session on the server, in real headless Chromium (issue 20, point 4).

Sign in through the form, save the browser's cookies, sign out with the page's button,
put the saved cookies back and open /tickets: the sign-in page. Before the sign-out the
same saved cookies open /tickets in a second browser, so the test would see a session
that outlived its sign-out.
"""
from __future__ import annotations

from sqlalchemy import select

from daemon.store.models import WebSession
from tests.fixtures_web import COORDINATOR, PASSWORD, add_account


def test_a_cookie_saved_before_sign_out_gets_the_sign_in_page(web_app, live_server, chromium,
                                                               page, store):
    site = live_server(web_app())
    add_account(site.app)
    page.goto(f"{site.url}/tickets")
    assert "/login" in page.url
    page.fill("input[name=email]", COORDINATOR)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{site.url}/tickets")
    saved = page.context.cookies()
    assert any(cookie["name"] == "jantar_session" for cookie in saved)

    elsewhere = chromium.new_context(locale="pl-PL")
    try:
        elsewhere.add_cookies(saved)
        copy = elsewhere.new_page()
        copy.goto(f"{site.url}/tickets")
        assert copy.url == f"{site.url}/tickets"  # the saved cookie works while signed in
    finally:
        elsewhere.close()

    page.click("form[action='/logout'] button")
    page.wait_for_url(f"{site.url}/login")
    page.context.clear_cookies()
    page.context.add_cookies(saved)
    page.goto(f"{site.url}/tickets")
    assert page.url.startswith(f"{site.url}/login?next=")
    assert page.locator("input[name=password]").count() == 1
    with store.transaction() as session:
        assert session.scalars(select(WebSession.ended_reason)).all() == ["signed_out"]
