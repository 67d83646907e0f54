"""Cookies stay on HTTPS, and the app answers only its own host name and its own origin."""

from __future__ import annotations

import pytest
import requests

from labelstack_testlib import Api, Deployment, wait_for

FOREIGN = "evil.example"


def test_login_cookies_are_secure_over_https(deployment: Deployment) -> None:
    if not deployment.url.startswith("https://"):
        pytest.skip("the deployment's URL is plain HTTP: its cookies cannot be Secure")
    with requests.Session() as session:
        page = f"{deployment.url}/user/login/"
        session.get(page, timeout=30).raise_for_status()
        form = {
            "email": deployment.credentials["LABEL_STUDIO_USERNAME"],
            "password": deployment.password,
            "csrfmiddlewaretoken": session.cookies.get("csrftoken", ""),
        }

        def log_in() -> requests.Response | None:
            # An earlier test may have left the proxy's login bucket full: it drains in seconds.
            response = session.post(page, data=form, headers={"Referer": page}, allow_redirects=False, timeout=30)
            return None if response.status_code == 429 else response

        response = wait_for(log_in, 60, "the login stayed rate-limited", interval=3)
        assert response.status_code == 302, f"login: HTTP {response.status_code}"
        cookies = {cookie.name: cookie for cookie in session.cookies}
    assert {"sessionid", "csrftoken"} <= cookies.keys(), f"cookies after login: {sorted(cookies)}"
    insecure = [name for name in ("sessionid", "csrftoken") if not cookies[name].secure]
    assert not insecure, f"cookies sent over plain HTTP too (no Secure flag): {insecure}"


def test_a_foreign_host_header_is_refused(deployment: Deployment, api: Api) -> None:
    response = requests.get(
        f"{deployment.url}/api/projects",
        headers={"Host": FOREIGN, "Authorization": f"Token {deployment.api_key}"},
        timeout=api.timeout,
        allow_redirects=False,
    )
    assert response.status_code == 400, f"Host: {FOREIGN} got HTTP {response.status_code}, not 400"
    assert api.get("/api/projects").status_code == 200, "the deployment's own host name is refused"


def test_a_foreign_origin_gets_no_cors_grant(deployment: Deployment, api: Api) -> None:
    foreign = f"https://{FOREIGN}"
    preflight = requests.options(
        f"{deployment.url}/api/projects",
        headers={"Origin": foreign, "Access-Control-Request-Method": "POST"},
        timeout=api.timeout,
    )
    grant = preflight.headers.get("Access-Control-Allow-Origin")
    assert grant is None, f"a page on {foreign} may call the API: Access-Control-Allow-Origin: {grant}"
    own = requests.options(
        f"{deployment.url}/api/projects",
        headers={"Origin": deployment.url, "Access-Control-Request-Method": "POST"},
        timeout=api.timeout,
    )
    assert own.headers.get("Access-Control-Allow-Origin") == deployment.url, own.headers
