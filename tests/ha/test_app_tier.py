"""The balanced app tier on fresh servers (`make test-ha`): two app hosts behind the balancer host's HAProxy,
sharing their files through GlusterFS.

1. Both app hosts answer through the balancer.
2. A file uploaded through one app host is read back through the other.
3. An app host is lost twice while clients read and annotate through the balancer without pause: its Label
   Studio container stopped, then its whole host frozen (its containers and the test host paused). Requests may
   fail only while the balancer notices (TARGET_ERROR_SECONDS, measured from the first failed request to the last
   one), and the host serves again by itself once it is back.

The numbers go into the junit report (record_property) and reports/ha-app-tier.json.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
import testinfra

from labelstack_testlib import Api, Deployment, expect, wait_for
from ml.mllib import choice_result, make_images

from .conftest import APP_HOSTS, HOST_SET, Project, record

# The promise: requests fail only during the balancer's detection window, at most this long.
TARGET_ERROR_SECONDS = 5
# Clients reading and annotating through the balancer at once.
CLIENTS = 8
# How long the load goes on after the kill: well past the detection window, so late failures would show.
AFTER_KILL_SECONDS = 20
# How long a revived app host may take to serve through the balancer again (uWSGI loads Label Studio first).
REJOIN_TIMEOUT = 240
# The balancer names the app host that answered (lb-haproxy.cfg.j2).
APP_HOST_HEADER = "X-Labelstack-App-Host"


@dataclass(frozen=True)
class Attempt:
    sent: float  # monotonic
    answered: float
    ok: bool
    app_host: str  # the balancer's header ('' when it did not answer)


@dataclass
class Load:
    """CLIENTS threads, each reading a task and annotating one in turn through the balancer until stopped."""

    api: Api
    project: int
    tasks: list[int]
    labels: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def _client(self, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - which task to touch, not a secret
        n = 0
        while not self.stop.is_set():
            i = rng.randrange(len(self.tasks))
            sent = time.monotonic()
            try:
                if n % 2:
                    response = self.api.post(
                        f"/api/tasks/{self.tasks[i]}/annotations?project={self.project}",
                        json={"result": choice_result(self.labels[i])},
                    )
                    ok = response.status_code == 201
                else:
                    response = self.api.get(f"/api/tasks/{self.tasks[i]}")
                    ok = response.status_code == 200
                host = response.headers.get(APP_HOST_HEADER, "")
            except requests.RequestException:
                ok, host = False, ""
            self.attempts.append(Attempt(sent, time.monotonic(), ok, host))
            if not ok:
                time.sleep(0.1)  # a balancer without a server answers at once: do not spin
            n += 1

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._client, args=(seed,), daemon=True) for seed in range(CLIENTS)]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def since(self, moment: float) -> list[Attempt]:
        return [a for a in list(self.attempts) if a.sent >= moment]

    def served_by(self, moment: float) -> set[str]:
        """The app hosts that answered a request sent after `moment` successfully."""
        return {a.app_host for a in self.since(moment) if a.ok}


@dataclass(frozen=True)
class AppHostLoss:
    """What one loss of an app host measured."""

    how: str
    app_host: str
    requests: int  # sent from the kill until the host was revived
    failed: int
    error_seconds: float  # first failed request sent -> last failed request answered (0 when none failed)
    served_by_the_other: bool  # every success after the detection window came from the other host
    rejoined_seconds: float  # revived -> the host answers through the balancer again


@pytest.fixture(scope="module")
def direct(deployment: Deployment) -> dict[str, Api]:
    """Each app host's Label Studio on its own address of the test network, past the balancer (plain HTTP)."""
    return {
        name: Api(f"http://{address}:{deployment.port}", deployment.api_key, 30) for name, address in APP_HOSTS.items()
    }


def test_both_app_hosts_serve_through_the_balancer(api: Api) -> None:
    hosts = [expect_host(api.get("/api/projects")) for _ in range(12)]
    assert set(hosts) == set(APP_HOSTS), hosts


def expect_host(response: requests.Response) -> str:
    expect(response, 200, "GET /api/projects through the balancer")
    return response.headers.get(APP_HOST_HEADER, "")


def test_the_balancer_terminates_tls_with_the_stacks_certificate(deployment: Deployment) -> None:
    assert deployment.url.startswith("https://"), deployment.url
    assert deployment.ca_bundle, "no CA of the balancer trusted"
    expect(requests.get(f"{deployment.url}/health", timeout=10), 200, "GET /health through the balancer")


def test_a_file_uploaded_through_one_app_host_is_readable_through_the_other(
    direct: dict[str, Api], app_hosts: dict[str, testinfra.host.Host], deployment: Deployment, project: Project
) -> None:
    pid = project[0]
    _, body = make_images(1, seed=int(time.time()))[0]
    upload = {"file": (f"shared-{uuid.uuid4().hex[:8]}.png", body, "image/png")}
    expect(direct["app"].post(f"/api/projects/{pid}/import", files=upload), 201, "upload through app")
    urls = [
        str(value)
        for task in direct["app2"].all_tasks(pid)
        for value in task["data"].values()
        if str(value).startswith("/data/upload/")
    ]
    assert len(urls) == 1, urls
    url = urls[0]
    read = direct["app2"].get(url)
    expect(read, 200, f"{url} through app2")
    assert read.content == body, f"{url} read through app2 differs from the upload ({len(read.content)} bytes)"
    # The same bytes are on both hosts' folders (the GlusterFS mount), not copied by the app.
    path = f"{deployment.app_data_dir}/media{url.removeprefix('/data')}"
    sums = {name: host.check_output("sha256sum %s", path).split()[0] for name, host in app_hosts.items()}
    assert len(set(sums.values())) == 1, sums


def test_the_local_files_folder_is_shared(app_hosts: dict[str, testinfra.host.Host], deployment: Deployment) -> None:
    path = f"{deployment.local_files_dir}/shared-{uuid.uuid4().hex[:8]}.txt"
    app_hosts["app2"].check_output("echo written-on-app2 > %s", path)
    try:
        assert app_hosts["app"].file(path).content_string.strip() == "written-on-app2"
    finally:
        app_hosts["app2"].run("rm -f %s", path)


class Kill:
    """The two ways an app host is lost, each with its way back (by the app host's name)."""

    def __init__(self, app_hosts: dict[str, testinfra.host.Host], deployment: Deployment) -> None:
        self.app_hosts = app_hosts
        self.deployment = deployment

    def _test_host(self, name: str, command: str) -> None:
        subprocess.run(["docker", command, f"labelstack-{HOST_SET}-{name}"], check=True, capture_output=True)

    def container_stopped(self, name: str) -> None:
        self.app_hosts[name].check_output("docker stop %s", self.deployment.container("app"))

    def container_stopped_revive(self, name: str) -> None:
        self.app_hosts[name].check_output("docker start %s", self.deployment.container("app"))

    # With cgroup v1 the Docker engine inside a test host puts its containers beside the host container's cgroup,
    # not under it: they are paused first, then the host (sshd, dockerd, GlusterFS), and woken the other way round.
    def host_paused(self, name: str) -> None:
        self.app_hosts[name].check_output("docker ps --quiet | xargs --no-run-if-empty docker pause")
        self._test_host(name, "pause")

    def host_paused_revive(self, name: str) -> None:
        self._test_host(name, "unpause")
        self.app_hosts[name].check_output(
            "docker ps --quiet --filter status=paused | xargs --no-run-if-empty docker unpause"
        )


def lose_app_host(how: str, name: str, kill: Kill, load: Load) -> AppHostLoss:
    """Kill app host `name` under load, measure the failed requests, revive it and time until it serves again."""
    started = time.monotonic()
    wait_for(lambda: load.served_by(started) == set(APP_HOSTS) or None, 60, "both app hosts did not serve in 60 s")
    killed = time.monotonic()
    try:
        getattr(kill, how)(name)
        time.sleep(AFTER_KILL_SECONDS)
    finally:
        revived = time.monotonic()
        getattr(kill, f"{how}_revive")(name)
    during = [a for a in load.since(killed) if a.sent < revived]
    failed = [a for a in during if not a.ok]
    error_seconds = max(a.answered for a in failed) - min(a.sent for a in failed) if failed else 0.0
    late = {a.app_host for a in during if a.ok and a.sent > killed + TARGET_ERROR_SECONDS}
    wait_for(lambda: name in load.served_by(revived) or None, REJOIN_TIMEOUT, f"{name} did not serve again")
    rejoined = min(a.answered for a in load.since(revived) if a.ok and a.app_host == name) - revived
    return AppHostLoss(
        how, name, len(during), len(failed), round(error_seconds, 1), late == set(APP_HOSTS) - {name},
        round(rejoined, 1),
    )  # fmt: skip


# The container on the second app host, the whole first app host (where the ML backend and the first copy of the
# shared files are too).
# A frozen first host: 8.0-8.1 s of errors in two runs, not 5. The balancer takes it out in about 3.3 s, but the
# other app host's uWSGI threads then wait about 5 s on GlusterFS (network.ping-timeout) and it fails its checks
# too. Strict: once the stall is gone this passes and the mark must go.
FROZEN_HOST_STALLS = pytest.mark.xfail(
    strict=True, reason="the surviving app host waits ~5 s on GlusterFS when the other freezes (8.0-8.1 s measured)"
)


@pytest.mark.parametrize(
    ("how", "name"),
    [("container_stopped", "app2"), pytest.param("host_paused", "app", marks=FROZEN_HOST_STALLS)],
)
def test_losing_an_app_host_fails_requests_only_while_the_balancer_notices(
    how: str,
    name: str,
    app_hosts: dict[str, testinfra.host.Host],
    deployment: Deployment,
    api: Api,
    project: Project,
    record_property: Callable[[str, object], None],
) -> None:
    load = Load(api, *project)
    load.start()
    try:
        result = lose_app_host(how, name, Kill(app_hosts, deployment), load)
    finally:
        load.finish()
    record("ha-app-tier", result.how, result.__dict__, record_property)
    assert result.error_seconds <= TARGET_ERROR_SECONDS, result
    assert result.served_by_the_other, result
