"""Session fixtures: the deployment under test (optionally deployed first), its host and its API client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import testinfra

from labelstack_testlib import (
    SLOW_TIMEOUT,
    Api,
    Deployment,
    NotDeployedError,
    PlaybookRun,
    ansible_environment,
    inventory_host,
    load_deployment,
    run_playbook,
)

# testinfra's ansible backend runs ansible-inventory: the venv's, with this repository's config.
os.environ.update(ansible_environment())


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--inventory", default="inventory/local", help="inventory of the deployment under test")
    parser.addoption("--deploy", action="store_true", help="deploy to the inventory before testing")
    parser.addoption(
        "--secrets-dir",
        default="",
        help="the secrets folder (credentials.env) of the stack under test when it is not the inventory's"
        " (make drill tests its throwaway stack on the inventory's host)",
    )


@contextmanager
def _exit_unless_deployed() -> Iterator[None]:
    """Without a deployment to test, end the session with one message rather than an error per test."""
    try:
        yield
    except NotDeployedError as exc:
        pytest.exit(f"FAIL: {exc}", returncode=1)


@pytest.fixture(scope="session")
def inventory(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--inventory"))


@pytest.fixture(scope="session")
def first_deploy(request: pytest.FixtureRequest, inventory: str) -> PlaybookRun | None:
    """The initial apply when --deploy is given (once per session), else None."""
    if not request.config.getoption("--deploy"):
        return None
    run = run_playbook("site.yml", inventory)
    if run.returncode != 0:
        pytest.exit(f"FAIL: deploy to {inventory} failed:\n{run.output[-6000:]}", returncode=1)
    return run


@pytest.fixture(scope="session")
def app_host(inventory: str, first_deploy: PlaybookRun | None) -> testinfra.host.Host:
    with _exit_unless_deployed():
        return inventory_host(inventory)


@pytest.fixture(scope="session")
def deployment(
    request: pytest.FixtureRequest,
    inventory: str,
    app_host: testinfra.host.Host,
    tmp_path_factory: pytest.TempPathFactory,
) -> Deployment:
    with _exit_unless_deployed():
        return load_deployment(inventory, app_host, tmp_path_factory, str(request.config.getoption("--secrets-dir")))


@pytest.fixture(scope="session")
def api(deployment: Deployment) -> Api:
    return deployment.api()


@pytest.fixture(scope="session")
def slow_api(deployment: Deployment) -> Api:
    """The API client for tests whose requests run long (a 20,000-task import)."""
    return deployment.api(timeout=SLOW_TIMEOUT)
