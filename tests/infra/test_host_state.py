"""The real state of a deployed host, checked with testinfra over the inventory's own connection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conftest import Deployment

SERVICES = ("app", "db", "ml-backend")


def _inspect(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """`docker inspect` of each stack container, keyed by compose service name."""
    ids = deployment.host.check_output(
        "docker ps -aq --filter label=com.docker.compose.project=%s", deployment.project_name
    ).split()
    assert ids, f"no container of compose project {deployment.project_name} on the host"
    found = json.loads(deployment.host.check_output("docker inspect " + " ".join(["%s"] * len(ids)), *ids))
    return {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in found}


@pytest.fixture(scope="module")
def containers(deployment: Deployment) -> dict[str, dict[str, Any]]:
    return _inspect(deployment)


def _listening(deployment: Deployment) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket on the host, read from /proc (no ss/netstat needed)."""
    sockets: set[tuple[str, int]] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in deployment.host.file(table).content_string.splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":  # LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            if len(hex_addr) == 8:  # IPv4, little-endian
                address = ".".join(str(int(hex_addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
            else:
                address = "::" if int(hex_addr, 16) == 0 else hex_addr
            sockets.add((address, int(hex_port, 16)))
    return sockets


def _service_logs(deployment: Deployment, service: str) -> str:
    return deployment.host.run(
        "docker compose --project-name %s --project-directory %s logs --no-color --tail 40 %s",
        deployment.project_name,
        deployment.install_dir,
        service,
    ).stdout


def test_docker_daemon_answers(deployment: Deployment) -> None:
    # `docker version`, not `docker info --format`: the latter exits 0 when the daemon is down.
    result = deployment.host.run("docker version --format '{{.Server.Version}}'")
    assert result.rc == 0, f"Docker daemon not answering: {result.stderr}"
    assert result.stdout.strip(), "Docker daemon reported no server version"


@pytest.mark.parametrize("service", SERVICES)
def test_service_running_and_healthy(deployment: Deployment, containers: dict[str, dict], service: str) -> None:
    if service == "db" and deployment.variables.get("labelstack_db_external"):
        pytest.skip("external database")
    assert service in containers, f"service {service} has no container"
    state = containers[service]["State"]
    health = state.get("Health", {}).get("Status")
    assert state["Running"], f"{service} is {state['Status']}; recent logs:\n{_service_logs(deployment, service)}"
    assert health == "healthy", f"{service} is {health}; recent logs:\n{_service_logs(deployment, service)}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_restarts_by_itself(containers: dict[str, dict], service: str) -> None:
    policy = containers[service]["HostConfig"]["RestartPolicy"]["Name"]
    assert policy in {"always", "unless-stopped"}, f"{service} restart policy is '{policy}'"


def test_app_published_only_on_the_bind_address(deployment: Deployment, containers: dict[str, dict]) -> None:
    bind = str(deployment.variables.get("labelstack_bind_address", "127.0.0.1"))
    port = str(deployment.variables.get("labelstack_port", 8080))
    bindings = containers["app"]["HostConfig"]["PortBindings"]
    published = [(b["HostIp"], b["HostPort"]) for spec in bindings.values() for b in spec or []]
    assert published == [(bind, port)], f"app published on {published}, expected only {bind}:{port}"
    listeners = {address for address, listening_port in _listening(deployment) if listening_port == int(port)}
    assert listeners == {bind}, f"port {port} is listened on at {listeners or 'no address'}, expected only {bind}"


@pytest.mark.parametrize(("service", "port"), [("db", 5432), ("ml-backend", 9090)])
def test_internal_service_not_published(
    deployment: Deployment, containers: dict[str, dict], service: str, port: int
) -> None:
    if service not in containers:
        pytest.skip(f"{service} does not run on this host")
    published = {spec: b for spec, b in (containers[service]["NetworkSettings"]["Ports"] or {}).items() if b}
    assert not published, f"{service} publishes {published}"
    for other, container in containers.items():
        for spec, bindings in (container["NetworkSettings"]["Ports"] or {}).items():
            assert not (spec.startswith(f"{port}/") and bindings), f"{other} publishes port {port}: {bindings}"
    on_port = sorted(address for address, listening in _listening(deployment) if listening == port)
    assert not on_port, f"something listens on host port {port} at {on_port}"


def test_ml_backend_network_has_no_route_out(deployment: Deployment, containers: dict[str, dict]) -> None:
    networks = containers["ml-backend"]["NetworkSettings"]["Networks"]
    assert len(networks) == 1, f"ml-backend is on {sorted(networks)}, expected only the internal ML network"
    name = next(iter(networks))
    internal = deployment.host.check_output("docker network inspect -f '{{.Internal}}' %s", name)
    assert internal == "true", f"network {name} of ml-backend is not internal"


def test_secret_files_private_to_root(deployment: Deployment) -> None:
    secrets_dir = str(deployment.variables.get("labelstack_secrets_dir", "/etc/labelstack"))
    paths = [f"{deployment.install_dir}/.env", *deployment.host.check_output("ls -1d %s/*", secrets_dir).split()]
    for path in paths:
        f = deployment.host.file(path)
        assert (f.user, f.mode) == ("root", 0o600), f"{path} is {f.user} {oct(f.mode)}, expected root 0600"
    directory = deployment.host.file(secrets_dir)
    assert (directory.user, directory.mode) == ("root", 0o700), f"{secrets_dir} is {oct(directory.mode)}"


def test_data_directory_owned_by_app_user(deployment: Deployment, containers: dict[str, dict]) -> None:
    mount = next(m for m in containers["app"]["Mounts"] if m["Destination"] == "/label-studio/data")
    data = deployment.host.file(mount["Source"])
    assert data.uid == 1001, f"{mount['Source']} is owned by uid {data.uid}, the app runs as uid 1001"
    assert data.mode & 0o700 == 0o700, f"{mount['Source']} mode {oct(data.mode)} denies the owner"


def test_local_files_mounted_read_only(deployment: Deployment, containers: dict[str, dict]) -> None:
    mount = next(m for m in containers["app"]["Mounts"] if m["Destination"] == deployment.local_files_root)
    assert mount["RW"] is False, f"{deployment.local_files_root} is mounted read-write"
    result = deployment.host.run(
        "docker exec %s touch %s/.write-probe", containers["app"]["Name"].lstrip("/"), deployment.local_files_root
    )
    assert result.rc != 0, "a write into the local-files folder from inside the app succeeded"


def test_debug_off_in_app(containers: dict[str, dict], deployment: Deployment) -> None:
    result = deployment.host.check_output(
        "docker exec %s python3 -c %s",
        containers["app"]["Name"].lstrip("/"),
        "import os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'core.settings.label_studio');"
        "import sys; sys.path.insert(0, '/label-studio/label_studio');"
        "import django; django.setup(); from django.conf import settings; print('DEBUG', settings.DEBUG)",
    )
    assert result.splitlines()[-1] == "DEBUG False", f"Django DEBUG is not off: {result[-300:]}"


def test_app_runs_pinned_label_studio(containers: dict[str, dict], deployment: Deployment) -> None:
    version = str(deployment.variables.get("labelstack_label_studio_version", "1.23.2"))
    installed = deployment.host.check_output(
        "docker exec %s python3 -c %s",
        containers["app"]["Name"].lstrip("/"),
        "import importlib.metadata as m; print(m.version('label-studio'))",
    )
    assert installed == version, f"app runs label-studio {installed}, pinned {version}"
    assert version in containers["app"]["Config"]["Image"], containers["app"]["Config"]["Image"]
