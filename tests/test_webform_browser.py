"""Web-to-Case in a real headless browser: Debian's chromium through chromedriver.

The daemon serves its own page; Selenium loads it, fills it in like a person,
attaches a file; the page's own script (webform.js) solves the ALTCHA
challenge with WebCrypto; the form posts and the browser lands on the
thank-you page. Then the case is checked (origin Web, the attachment byte for
byte) and the acknowledgement is read from the SMTP sink. Nothing is
downloaded: Selenium is pointed at /usr/bin/chromedriver and /usr/bin/chromium.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require
from sqlalchemy import select

from emaild.store.models import Attachment, Case, Message

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    require(
        os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK),
        "the browser test needs Debian's chromium and chromium-driver (scripts/test installs them)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    # Both paths given: Selenium Manager has nothing to look up or download.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "driver.log"))
    monkeypatch.setenv("SE_OFFLINE", "true")
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_a_person_fills_the_form_in_a_browser(
    make_api: Any, relay_sink: Any, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    server = make_api(
        '[[webform]]\nname = "contact"\naddress = "support@example.com"\nmin_fill_seconds = 1\n'
    )
    attachment = tmp_path / "screenshot.png"
    content = os.urandom(70_000) + b"\r\n\x00end"
    attachment.write_bytes(content)

    browser.get(f"{server.base}/web-to-case/contact")
    assert browser.title == "Contact support"
    browser.find_element(By.ID, "ewf-name").send_keys("Rosa Browser")
    browser.find_element(By.ID, "ewf-email").send_keys("rosa@customer.test")
    browser.find_element(By.ID, "ewf-subject").send_keys("Cannot log in")
    browser.find_element(By.ID, "ewf-description").send_keys("Since Monday.\nSee the file.")
    browser.find_element(By.ID, "ewf-attachment").send_keys(str(attachment))
    # The page's script solves the challenge on its own (WebCrypto), as for a person.
    solved = WebDriverWait(browser, 60).until(
        lambda b: b.execute_script(
            "var v = document.querySelector('input[name=altcha]').value;"
            "return v ? JSON.parse(atob(v)).solution : null;"
        )
    )
    started = time.monotonic()
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 60).until(expected_conditions.url_contains("/thanks"))
    took = time.monotonic() - started
    text = browser.find_element(By.ID, "ewf-thanks").text
    assert "Your case number is 1." in text, text
    console = [
        e
        for e in browser.get_log("browser")
        if e.get("level") == "SEVERE" and "favicon.ico" not in e.get("message", "")
    ]
    assert console == [], console  # no CSP violation, no script error

    with server.app.db.session() as session:
        case = session.get(Case, 1)
        assert case is not None and case.origin == "Web" and case.customer == "rosa@customer.test"
        inbound = select(Message).where(Message.case_id == 1, Message.direction == "in")
        message = session.scalars(inbound).one()
        assert message.channel == "web"
        web = next(d for d in message.decision_trace if d["decision"] == "web form")
        [stored] = session.scalars(select(Attachment)).all()
    assert web["challenge"] == "pass" and web["origin"] == server.base
    assert web["fill_seconds"] >= 1
    assert stored.filename == "screenshot.png"
    assert server.app.blobs.read(stored.sha256) == content
    mail = relay_sink.wait_for(1, timeout=20)[0]
    assert mail.rcpt_tos == ("rosa@customer.test",)
    assert "[Case #00000001]" in str(mail.message()["Subject"])
    print(f"challenge solved in {solved['time']:.0f} ms; submit to thank-you page {took:.1f} s")
