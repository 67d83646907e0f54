"""Fixtures of the browser tier: the session's browsers, the admin logged in, and the checks after every test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By

from labelstack_testlib import Deployment

from .uilib import REPORTS, USER_MENU, Browser, BrowserPool, log_in, proxy_key_pin


@pytest.fixture(scope="session")
def browsers(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserPool]:
    pin = proxy_key_pin(deployment.url, deployment.ca_bundle) if deployment.proxy_enabled else ""
    pool = BrowserPool(deployment.url, tmp_path_factory.mktemp("browsers"), pin)
    yield pool
    pool.quit()


@pytest.fixture(scope="session")
def admin(browsers: BrowserPool, deployment: Deployment) -> Browser:
    """A browser logged in as the admin through the login form, for the whole session."""
    browser = browsers.start("admin")
    log_in(browser, deployment.credentials["LABEL_STUDIO_USERNAME"], deployment.password)
    browser.element(By.CSS_SELECTOR, USER_MENU)
    browser.step("logged-in")
    return browser


@pytest.fixture(autouse=True)
def page_health(request: pytest.FixtureRequest, browsers: BrowserPool, deployment: Deployment) -> Iterator[None]:
    """After each test: every browser's new console entries and requests go to reports/ui/, then are checked.

    Checked after the test, so what its fixtures did in the browser (made a project, say) is checked too. Then
    each browser leaves its page: a page left open would go on polling a project that a fixture deletes next.
    """
    yield
    problems = []
    for browser in browsers.browsers:
        new = browser.collect().since(browser.checked)
        browser.checked = browser.logs.copy()
        with (REPORTS / "console.log").open("a") as log:
            log.write(f"== {request.node.nodeid} ({browser.name})\n")
            log.writelines(f"{entry['level']} {entry['message']}\n" for entry in new.console)
        with (REPORTS / "requests.log").open("a") as log:
            log.write(f"== {request.node.nodeid} ({browser.name})\n")
            log.writelines(f"{url[:200]}\n" for url in new.requests)  # data: URLs are whole images
            log.writelines(f"FAILED {failure}\n" for failure in new.failed)
        browser.driver.get("about:blank")
        problems += [f"{browser.name}: {p}" for p in new.problems(deployment.proxy_enabled, browser.typed)]
    assert not problems, "the pages logged errors or left TLS:\n" + "\n".join(problems)
