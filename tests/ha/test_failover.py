"""The HA layout on fresh servers (`make test-ha`): a Patroni cluster of three, Label Studio through HAProxy,
and the primary lost twice while a writer annotates without pause.

1. its PostgreSQL container stopped (Patroni hands the leader key back at once);
2. its whole host frozen (its PostgreSQL and etcd containers and the test host paused: the leader key must
   expire, Patroni's ttl).

Each time a replica must be promoted, writes through the app must succeed again within TARGET_SECONDS of the
kill without restarting the app, and (synchronous_mode) every annotation whose POST answered 201 must be
there afterwards. The old primary then rejoins as a replica. The tests of this module run in order; the
numbers go into the junit report (record_property) and reports/ha-failover.json.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
import testinfra

from labelstack_testlib import Api, Deployment, parse_env_file, wait_for
from ml.mllib import choice_result

from .conftest import APP_HOSTS, DB_HOSTS, HOST_SET, LB_HOST, REPORTS, Cluster, Project, Provisioned, record

# The promise: a replica is promoted, and the app writes again, within 30 s of losing the primary.
TARGET_SECONDS = 30
# How long the cluster may take to be whole again (a rejoining member rewinds or copies its data first).
REJOIN_TIMEOUT = 240


@dataclass
class Writer:
    """Posts annotations one after another until stopped, noting every attempt (monotonic times) and the id of
    every annotation the app acknowledged with 201: those are the commits that must survive."""

    api: Api
    project: int
    tasks: list[int]
    labels: list[str]
    acknowledged: list[int] = field(default_factory=list)
    attempts: list[tuple[float, float, bool]] = field(default_factory=list)  # (sent, answered, 201)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            task, label = self.tasks[n % len(self.tasks)], self.labels[n % len(self.labels)]
            sent = time.monotonic()
            try:
                response = self.api.post(
                    f"/api/tasks/{task}/annotations?project={self.project}", json={"result": choice_result(label)}
                )
                ok = response.status_code == 201
                if ok:
                    self.acknowledged.append(int(response.json()["id"]))
            except requests.RequestException:
                ok = False
            self.attempts.append((sent, time.monotonic(), ok))
            if not ok:
                time.sleep(0.2)  # an app without a database answers at once: do not spin
            n += 1

    def back_after(self, since: float) -> float | None:
        """Seconds from `since` until the first acknowledged write sent after the last failed one (0 when none
        failed); None while writes still fail."""
        failed = [sent for sent, _, ok in self.attempts if not ok and sent >= since]
        if not failed:
            return 0.0
        later = [answered for sent, answered, ok in self.attempts if ok and sent > failed[-1]]
        return later[0] - since if later else None

    def failures_since(self, since: float) -> int:
        return sum(1 for sent, _, ok in self.attempts if not ok and sent >= since)


@dataclass(frozen=True)
class Failover:
    """What one loss of the primary measured."""

    how: str
    old_leader: str
    new_leader: str
    promoted_seconds: float  # kill -> another member is the running leader
    writes_back_seconds: float  # kill -> the app acknowledges writes again
    failed_writes: int
    acknowledged: int  # annotations acknowledged during the whole run of the writer
    lost: int  # of those, missing afterwards


def app_start(app: testinfra.host.Host, deployment: Deployment) -> str:
    """The app container's start time and restart count: unchanged means it was not restarted."""
    return app.check_output(
        "docker inspect --format '{{.State.StartedAt}} {{.RestartCount}}' %s", deployment.container("app")
    )


def annotation_ids(api: Api, project: int) -> set[int]:
    return {int(a["id"]) for task in api.all_tasks(project) for a in task.get("annotations") or []}


def lose_primary(
    how: str,
    kill: Callable[[str], None],
    revive: Callable[[str], None],
    cluster: Cluster,
    api: Api,
    project: Project,
) -> Failover:
    """Write, kill the leader with `kill`, measure until writes succeed again, then `revive` it and wait until
    the cluster is whole; count the acknowledged annotations that are missing."""
    old_leader = cluster.wait_healthy(REJOIN_TIMEOUT)
    writer = Writer(api, *project)
    thread = threading.Thread(target=writer.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(writer.acknowledged) >= 20 or None, 60, "the writer made no 20 annotations in 60 s")
        killed = time.monotonic()
        kill(old_leader)
        new_leader = wait_for(
            lambda: (leader := cluster.leader()) and leader != old_leader and leader, 120, "no replica was promoted"
        )
        promoted = time.monotonic() - killed

        def writes_back() -> list[float] | None:
            seconds = writer.back_after(killed)
            return None if seconds is None else [seconds]  # truthy also when nothing failed (0 s)

        (back,) = wait_for(writes_back, 120, "writes through the app did not succeed again")
        time.sleep(5)  # some writes on the new primary too
    finally:
        writer.stop.set()
        thread.join(30)
    revive(old_leader)
    assert cluster.wait_healthy(REJOIN_TIMEOUT) == new_leader
    lost = set(writer.acknowledged) - annotation_ids(api, project[0])
    return Failover(
        how, old_leader, new_leader, round(promoted, 1), round(back, 1), writer.failures_since(killed),
        len(writer.acknowledged), len(lost),
    )  # fmt: skip


def test_second_deploy_changes_nothing(provisioned: Provisioned) -> None:
    recap = provisioned.second_run.recap()
    assert set(recap) == {*APP_HOSTS, LB_HOST, *DB_HOSTS, "localhost"}, recap
    assert all(counts["changed"] == 0 for counts in recap.values()), provisioned.second_run.changed_tasks()


def test_one_leader_and_two_streaming_replicas_one_of_them_synchronous(cluster: Cluster) -> None:
    leader = cluster.wait_healthy(120)
    members = cluster.members()
    assert sorted(str(m["name"]) for m in members) == sorted(DB_HOSTS), members
    assert [m["role"] for m in members].count("leader") == 1, members
    rows = cluster.replication(leader)
    assert sorted(row[0] for row in rows) == sorted(set(DB_HOSTS) - {leader}), rows
    assert all(row[1] == "streaming" for row in rows), rows
    # synchronous_mode (inventory/test-ha): Patroni keeps one replica synchronous, the other potential/async.
    assert sorted(row[2] for row in rows)[-1] == "sync", rows


def test_the_app_reaches_the_primary_through_its_haproxy(
    app: testinfra.host.Host, deployment: Deployment, cluster: Cluster, api: Api, project: Project
) -> None:
    env = parse_env_file(app.check_output("cat %s/.env", deployment.install_dir))
    assert env["LABELSTACK_DB_HOST"] == "db-router", env["LABELSTACK_DB_HOST"]
    pid, tasks, labels = project
    api.call("POST", f"/api/tasks/{tasks[0]}/annotations?project={pid}", {"result": choice_result(labels[0])})
    assert len(annotation_ids(api, pid)) >= 1
    # The app's sessions on the primary come from the app hosts (HAProxy passes them on), over TLS.
    leader = cluster.leader()
    rows = cluster.sql(
        leader,
        "SELECT a.client_addr, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.backend_type = 'client backend' AND a.client_addr IS NOT NULL",
    )
    assert rows, "no session of the app on the primary"
    assert {row[0] for row in rows} <= set(APP_HOSTS.values()), rows
    assert {row[1] for row in rows} == {"t"}, rows


class Kill:
    """The two ways the primary is lost, each with its way back (by the member's name)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def _docker(self, name: str, command: str, *services: str) -> None:
        containers = [self.cluster.db_container(name).removesuffix("-db-1") + f"-{service}-1" for service in services]
        self.cluster.db_hosts[name].check_output(
            "docker %s " + " ".join(["%s"] * len(containers)), command, *containers
        )

    def _test_host(self, name: str, command: str) -> None:
        subprocess.run(["docker", command, f"labelstack-{HOST_SET}-{name}"], check=True, capture_output=True)

    # Patroni (SIGTERM) stops PostgreSQL and hands the leader key back.
    def container_stopped(self, name: str) -> None:
        self._docker(name, "stop", "db")

    def container_stopped_revive(self, name: str) -> None:
        self._docker(name, "start", "db")

    # With cgroup v1 the Docker engine inside a test host puts its containers beside the host container's
    # cgroup, not under it, so pausing the host container alone would leave PostgreSQL and etcd running: their
    # containers are paused first, then the host (sshd, dockerd), and woken in the opposite order. Nothing
    # answers any more and nothing hands the key back: it must expire.
    def host_paused(self, name: str) -> None:
        self._docker(name, "pause", "db", "etcd")
        self._test_host(name, "pause")

    def host_paused_revive(self, name: str) -> None:
        self._test_host(name, "unpause")
        self._docker(name, "unpause", "db", "etcd")


@pytest.mark.parametrize("how", ["container_stopped", "host_paused"])
def test_losing_the_primary_promotes_a_replica_and_loses_no_acknowledged_annotation(
    how: str,
    app: testinfra.host.Host,
    deployment: Deployment,
    cluster: Cluster,
    api: Api,
    project: Project,
    record_property: Callable[[str, object], None],
) -> None:
    kill = Kill(cluster)
    started = app_start(app, deployment)
    result = lose_primary(how, getattr(kill, how), getattr(kill, f"{how}_revive"), cluster, api, project)
    record("ha-failover", result.how, result.__dict__, record_property)
    assert result.writes_back_seconds <= TARGET_SECONDS, result
    assert result.lost == 0, result
    assert app_start(app, deployment) == started, "the app was restarted"


def test_report_written() -> None:
    """Both failovers are in the report the README quotes."""
    assert set(json.loads((REPORTS / "ha-failover.json").read_text())) >= {"container_stopped", "host_paused"}
