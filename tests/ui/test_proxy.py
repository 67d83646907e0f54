"""With the TLS proxy on, the browser stays on HTTPS (every request of every page is checked in ui/conftest.py)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By

from labelstack_testlib import Deployment

from .uilib import CREATE_PROJECT, Browser


@pytest.fixture
def proxied(deployment: Deployment) -> Deployment:
    if not deployment.proxy_enabled:
        pytest.skip("the proxy is off: the deployment's URL is plain HTTP")
    return deployment


def test_plain_http_port_sends_the_browser_to_https(admin: Browser, proxied: Deployment) -> None:
    admin.open(f"http://{urlsplit(proxied.url).hostname}:{proxied.port}/projects/")
    admin.wait(lambda: admin.driver.current_url.startswith(f"{proxied.url}/"), "the HTTP port did not redirect")
    admin.element(By.CSS_SELECTOR, CREATE_PROJECT)  # the Projects page, still logged in
    admin.step("http-redirected-to-https")


def test_cookies_are_secure(admin: Browser, proxied: Deployment) -> None:
    admin.open("/projects/")
    admin.element(By.CSS_SELECTOR, CREATE_PROJECT)
    cookies = admin.driver.get_cookies()
    assert cookies, "the logged-in browser holds no cookie"
    assert all(cookie["secure"] for cookie in cookies), f"cookies without Secure: {cookies}"
