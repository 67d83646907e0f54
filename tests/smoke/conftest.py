"""Fixtures of the SDK smoke suite: the new SDK's client and throwaway projects that are always deleted."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator

import pytest
from label_studio_sdk import LabelStudio

from labelstack_testlib import Api, Deployment

from .smokelib import ProjectFactory, delete_projects


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """Title prefix of every project this test run creates."""
    return f"smoke-{uuid.uuid4().hex[:8]}-"


@pytest.fixture(scope="session")
def ls(deployment: Deployment) -> LabelStudio:
    """The new SDK client, as users create it."""
    return LabelStudio(base_url=deployment.url, api_key=deployment.api_key)


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
