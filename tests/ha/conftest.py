"""Fresh test servers of the HA layout (`scripts/testhosts.sh --set ha`): three database hosts running
PostgreSQL under Patroni with etcd, two app hosts each reaching the primary through its HAProxy, and a balancer
host in front of them (HTTPS, the arbiter copy of their shared GlusterFS folders)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import testinfra

from labelstack_testlib import (
    REPO,
    Api,
    Deployment,
    PlaybookRun,
    deploy_or_exit,
    host_setting,
    inventory_host,
    load_deployment,
    testhosts,
    trust_deployment_ca,
    wait_for,
)
from ml.mllib import CONFIG, make_texts

INVENTORY = "inventory/test-ha"
HOST_SET = "ha"
# The database hosts, their addresses on the test network (inventory/test-ha/hosts.yml) and Patroni's port.
DB_HOSTS = {"db1": "10.213.17.11", "db2": "10.213.17.12", "db3": "10.213.17.13"}
PATRONI_PORT = 8008
# The app hosts and their addresses on the test network (the balancer reaches each there, on labelstack_port), and
# the balancer host.
APP_HOSTS = {"app": "10.213.17.10", "app2": "10.213.17.14"}
LB_HOST = "lb"
# The tasks of each test module's project, and the folder of the reports the README quotes.
N_TASKS = 50
REPORTS = REPO / "reports"
# A project of the tests: its id, task ids and a label per task.
Project = tuple[int, list[int], list[str]]


def pytest_addoption(parser: pytest.Parser) -> None:
    # Not --keep-testhosts: tests/hosts defines that one, and a session may collect both suites.
    parser.addoption("--keep-ha-testhosts", action="store_true", help="leave the HA test hosts running afterwards")
    parser.addoption(
        "--ha-deployed",
        action="store_true",
        help="the HA test hosts are up and deployed (kept with --keep-ha-testhosts): only deploy once more",
    )


@dataclass(frozen=True)
class Provisioned:
    """The deploy runs made against the fresh hosts."""

    first_run: PlaybookRun | None  # Docker and the whole stack on six empty servers (None with --ha-deployed)
    second_run: PlaybookRun  # the same again: nothing may change


@pytest.fixture(scope="session")
def provisioned(request: pytest.FixtureRequest) -> Iterator[Provisioned]:
    """Six hosts from nothing: the images bundled on this machine, then the deploy twice."""
    deployed = request.config.getoption("--ha-deployed")
    first_run = None
    try:
        if not deployed:
            testhosts(HOST_SET, "down")
            testhosts(HOST_SET, "up")
            # Built once here rather than on each host: six hosts building at once on a shared machine is slow.
            deploy_or_exit("bundle.yml", INVENTORY)
            first_run = deploy_or_exit("site.yml", INVENTORY)
        yield Provisioned(first_run, deploy_or_exit("site.yml", INVENTORY))
    finally:
        if not request.config.getoption("--keep-ha-testhosts"):
            testhosts(HOST_SET, "down")


@pytest.fixture(scope="session")
def app(provisioned: Provisioned) -> testinfra.host.Host:
    return inventory_host(INVENTORY, "app")


@pytest.fixture(scope="session")
def db_hosts(provisioned: Provisioned) -> dict[str, testinfra.host.Host]:
    return {name: inventory_host(INVENTORY, name) for name in DB_HOSTS}


@pytest.fixture(scope="session")
def app_hosts(provisioned: Provisioned) -> dict[str, testinfra.host.Host]:
    return {name: inventory_host(INVENTORY, name) for name in APP_HOSTS}


@pytest.fixture(scope="session")
def lb(provisioned: Provisioned) -> testinfra.host.Host:
    return inventory_host(INVENTORY, LB_HOST)


@pytest.fixture(scope="session")
def deployment(
    app: testinfra.host.Host, lb: testinfra.host.Host, tmp_path_factory: pytest.TempPathFactory
) -> Deployment:
    """The stack as the first app host's credentials.env describes it; its URL is the balancer's, whose
    certificate the balancer host's CA signed."""
    found = load_deployment(INVENTORY, app, tmp_path_factory)
    ca = f"{host_setting(lb, 'labelstack_secrets_dir')}/tls/ca.crt"
    return dataclasses.replace(found, ca_bundle=trust_deployment_ca(lb, ca, tmp_path_factory))


@pytest.fixture(scope="session")
def api(deployment: Deployment) -> Api:
    # Short: a request stuck on a frozen primary must count as failed, not hold the writer for a minute.
    return deployment.api(timeout=10)


class Cluster:
    """The Patroni cluster as its REST API tells it, asked from the app host (the database hosts' firewall lets
    only the app and database hosts reach port 8008)."""

    def __init__(self, app: testinfra.host.Host, db_hosts: dict[str, testinfra.host.Host]) -> None:
        self.app = app
        self.db_hosts = db_hosts

    def members(self) -> list[dict[str, object]]:
        """GET /cluster from the first member that answers."""
        for address in DB_HOSTS.values():
            result = self.app.run(
                "python3 -c %s %s",
                "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())",
                f"http://{address}:{PATRONI_PORT}/cluster",
            )
            if result.rc == 0:
                return list(json.loads(result.stdout)["members"])
        raise AssertionError("no Patroni member answered GET /cluster")

    def leader(self) -> str:
        """The name of the running leader ('' while there is none)."""
        running = [m for m in self.members() if m["role"] == "leader" and m["state"] == "running"]
        return str(running[0]["name"]) if len(running) == 1 else ""

    def db_container(self, name: str) -> str:
        return f"{host_setting(self.db_hosts[name], 'labelstack_project_name')}-db-1"

    def sql(self, name: str, query: str) -> list[list[str]]:
        """Rows of a query run by psql in the PostgreSQL container of database host `name` (local socket)."""
        host = self.db_hosts[name]
        user = str(host_setting(host, "labelstack_db_user"))
        out = host.check_output(
            "docker exec %s psql -X -A -t -F '|' -U %s -d postgres -c %s", self.db_container(name), user, query
        )
        return [line.split("|") for line in out.splitlines() if line]

    def replication(self, leader: str) -> list[list[str]]:
        """(member, state, sync_state) of each replica streaming from the leader."""
        return self.sql(leader, "SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY 1")

    def wait_healthy(self, timeout: float) -> str:
        """Wait until there is one leader with both other members streaming from it; return the leader's name."""

        def healthy() -> str | None:
            leader = self.leader()
            if not leader:
                return None
            streaming = [row for row in self.replication(leader) if row[1] == "streaming"]
            return leader if len(streaming) == len(DB_HOSTS) - 1 else None

        return wait_for(healthy, timeout, "the cluster has no leader with two streaming replicas", 2)


@pytest.fixture(scope="session")
def cluster(app: testinfra.host.Host, db_hosts: dict[str, testinfra.host.Host]) -> Cluster:
    return Cluster(app, db_hosts)


@pytest.fixture(scope="module")
def project(api: Api) -> Iterator[Project]:
    """A text classification project of N_TASKS tasks for one test module, deleted afterwards."""
    rows = make_texts(N_TASKS, seed=17)
    pid = api.call("POST", "/api/projects", {"title": f"ha-{uuid.uuid4().hex[:8]}", "label_config": CONFIG})["id"]
    api.call("POST", f"/api/projects/{pid}/import", [{"text": text} for text, _ in rows])
    yield pid, sorted(int(t["id"]) for t in api.all_tasks(pid)), [label for _, label in rows]
    api.call("DELETE", f"/api/projects/{pid}", ok=(204, 404))


def record(report: str, how: str, values: dict[str, object], record_property: Callable[[str, object], None]) -> None:
    """One measurement into the junit report and into reports/<report>.json under `how` (the README quotes it)."""
    for key, value in values.items():
        record_property(f"{how}_{key}", value)
    path = REPORTS / f"{report}.json"
    path.parent.mkdir(exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(previous | {how: values}, indent=2) + "\n")
