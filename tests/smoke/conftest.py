"""Fixtures of the SDK smoke suite: API clients and throwaway projects that are always deleted."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator

import pytest
from label_studio_sdk import LabelStudio

from conftest import Deployment

from .smokelib import Api, ProjectFactory, Target, delete_projects


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """Title prefix of every project this test run creates."""
    return f"smoke-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="session")
def target(deployment: Deployment) -> Target:
    """The deployment's URL, key, host and folders, with the key kept out of reprs (pytest prints arguments)."""
    return Target(
        url=deployment.url.rstrip("/"),
        api_key=deployment.api_key,
        host=deployment.host,
        local_files_dir=deployment.local_files_dir,
        local_files_root=deployment.local_files_root,
    )


@pytest.fixture(scope="session")
def api(target: Target) -> Api:
    return Api(target.url, target.api_key)


@pytest.fixture(scope="session")
def ls(target: Target) -> LabelStudio:
    """The new SDK client, as users create it."""
    return LabelStudio(base_url=target.url, api_key=target.api_key)


@pytest.fixture(scope="session")
def my_user_id(ls: LabelStudio) -> int:
    user_id = ls.users.whoami().id
    assert user_id, "whoami returned no user id"
    return user_id


@pytest.fixture
def projects(ls: LabelStudio, api: Api, run_prefix: str) -> Iterator[ProjectFactory]:
    """Projects for one test, deleted afterwards (also when the test fails)."""
    factory = ProjectFactory(ls, api, run_prefix)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="module")
def module_projects(ls: LabelStudio, api: Api, run_prefix: str) -> Iterator[ProjectFactory]:
    """Projects shared by the tests of one module, deleted after the module."""
    factory = ProjectFactory(ls, api, run_prefix)
    yield factory
    factory.cleanup()


@pytest.fixture(scope="session", autouse=True)
def sweep_leftover_projects(api: Api, run_prefix: str) -> Iterator[None]:
    """After the run, delete any project of this run that a test did not register for cleanup."""
    yield
    leftovers = [project["id"] for project in api.all_projects() if project["title"].startswith(run_prefix)]
    if leftovers:
        delete_projects(api, leftovers)
        warnings.warn(f"deleted unregistered smoke projects {leftovers}", stacklevel=1)
