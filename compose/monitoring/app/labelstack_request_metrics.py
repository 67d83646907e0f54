"""Requests counted by status class and duration, for app-exporter (compose/monitoring/app-exporter).

uWSGI runs several processes: each keeps its counters in memory and writes them, at most every
FLUSH_SECONDS, to <LABELSTACK_METRICS_DIR>/<pid>.json (a tmpfs shared with app-exporter, which sums the files).
A file outlives its process, so the sums never go backwards while the container runs.

GET /labelstack/ready answers 200 when the database answers a query, 503 otherwise: Label Studio's /health
does not touch the database, so it stays green while no page can be served.

Monitoring's own requests are not counted: the blackbox exporter's probes (their User-Agent is PROBE_AGENT,
templates/monitoring/blackbox/blackbox.yml.j2) and /health (Docker's healthcheck, every 10 s). On an idle stack
they were nearly all the traffic, so with the database down the login probe's 500s alone made HighErrorRatio fire
beside LabelStudioUnhealthy, which is the probes' own alert; and their quick 200s diluted real users' errors.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

from django.db import connection
from django.http import HttpRequest, HttpResponse

# Upper bounds (seconds) of the duration histogram; +Inf is implied.
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_SECONDS = 2.0
READY_PATH = "/labelstack/ready"
HEALTH_PATH = "/health"
PROBE_AGENT = "labelstack-probe"


class Counters:
    """One process's counters, written atomically to its own file."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / f"{os.getpid()}.json"
        self.lock = threading.Lock()
        self.codes: dict[str, int] = {}
        self.buckets = [0] * len(BUCKETS)
        self.count = 0
        self.total_seconds = 0.0
        self.flushed = 0.0

    def observe(self, status: int, seconds: float) -> None:
        code = f"{status // 100}xx"
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
            self.count += 1
            self.total_seconds += seconds
            now = time.monotonic()
            if now - self.flushed < FLUSH_SECONDS:
                return
            self.flushed = now
            snapshot = {"codes": dict(self.codes), "le": BUCKETS, "buckets": list(self.buckets),
                        "count": self.count, "sum": self.total_seconds}  # fmt: skip
        partial = self.path.with_suffix(f".{threading.get_ident()}.partial")
        partial.write_text(json.dumps(snapshot))
        partial.replace(self.path)


@cache
def process_counters(directory: str, pid: int) -> Counters:
    """One Counters per process (Django may build the middleware more than once; uWSGI forks with lazy-apps)."""
    return Counters(Path(directory))


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        directory = os.environ.get("LABELSTACK_METRICS_DIR", "")
        self.counters = process_counters(directory, os.getpid()) if directory else None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == READY_PATH:
            return ready()
        if self.counters is None or request.path == HEALTH_PATH or request.headers.get("User-Agent") == PROBE_AGENT:
            return self.get_response(request)
        start = time.monotonic()
        status = 500  # an exception escaping the view becomes Django's 500
        try:
            response = self.get_response(request)
            status = response.status_code
            return response
        finally:
            self.counters.observe(status, time.monotonic() - start)


def ready() -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure to query means not ready; the class name says which
        return HttpResponse(f"database unavailable ({type(exc).__name__})\n", status=503, content_type="text/plain")
    return HttpResponse("ready\n", content_type="text/plain")
