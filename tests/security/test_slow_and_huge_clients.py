"""Slow and huge request bodies hold neither the app's workers nor its disk."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from labelstack_testlib import Api, Deployment

from .probe import huge_body, slow_body
from .seclib import InStack, host_header

SLOW_CLIENTS = 10
BYTE_INTERVAL = 5.0
# How long the slow clients hang on, and the measurement inside that time.
SLOW_SECONDS = 75.0
MEASURE_SECONDS = 50.0
P95_LIMIT = 2.0
# A request that gets no answer at all counts as this slow.
PROBE_TIMEOUT = 10.0
HUGE = 1024**3
HUGE_SECONDS = 120.0
# What the server may have taken of it before refusing: what the sockets on the way buffer, not the body.
REFUSED_WITHIN = 64 * 1024**2
# What the app may write while refusing a huge body (logs), in KiB.
DISK_SLACK_KIB = 5 * 1024
# An import is the upload users make; without credentials it must be refused before its body is read.
UPLOAD_PATH = "/api/projects/1/import"


def timed_get(api: Api, path: str) -> float:
    """Seconds one GET took (PROBE_TIMEOUT if it failed), on a new connection as a new client would."""
    started = time.monotonic()
    try:
        requests.get(f"{api.base_url}{path}", headers={"Authorization": f"Token {api.token}"}, timeout=PROBE_TIMEOUT)
    except requests.RequestException:
        return PROBE_TIMEOUT
    return time.monotonic() - started


def p95(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=20)[-1]


def test_health_and_projects_answer_while_slow_clients_hang_on(deployment: Deployment, api: Api) -> None:
    host = host_header(deployment)
    with ThreadPoolExecutor(SLOW_CLIENTS) as pool:
        slow = [
            pool.submit(slow_body, deployment.url, host, UPLOAD_PATH, BYTE_INTERVAL, SLOW_SECONDS)
            for _ in range(SLOW_CLIENTS)
        ]
        time.sleep(1)  # every slow client connected and waiting on its body
        latencies: dict[str, list[float]] = {"/health": [], "/api/projects": []}
        deadline = time.monotonic() + MEASURE_SECONDS
        while time.monotonic() < deadline:
            for path, seconds in latencies.items():
                seconds.append(timed_get(api, path))
            time.sleep(0.5)
        held = [future.result() for future in slow]
    summary = {path: round(p95(seconds), 2) for path, seconds in latencies.items()}
    worst = {path: round(max(seconds), 2) for path, seconds in latencies.items()}
    print(f"p95 {summary} s, max {worst} s, samples {len(latencies['/health'])}, bytes sent by slow clients {held}")
    assert all(value < P95_LIMIT for value in summary.values()), (
        f"p95 with {SLOW_CLIENTS} slow clients: {summary} s (max {worst}; bytes each slow client got in: {held})"
    )


def disk_kib(deployment: Deployment) -> int:
    """KiB used by the app's data directory and its container's /tmp (where uWSGI spools bodies)."""
    data = int(deployment.host.check_output("du -sk %s", deployment.app_data_dir).split()[0])
    spool = int(deployment.host.check_output("docker exec %s du -sk /tmp", deployment.container("app")).split()[0])
    return data + spool


@pytest.mark.parametrize("where", ["public", "uwsgi"])
def test_a_huge_anonymous_body_is_refused_before_it_is_read(
    where: str, deployment: Deployment, in_stack: InStack
) -> None:
    """At the public URL, and at uWSGI itself (reached from inside the stack, as the proxy hides it).

    nginx answers 413. uWSGI's limit-post cannot answer: it closes the connection unread (uWSGI 2.0 has no way
    to send 413 before reading a body it post-buffers), which a client sees as no status at all.
    """
    host = host_header(deployment)
    before = disk_kib(deployment)
    if where == "public":
        status, sent = huge_body(deployment.url, host, UPLOAD_PATH, HUGE, HUGE_SECONDS)
    else:
        out = in_stack.run("huge-body", "http://127.0.0.1:8000", host, UPLOAD_PATH, str(HUGE), str(HUGE_SECONDS))
        status, sent = (int(value) for value in out.split())
    grown = disk_kib(deployment) - before
    print(f"{where}: HTTP {status} after {sent >> 20} MiB sent; disk grew {grown} KiB")
    by_nginx = where == "public" and deployment.proxy_enabled
    assert status in ((413,) if by_nginx else (413, 0)), f"{where}: 1 GiB anonymous body got HTTP {status}"
    assert sent < REFUSED_WITHIN, f"{where}: {sent >> 20} MiB of the 1 GiB body went in before it was refused"
    assert grown < DISK_SLACK_KIB, f"{where}: the app's disk grew by {grown} KiB"
