#!/usr/bin/env python3
"""Label Studio's uWSGI and request metrics in Prometheus' text format, on :9117/metrics; with the argument
`containers`, the stack's containers' health and restarts on :9118/metrics instead.

Runs in the app's network namespace (compose/monitoring.yml) with the app's image: it reads uWSGI's stats
server on 127.0.0.1:1717 (workers and their threads busy or idle, the listen queue, requests, exceptions and
harakiri kills) and sums the per-process request counters the app writes to LABELSTACK_METRICS_DIR
(labelstack_request_metrics.py). Only numbers leave: the stats' request variables (cookies, headers) are dropped.

`containers` (the container-exporter service) asks Docker's API, over its Unix socket, for the containers of the
compose project LABELSTACK_PROJECT: health, restarts by the restart policy, running or restarting. Only GET
requests are made and only those numbers leave. Why the socket: Debian 12 has no cAdvisor (which reports no health
either), and Docker's state files on disk are not it: since Docker 26 a health check's result is written there
only at the container's next state change. The socket has no read-only mode (whoever holds it controls Docker), so
compose/monitoring.yml gives it to this process alone, without root, on a network only Prometheus joins.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Json = dict[str, Any] | list[Any]

STATS_ADDRESS = ("127.0.0.1", 1717)
DOCKER_SOCKET = "/var/run/docker.sock"
HEALTH_STATES = ("starting", "healthy", "unhealthy")
# Seconds between two looks at uWSGI's stats, and how long they may stay unreachable (the app restarting) before
# this process exits to join the app's new network namespace.
WATCH_INTERVAL = 10.0
WATCH_PATIENCE = 60.0
# The app's namespace, or container-exporter's own: the stack's networks, never a host port.
LISTEN = {"app": ("0.0.0.0", 9117), "containers": ("0.0.0.0", 9118)}  # noqa: S104


def read_stats(address: tuple[str, int] = STATS_ADDRESS, timeout: float = 3.0) -> dict[str, Any] | None:
    """uWSGI's stats JSON (the server writes it and closes), or None when it does not answer."""
    try:
        with socket.create_connection(address, timeout=timeout) as conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError:
        return None
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return None


def uwsgi_lines(stats: dict[str, Any] | None) -> list[str]:
    """Metrics of uWSGI's stats: labelstack_uwsgi_up 0 alone when they could not be read."""
    if stats is None:
        return ["# TYPE labelstack_uwsgi_up gauge", "labelstack_uwsgi_up 0"]
    workers = stats.get("workers", [])
    cores = [core for worker in workers for core in worker.get("cores", [])]

    def total(key: str) -> int:
        return sum(int(worker.get(key, 0)) for worker in workers)

    return [
        "# TYPE labelstack_uwsgi_up gauge",
        "labelstack_uwsgi_up 1",
        "# HELP labelstack_uwsgi_workers uWSGI worker processes.",
        "# TYPE labelstack_uwsgi_workers gauge",
        f"labelstack_uwsgi_workers {len(workers)}",
        "# HELP labelstack_uwsgi_threads Request threads of all workers (processes x threads).",
        "# TYPE labelstack_uwsgi_threads gauge",
        f"labelstack_uwsgi_threads {len(cores)}",
        "# HELP labelstack_uwsgi_threads_busy Request threads serving a request now.",
        "# TYPE labelstack_uwsgi_threads_busy gauge",
        f"labelstack_uwsgi_threads_busy {sum(1 for core in cores if core.get('in_request'))}",
        "# HELP labelstack_uwsgi_listen_queue Connections waiting for a worker.",
        "# TYPE labelstack_uwsgi_listen_queue gauge",
        f"labelstack_uwsgi_listen_queue {int(stats.get('listen_queue', 0))}",
        "# HELP labelstack_uwsgi_listen_queue_errors_total Connections refused because the listen queue was full.",
        "# TYPE labelstack_uwsgi_listen_queue_errors_total counter",
        f"labelstack_uwsgi_listen_queue_errors_total {int(stats.get('listen_queue_errors', 0))}",
        "# TYPE labelstack_uwsgi_requests_total counter",
        f"labelstack_uwsgi_requests_total {total('requests')}",
        "# TYPE labelstack_uwsgi_exceptions_total counter",
        f"labelstack_uwsgi_exceptions_total {total('exceptions')}",
        "# HELP labelstack_uwsgi_harakiri_total Requests killed for running past labelstack_wsgi_timeout.",
        "# TYPE labelstack_uwsgi_harakiri_total counter",
        f"labelstack_uwsgi_harakiri_total {total('harakiri_count')}",
        "# TYPE labelstack_uwsgi_worker_respawns_total counter",
        f"labelstack_uwsgi_worker_respawns_total {total('respawn_count')}",
    ]


def request_lines(snapshots: Iterable[dict[str, Any]]) -> list[str]:
    """The per-process request counters summed: requests by status class, and their duration histogram."""
    codes: dict[str, int] = {}
    buckets: dict[float, int] = {}  # upper bound -> requests that took at most that long (the app's bounds)
    count, seconds = 0, 0.0
    for snapshot in snapshots:
        for code, value in snapshot.get("codes", {}).items():
            codes[code] = codes.get(code, 0) + int(value)
        for bound, value in zip(snapshot.get("le", []), snapshot.get("buckets", []), strict=False):
            buckets[float(bound)] = buckets.get(float(bound), 0) + int(value)
        count += int(snapshot.get("count", 0))
        seconds += float(snapshot.get("sum", 0.0))
    lines = [
        "# HELP labelstack_http_requests_total Requests Label Studio (Django) answered, by status class.",
        "# TYPE labelstack_http_requests_total counter",
    ]
    lines += [f'labelstack_http_requests_total{{code="{code}"}} {codes.get(code, 0)}' for code in
              sorted({"2xx", "3xx", "4xx", "5xx", *codes})]  # fmt: skip
    lines += [
        "# HELP labelstack_http_request_duration_seconds Time Label Studio (Django) took to answer.",
        "# TYPE labelstack_http_request_duration_seconds histogram",
    ]
    lines += [f'labelstack_http_request_duration_seconds_bucket{{le="{le}"}} {n}' for le, n in sorted(buckets.items())]
    lines += [
        f'labelstack_http_request_duration_seconds_bucket{{le="+Inf"}} {count}',
        f"labelstack_http_request_duration_seconds_sum {seconds}",
        f"labelstack_http_request_duration_seconds_count {count}",
    ]
    return lines


def read_snapshots(directory: Path) -> list[dict[str, Any]]:
    snapshots = []
    for path in sorted(directory.glob("*.json")):
        try:
            snapshots.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # replaced while being read: the next scrape has it
    return snapshots


def render(stats: dict[str, Any] | None, directory: Path) -> str:
    return "\n".join(uwsgi_lines(stats) + request_lines(read_snapshots(directory))) + "\n"


class DockerConnection(http.client.HTTPConnection):
    """HTTP to Docker's API over its Unix socket."""

    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def docker_get(path: str, socket_path: str = DOCKER_SOCKET, timeout: float = 5.0) -> Json:
    """The JSON Docker's API answers to GET `path`; OSError when it does not answer 200."""
    connection = DockerConnection(socket_path, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise OSError(f"Docker answered {response.status} to GET {path}")
    return json.loads(body)


def read_containers(project: str, get: Callable[[str], Json] = docker_get) -> list[dict[str, Any]] | None:
    """Docker's inspection of every container of the compose project (one-off `compose run` ones left out), or
    None when Docker does not answer."""
    label = json.dumps({"label": [f"com.docker.compose.project={project}"]})
    try:
        listed = get(f"/containers/json?all=1&filters={urllib.parse.quote(label)}")
    except (OSError, ValueError):
        return None
    containers = []
    for container in listed:
        if (container.get("Labels") or {}).get("com.docker.compose.oneoff") == "True":
            continue
        try:
            containers.append(get(f"/containers/{container['Id']}/json"))
        except (OSError, ValueError):
            continue  # removed since it was listed
    return containers


def container_lines(containers: list[dict[str, Any]] | None) -> list[str]:
    """Health (a state set per container that has a healthcheck), restarts and running state of each container."""
    if containers is None:
        return ["# TYPE labelstack_containers_up gauge", "labelstack_containers_up 0"]
    health, restarts, running, restarting = [], [], [], []
    for container in sorted(containers, key=lambda c: str(c.get("Name"))):
        service = container["Config"]["Labels"].get("com.docker.compose.service", "")
        labels = f'container="{str(container.get("Name", "")).lstrip("/")}",service="{service}"'
        state = container.get("State") or {}
        status = (state.get("Health") or {}).get("Status")
        if status in HEALTH_STATES:
            health += [
                f'labelstack_container_health{{{labels},status="{s}"}} {int(s == status)}' for s in HEALTH_STATES
            ]
        restarts.append(f"labelstack_container_restarts_total{{{labels}}} {int(container.get('RestartCount', 0))}")
        # Status, not Running: Docker keeps Running true while it waits to restart a container that exited.
        running.append(f"labelstack_container_running{{{labels}}} {int(state.get('Status') == 'running')}")
        restarting.append(f"labelstack_container_restarting{{{labels}}} {int(state.get('Status') == 'restarting')}")
    return [
        "# TYPE labelstack_containers_up gauge",
        "labelstack_containers_up 1",
        "# HELP labelstack_container_health Docker's health status of the container (1 for the current one).",
        "# TYPE labelstack_container_health gauge",
        *health,
        "# HELP labelstack_container_restarts_total Restarts by the restart policy (Docker resets it on a new start).",
        "# TYPE labelstack_container_restarts_total counter",
        *restarts,
        "# TYPE labelstack_container_running gauge",
        *running,
        "# HELP labelstack_container_restarting Docker is waiting to restart the container after it exited.",
        "# TYPE labelstack_container_restarting gauge",
        *restarting,
    ]


def render_app() -> str:
    return render(read_stats(), Path(os.environ.get("LABELSTACK_METRICS_DIR", "/run/labelstack-metrics")))


def render_containers() -> str:
    return "\n".join(container_lines(read_containers(os.environ["LABELSTACK_PROJECT"]))) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {"app": render_app, "containers": render_containers}


class Handler(BaseHTTPRequestHandler):
    render_metrics: Callable[[], str] = staticmethod(render_app)

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        body = self.render_metrics().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes are not logged: one line every 15 s says nothing."""


def watch_stats(interval: float = WATCH_INTERVAL, patience: float = WATCH_PATIENCE) -> None:
    """Exit once uWSGI's stats, seen before, stay unreachable for `patience` seconds; the restart policy starts us
    again.

    This container lives in the app's network namespace, and a restarted app container gets a new one: the old
    namespace stays with us, empty. Starting again joins the app's current one. Before the stats were ever seen
    (the app still migrating on its first start) there is nothing to rejoin: waiting is right.
    """
    seen = False
    missing_since: float | None = None
    while True:
        if read_stats() is not None:
            seen, missing_since = True, None
        elif not seen:
            pass
        elif missing_since is None:
            missing_since = time.monotonic()
        elif time.monotonic() - missing_since >= patience:
            print(f"uWSGI's stats unreachable for {patience:.0f}s: exiting to rejoin the app", file=sys.stderr)
            os._exit(1)
        time.sleep(interval)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "app"
    if mode not in RENDERERS:
        sys.exit(f"usage: app_exporter.py [{'|'.join(RENDERERS)}]")
    Handler.render_metrics = staticmethod(RENDERERS[mode])
    if mode == "app":
        threading.Thread(target=watch_stats, daemon=True).start()
    ThreadingHTTPServer(LISTEN[mode], Handler).serve_forever()
