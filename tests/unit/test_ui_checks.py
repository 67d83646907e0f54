"""Unit tests of the browser tier's page checks (tests/ui/uilib.py): what fails a test, what does not."""

from __future__ import annotations

import pytest
from ui.uilib import NETWORK_CHANGED, Logs

BASE = "https://label.example.org"


def console(level: str, message: str) -> dict[str, object]:
    return {"level": level, "message": message, "source": "network", "timestamp": 0}


def test_allowed_console_error_and_warnings_pass() -> None:
    heidi = f"{BASE}/heidi-tips - Failed to load resource: the server responded with a status of 404 ()"
    logs = Logs(console=[console("SEVERE", heidi), console("WARNING", "[mobx.array] Attempt to read an array index")])
    assert logs.problems(https_only=True, typed=set()) == []


def test_other_console_errors_fail() -> None:
    logs = Logs(console=[console("SEVERE", f"{BASE}/api/projects/1 - Failed to load resource: status of 500")])
    assert logs.problems(https_only=False, typed=set()) == [f"console error: {logs.console[0]['message']}"]


@pytest.mark.parametrize(
    ("url", "fails"),
    [
        (f"{BASE}/projects/", False),
        ("wss://label.example.org/ws", False),
        ("data:image/gif;base64,R0lGOD", False),
        ("blob:https://label.example.org/0f07d599", False),
        ("chrome://new-tab-page-third-party/", False),
        ("http://label.example.org/static/main.js", True),
        ("ws://label.example.org/ws", True),
    ],
)
def test_with_the_proxy_only_tls_requests_pass(url: str, fails: bool) -> None:
    assert bool(Logs(requests=[url]).problems(https_only=True, typed=set())) == fails
    assert Logs(requests=[url]).problems(https_only=False, typed=set()) == [], "plain HTTP is fine without the proxy"


def test_a_url_the_user_typed_is_not_the_page_leaving_tls() -> None:
    typed = "http://label.example.org:8080/projects/"
    assert Logs(requests=[typed]).problems(https_only=True, typed={typed}) == []


def test_a_network_change_is_named() -> None:
    problems = Logs(failed=[f"{BASE}/api/tasks: {NETWORK_CHANGED}"]).problems(https_only=True, typed=set())
    assert len(problems) == 1
    assert NETWORK_CHANGED in problems[0]
    assert Logs(failed=[f"{BASE}/api/ml?project=3: net::ERR_ABORTED"]).problems(https_only=True, typed=set()) == []
