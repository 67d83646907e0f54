"""The deployment answers over HTTP and accepts the provisioned token."""

from __future__ import annotations

import requests

from labelstack_testlib import Deployment


def test_health_endpoint_reports_up(deployment: Deployment) -> None:
    response = requests.get(f"{deployment.url}/health", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json().get("status") == "UP"


def test_api_version_is_the_pinned_one(deployment: Deployment) -> None:
    response = requests.get(
        f"{deployment.url}/api/version", headers={"Authorization": f"Token {deployment.api_key}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.json()["release"] == deployment.version
