"""Password and token guessing is cut off by the tenth attempt, in the app and (when on) in the proxy."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests

from labelstack_testlib import Api, Deployment

from .probe import login
from .seclib import InStack, host_header

ATTEMPTS = 30
REFUSED_BY = 10
# Bound on the whole run of attempts (each bad login hashes a password: about 0.3 s on a busy host).
ATTEMPTS_SECONDS = 180
pytestmark = pytest.mark.usefixtures("fresh_auth_limits")


def attempt_statuses(attempt: Callable[[int], int]) -> list[int]:
    """HTTP statuses of up to ATTEMPTS calls of `attempt(i)`, within ATTEMPTS_SECONDS."""
    deadline = time.monotonic() + ATTEMPTS_SECONDS
    statuses: list[int] = []
    for number in range(ATTEMPTS):
        if time.monotonic() > deadline:
            break
        statuses.append(attempt(number))
    return statuses


def assert_refused_by_tenth(statuses: list[int], what: str, failure: int) -> None:
    """Refused by the tenth attempt, and fewer than ten attempts evaluated in all.

    Behind the proxy its rate limit may refuse earlier and let one through now and then: the app's lock holds.
    """
    assert 429 in statuses, f"{len(statuses)} {what} and none refused with 429: {statuses}"
    first = statuses.index(429) + 1
    assert first <= REFUSED_BY, f"{what}: first 429 at attempt {first}, after {statuses[: first - 1]}"
    assert set(statuses) <= {failure, 429}, f"{what}: unexpected answers: {statuses}"
    evaluated = statuses.count(failure)
    print(f"{what}: first 429 at attempt {first}, {evaluated} evaluated: {statuses}")  # shown with -s or -rP
    assert evaluated < REFUSED_BY, f"{what}: {evaluated} of {len(statuses)} were evaluated: {statuses}"


def test_bad_logins_are_refused_by_the_tenth_and_another_client_still_logs_in(
    deployment: Deployment, in_stack: InStack
) -> None:
    email = deployment.credentials["LABEL_STUDIO_USERNAME"]
    host = host_header(deployment)
    statuses = attempt_statuses(lambda n: login(deployment.url, host, email, f"wrong-password-{n}"))
    # A wrong password shows the form again (200); a right one redirects (302).
    assert_refused_by_tenth(statuses, "bad logins", 200)
    assert login(deployment.url, host, email, deployment.password) == 429, "the locked client got in"
    status = in_stack.run("login", in_stack.url, host)
    assert status == "302", f"the admin's login from another client (the app container) got {status}"


def test_bad_logins_straight_to_the_app_are_refused_by_the_tenth(deployment: Deployment, in_stack: InStack) -> None:
    """The app's own lock, for a stack run without the proxy: uWSGI attacked from inside the app container."""
    host = host_header(deployment)
    answer = in_stack.run("bad-logins", "http://127.0.0.1:8000", host, str(ATTEMPTS), str(ATTEMPTS_SECONDS))
    assert_refused_by_tenth([int(status) for status in answer.split()], "bad logins straight to uWSGI", 200)
    email = deployment.credentials["LABEL_STUDIO_USERNAME"]
    assert login(deployment.url, host, email, deployment.password) == 302, "the admin, from another client, was locked"


def test_the_proxy_limits_logins_itself(deployment: Deployment) -> None:
    """nginx answers part of a burst itself, before the app spends a password hash on it."""
    if not deployment.proxy_enabled:
        pytest.skip("no proxy in this deployment")
    responses = [
        requests.post(f"{deployment.url}/user/login/", data={"email": "x@example.com", "password": "x"}, timeout=30)
        for _ in range(ATTEMPTS)
    ]
    # The app's 429 is JSON; nginx's is its HTML error page.
    by_proxy = [r for r in responses if r.status_code == 429 and "<center>nginx</center>" in r.text]
    assert by_proxy, f"the proxy refused no login POST of a burst of {ATTEMPTS}: {[r.status_code for r in responses]}"


def test_bad_legacy_tokens_are_refused_by_the_tenth(api: Api) -> None:
    statuses = attempt_statuses(lambda n: api.get("/api/projects", token=f"{n:040d}").status_code)
    assert_refused_by_tenth(statuses, "requests with a wrong legacy token", 401)
    assert api.get("/api/projects").status_code == 429, "the locked client's right token was let through"


def test_bad_refresh_tokens_are_refused_by_the_tenth(api: Api) -> None:
    statuses = attempt_statuses(
        lambda n: api.request("POST", "/api/token/refresh/", anonymous=True, json={"refresh": f"x.{n}.y"}).status_code
    )
    assert_refused_by_tenth(statuses, "JWT refreshes with a forged token", 401)


def test_common_passwords_are_refused(deployment: Deployment) -> None:
    result = deployment.host.run(
        "docker exec %s python3 /label-studio/label_studio/manage.py shell -c %s",
        deployment.container("app"),
        "from django.contrib.auth.password_validation import validate_password as v; v('password123')",
    )
    assert result.rc != 0, "the password validators accept 'password123'"
    assert "too common" in result.stderr, result.stderr[-1500:]
