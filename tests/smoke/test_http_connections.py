"""Connection reuse: the SDKs pool HTTP connections (requests.Session in `Client`, httpx in `LabelStudio`)."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from labelstack_testlib import Deployment

ROUNDS = 20


def test_kept_alive_connection_is_answered_or_closed_explicitly(deployment: Deployment) -> None:
    """An HTTP/1.1 response without `Connection: close` promises the connection can be reused."""
    url = urlsplit(deployment.url)
    connection = (
        # The default context trusts SSL_CERT_FILE: the deployment's generated CA in this session.
        http.client.HTTPSConnection(url.hostname or "", url.port, timeout=10, context=ssl.create_default_context())
        if url.scheme == "https"
        else http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    )
    try:
        connection.request("GET", "/api/version")
        first = connection.getresponse()
        first.read()
        assert first.status == 200, first.status
        if first.will_close:
            return  # the server said it closes: clients open a new connection, fine
        try:
            connection.request("GET", "/api/version")
            second = connection.getresponse()
            second.read()
        except (http.client.HTTPException, OSError) as exc:
            pytest.fail(
                f"the server kept the connection open (HTTP/1.1, no 'Connection: close') but dropped it before "
                f"answering a second request ({exc!r}): pooled clients fail at random (legacy Client) or stall "
                f"on retries (new SDK); enable keep-alive in the server or send 'Connection: close'"
            )
        assert second.status == 200, second.status
    finally:
        connection.close()


def get_with_requests_session(url: str, rounds: int) -> list[str]:
    failures = []
    with requests.Session() as session:
        for _ in range(rounds):
            try:
                session.get(url, timeout=10).raise_for_status()
            except requests.RequestException as exc:
                failures.append(repr(exc))
    return failures


def get_with_httpx_client(url: str, rounds: int) -> list[str]:
    failures = []
    with httpx.Client(timeout=10) as client:
        for _ in range(rounds):
            try:
                client.get(url).raise_for_status()
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
    return failures


@pytest.mark.parametrize("get", [get_with_requests_session, get_with_httpx_client], ids=["requests", "httpx"])
def test_pooled_client_survives_back_to_back_requests(
    get: Callable[[str, int], list[str]], deployment: Deployment
) -> None:
    failures = get(f"{deployment.url}/api/version", ROUNDS)
    assert not failures, f"{len(failures)} of {ROUNDS} back-to-back requests failed, e.g. {failures[0]}"
