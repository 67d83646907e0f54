"""Logging in and out through the login form, in a browser of its own (the admin's session stays logged in)."""

from __future__ import annotations

from selenium.webdriver.common.by import By

from labelstack_testlib import Deployment

from .uilib import USER_MENU, BrowserPool, log_in, log_out

LOGIN_PATH = "/user/login/"
WRONG_PASSWORD_ERROR = "The email and password you entered don't match."


def test_login_form_refuses_a_wrong_password_then_logs_in_and_out(
    browsers: BrowserPool, deployment: Deployment
) -> None:
    browser = browsers.start("login")
    email = deployment.credentials["LABEL_STUDIO_USERNAME"]

    browser.open("/projects/")
    browser.wait(lambda: browser.path() == LOGIN_PATH, f"an anonymous visit to /projects/ stayed on {browser.path()}")
    browser.step("anonymous-redirected-to-login")

    log_in(browser, email, "not-the-password")
    browser.see(WRONG_PASSWORD_ERROR)
    browser.step("wrong-password")
    posted = [status for url, status in browser.collect().documents if LOGIN_PATH in url][-1]
    assert posted == 200, f"the login form answered a wrong password with HTTP {posted}"

    log_in(browser, email, deployment.password)
    browser.element(By.CSS_SELECTOR, USER_MENU)
    assert browser.path() != LOGIN_PATH, "still on the login page after logging in"
    browser.step("logged-in")

    log_out(browser)
    browser.wait(lambda: browser.path() == LOGIN_PATH, f"logging out led to {browser.path()}, not the login page")
    browser.open("/projects/")
    browser.wait(lambda: browser.path() == LOGIN_PATH, "after logging out, /projects/ opened without a login")
    browser.step("logged-out")
