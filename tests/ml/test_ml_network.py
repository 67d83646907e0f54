"""What Label Studio may call on the ML network: each backend's own address, not the network's gateway (the host).

Label Studio's SSRF protection stays on; the deploy allows exactly the backends' fixed addresses (a /32 each).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator

import pytest
import requests

from labelstack_testlib import Api, Deployment

from .mllib import CONFIG


@pytest.fixture(scope="module")
def ml_network(deployment: Deployment) -> dict[str, str]:
    """Gateway (Docker's: the subnet's first address) and default backend address of the stack's ML network."""
    inspect = "docker inspect -f '{{json .NetworkSettings.Networks}}' %s"
    networks = json.loads(deployment.host.check_output(inspect, deployment.container("ml-backend")))
    ((name, settings),) = networks.items()
    ipam = json.loads(deployment.host.check_output("docker network inspect -f '{{json .IPAM.Config}}' %s", name))
    gateway = ipam[0].get("Gateway") or str(next(ipaddress.ip_network(ipam[0]["Subnet"]).hosts()))
    return {"gateway": gateway, "backend": settings["IPAddress"]}


@pytest.fixture(scope="module")
def project(api: Api) -> Iterator[int]:
    created = api.call("POST", "/api/projects", {"title": f"ml-net-{uuid.uuid4().hex[:10]}", "label_config": CONFIG})
    yield created["id"]
    api.call("DELETE", f"/api/projects/{created['id']}", ok=(204, 404))


def connect(deployment: Deployment, ml_settings: dict[str, str], project: int, url: str) -> requests.Response:
    form = {
        "project": project,
        "title": "network probe",
        "url": url,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": ml_settings["ML_BACKEND_USER"],
        "basic_auth_pass": ml_settings["ML_BACKEND_PASSWORD"],
    }
    headers = {"Authorization": f"Token {deployment.api_key}"}
    return requests.post(f"{deployment.url}/api/ml", json=form, headers=headers, timeout=60)


def test_label_studio_may_call_the_backend_by_its_address(
    deployment: Deployment, ml_settings: dict[str, str], ml_network: dict[str, str], project: int
) -> None:
    response = connect(deployment, ml_settings, project, f"http://{ml_network['backend']}:9090")
    assert response.status_code == 201, response.text
    assert response.json()["readable_state"] == "Connected", response.text


def test_label_studio_may_not_call_the_host_through_the_ml_network(
    deployment: Deployment, ml_settings: dict[str, str], ml_network: dict[str, str], project: int
) -> None:
    response = connect(deployment, ml_settings, project, f"http://{ml_network['gateway']}:9090")
    assert response.status_code == 403, response.text
    assert "reserved network address" in response.text, response.text
