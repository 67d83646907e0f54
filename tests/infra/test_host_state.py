"""The real state of a deployed host, checked with testinfra over the inventory's own connection."""

from __future__ import annotations

import json
from typing import Any

import pytest

from labelstack_testlib import Deployment

SERVICES = ("app", "db", "ml-backend", "proxy")


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


def _expect_service(deployment: Deployment, service: str) -> None:
    """Skip services this deployment does not run."""
    if service == "db" and deployment.db_external:
        pytest.skip("external database")
    if service == "proxy" and not deployment.proxy_enabled:
        pytest.skip("no TLS proxy")


@pytest.mark.parametrize("service", SERVICES)
def test_service_running_and_healthy(deployment: Deployment, containers: dict[str, dict], service: str) -> None:
    _expect_service(deployment, service)
    assert service in containers, f"service {service} has no container"
    state = containers[service]["State"]
    health = state.get("Health", {}).get("Status")
    assert state["Running"], f"{service} is {state['Status']}; recent logs:\n{_service_logs(deployment, service)}"
    assert health == "healthy", f"{service} is {health}; recent logs:\n{_service_logs(deployment, service)}"


@pytest.mark.parametrize("service", SERVICES)
def test_service_restarts_by_itself(deployment: Deployment, containers: dict[str, dict], service: str) -> None:
    _expect_service(deployment, service)
    policy = containers[service]["HostConfig"]["RestartPolicy"]["Name"]
    assert policy in {"always", "unless-stopped"}, f"{service} restart policy is '{policy}'"


def _published(container: dict[str, Any]) -> list[tuple[str, str]]:
    bindings = container["HostConfig"]["PortBindings"] or {}
    return sorted((b["HostIp"], b["HostPort"]) for spec in bindings.values() for b in spec or [])


def test_only_the_front_service_is_published_on_the_bind_address(
    deployment: Deployment, containers: dict[str, dict]
) -> None:
    """Without the proxy the app is published on bind:port; with it, only nginx (HTTP and HTTPS)."""
    bind = deployment.bind_address
    ports = [deployment.port]
    front = "app"
    if deployment.proxy_enabled:
        front = "proxy"
        ports.append(deployment.https_port)
        assert _published(containers["app"]) == [], "the app is published although the proxy fronts it"
    expected = sorted((bind, str(port)) for port in ports)
    assert _published(containers[front]) == expected, f"{front} published on {_published(containers[front])}"
    for port in ports:
        listeners = {address for address, listening in _listening(deployment) if listening == port}
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
    secrets_dir = deployment.secrets_dir
    listing = deployment.host.check_output("find %s -mindepth 1 -maxdepth 1 -type f", secrets_dir).split()
    for path in [f"{deployment.install_dir}/.env", *listing]:
        f = deployment.host.file(path)
        assert (f.user, f.mode) == ("root", 0o600), f"{path} is {f.user} {oct(f.mode)}, expected root 0600"
    directories = [secrets_dir]
    if deployment.host.file(f"{secrets_dir}/tls").exists:
        directories.append(f"{secrets_dir}/tls")
        # Keys: the CA's is root's, the certificate's belongs to the proxy (uid 101), which reads it mounted alone.
        for name, user in (("ca.key", "root"), ("server.key", None)):
            key = deployment.host.file(f"{secrets_dir}/tls/{name}")
            if key.exists:
                assert key.mode == 0o600, f"{key.path} is {oct(key.mode)}"
                assert user is None or key.user == user, f"{key.path} belongs to {key.user}"
    for path in directories:
        directory = deployment.host.file(path)
        assert (directory.user, directory.mode) == ("root", 0o700), f"{path} is {oct(directory.mode)}"


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
    version = deployment.version
    installed = deployment.host.check_output(
        "docker exec %s python3 -c %s",
        containers["app"]["Name"].lstrip("/"),
        "import importlib.metadata as m; print(m.version('label-studio'))",
    )
    assert installed == version, f"app runs label-studio {installed}, pinned {version}"
    assert version in containers["app"]["Config"]["Image"], containers["app"]["Config"]["Image"]


def test_services_drop_capabilities_and_have_memory_limits(containers: dict[str, dict]) -> None:
    for service, container in containers.items():
        host_config = container["HostConfig"]
        assert host_config["CapDrop"] == ["ALL"], f"{service} keeps capabilities: CapDrop={host_config['CapDrop']}"
        assert host_config["Memory"] > 0, f"{service} has no memory limit"
        assert "no-new-privileges:true" in (host_config["SecurityOpt"] or []), f"{service} may gain privileges"


def test_plain_http_redirects_to_https(deployment: Deployment) -> None:
    if not deployment.proxy_enabled:
        pytest.skip("no TLS proxy")
    probe = (
        "import http.client as h; c = h.HTTPConnection('127.0.0.1', %s, timeout=10); "
        "c.request('GET', '/projects/?page=2', headers={'Host': 'evil.example'}); r = c.getresponse(); "
        "print(r.status, r.getheader('Location'))"
    )
    status, location = deployment.host.check_output("python3 -c %s", probe % deployment.port).split()
    assert status == "301", f"HTTP answered {status} {location}"
    # To the configured HTTPS URL, whatever Host the client sent.
    assert location == f"{deployment.url}/projects/?page=2", location
    assert location.startswith("https://"), location


# Run inside the app container: the deployed uwsgi.ini with a stand-in application that answers after 4 s, on a
# loopback port of its own, with limits of 2 s for requests and 10 s for imports. Prints each path's outcome.
UWSGI_LIMITS_PROBE = """
import json, os, re, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
work = Path(tempfile.mkdtemp())
(work / "slow.py").write_text(
    "import time\\ndef application(env, start_response):\\n"
    "    time.sleep(4)\\n    start_response('200 OK', [])\\n    return [b'done']\\n")
ini = Path("/label-studio/deploy/uwsgi.ini").read_text()
for key, value in (("http", "127.0.0.1:18001"), ("module", "slow:application"), ("chdir", str(work))):
    ini = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", ini)
(work / "uwsgi.ini").write_text(ini)
env = dict(os.environ, UWSGI_HARAKIRI="2", UWSGI_IMPORT_HARAKIRI="10", UWSGI_HTTP_TIMEOUT="10",
           UWSGI_PROCESSES="1", UWSGI_NUMBER_OF_THREADS="2")
uwsgi = subprocess.Popen([str(Path(sys.executable).parent / "uwsgi"), "--ini", str(work / "uwsgi.ini")], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    deadline = time.monotonic() + 20
    while socket.socket().connect_ex(("127.0.0.1", 18001)) != 0:
        assert time.monotonic() < deadline, "the probe's uWSGI did not listen within 20 s"
        time.sleep(0.2)
    outcome = {}
    for path in ("/api/projects/7/import", "/api/projects/7/reimport/", "/api/tasks", "/api/projects/7/export"):
        started = time.monotonic()
        try:
            status = urllib.request.urlopen("http://127.0.0.1:18001" + path, timeout=15).status
        except Exception as exc:
            status = type(exc).__name__
        outcome[path] = [status, round(time.monotonic() - started, 1)]
    print(json.dumps(outcome))
finally:
    uwsgi.terminate()
    uwsgi.wait(20)
"""


def test_an_import_may_run_past_the_request_timeout(containers: dict[str, dict], deployment: Deployment) -> None:
    """Label Studio imports inside the request: uWSGI lets an import run for labelstack_wsgi_import_timeout, and
    ends every other request after labelstack_wsgi_timeout (the deployed uwsgi.ini, run with short limits)."""
    app = containers["app"]
    env = dict(item.split("=", 1) for item in app["Config"]["Env"])
    assert int(env["UWSGI_IMPORT_HARAKIRI"]) >= int(env["UWSGI_HARAKIRI"]), env
    assert env["UWSGI_HTTP_TIMEOUT"] == env["UWSGI_IMPORT_HARAKIRI"], "the router would give up on a long import"
    out = deployment.host.check_output("docker exec %s python3 -c %s", app["Name"].lstrip("/"), UWSGI_LIMITS_PROBE)
    outcome = json.loads(out.splitlines()[-1])
    for path in ("/api/projects/7/import", "/api/projects/7/reimport/"):
        assert outcome[path][0] == 200, f"an import ({path}) was ended before its 4 s: {outcome}"
    for path in ("/api/tasks", "/api/projects/7/export"):
        status, seconds = outcome[path]
        assert status != 200, f"{path} ran past the 2 s request limit: {outcome}"
        assert seconds < 3.5, f"{path} was ended late: {outcome}"
