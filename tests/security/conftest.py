"""Fixtures of the security suite: probes from inside the stack, and the login limits reset around a test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from labelstack_testlib import Deployment

from .seclib import PROXY_BUCKET_DRAIN_SECONDS, InStack, clear_auth_failures


@pytest.fixture(scope="session")
def in_stack(deployment: Deployment) -> InStack:
    return InStack(deployment)


@pytest.fixture(scope="module")
def proxy_bucket_drained(deployment: Deployment) -> Iterator[None]:
    """After the module, wait until the proxy lets this host's logins through again."""
    yield
    if deployment.proxy_enabled:
        time.sleep(PROXY_BUCKET_DRAIN_SECONDS)


@pytest.fixture
def fresh_auth_limits(deployment: Deployment, proxy_bucket_drained: None) -> Iterator[None]:
    """No failed attempts counted before or after the test: the other tests log in from the same address."""
    clear_auth_failures(deployment)
    yield
    clear_auth_failures(deployment)
