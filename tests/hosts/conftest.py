"""Fresh test servers (scripts/testhosts.sh) provisioned over SSH: db host + offline app host from a bundle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import testinfra

import labelstack_testlib
from labelstack_testlib import Deployment, PlaybookRun, inventory_host, load_deployment

INVENTORY = "inventory/test-hosts"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--keep-testhosts", action="store_true", help="leave the test hosts running after the session")


def testhosts(*args: str) -> str:
    """scripts/testhosts.sh on this suite's hosts (the default set)."""
    return labelstack_testlib.testhosts("default", *args)


def deploy_or_exit(playbook: str, *args: str) -> PlaybookRun:
    return labelstack_testlib.deploy_or_exit(playbook, INVENTORY, *args)


@dataclass(frozen=True)
class Provisioned:
    """The deploy runs made against the fresh hosts."""

    docker_run: (
        PlaybookRun  # Docker (and cron) installed on both hosts, network still open (it needs the Debian mirror)
    )
    first_run: PlaybookRun  # the stack, with the app host offline and images from the bundle
    second_run: PlaybookRun  # the same, with the app host's package lists hours old


@pytest.fixture(scope="session")
def provisioned(request: pytest.FixtureRequest) -> Iterator[Provisioned]:
    """Two hosts from nothing: Docker on both, then the app host offline, then the whole deploy twice."""
    testhosts("down")
    try:
        yield provision()
    finally:
        if not request.config.getoption("--keep-testhosts"):
            testhosts("down")


def provision() -> Provisioned:
    testhosts("up")
    deploy_or_exit("bundle.yml")
    docker_run, first_run = converge_offline_app()
    # Hours later apt would refresh its lists before installing: the offline app host must not need to.
    app = inventory_host(INVENTORY, "app")
    app.check_output("touch -d '3 hours ago' /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists")
    second_run = deploy_or_exit("site.yml")
    return Provisioned(docker_run, first_run, second_run)


def converge_offline_app() -> tuple[PlaybookRun, PlaybookRun]:
    """Docker (and cron, for the scheduled backups of inventory/test-hosts) installed while the mirror is reachable,
    then the whole deploy with the app host offline, its images from the bundle: (the first run, the deploy)."""
    docker_run = deploy_or_exit("site.yml", "--tags", "docker_engine,labelstack_packages")
    testhosts("offline", "app")
    return docker_run, deploy_or_exit("site.yml")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """test_lost_app_host replaces the app host: it runs after every other module of tests/hosts."""
    items.sort(key=lambda item: item.module is not None and item.module.__name__.endswith("test_lost_app_host"))


@pytest.fixture(scope="session")
def app(provisioned: Provisioned) -> testinfra.host.Host:
    return inventory_host(INVENTORY, "app")


@pytest.fixture(scope="session")
def db(provisioned: Provisioned) -> testinfra.host.Host:
    return inventory_host(INVENTORY, "db")


@pytest.fixture(scope="session")
def app_deployment(app: testinfra.host.Host, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    """The stack on the app host, as its credentials.env describes it."""
    return load_deployment(INVENTORY, app, tmp_path_factory)
