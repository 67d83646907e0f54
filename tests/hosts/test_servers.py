"""Deploying to fresh servers over SSH: multi-host layout, air-gapped app host, database reachability."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import testinfra

from labelstack_testlib import REPO, Deployment, host_setting, parse_env_file, run_playbook

from .conftest import INVENTORY, Provisioned

DB_ADDRESS = "10.213.7.11"
TEST_NETWORK = "labelstack-th"
# Where inventory/test-hosts keeps the generated database password on the controller.
CONTROLLER_SECRET = Path.home() / ".labelstack" / "test-hosts" / "db_password"


def compose_services(host: testinfra.host.Host) -> list[str]:
    """Names of the running containers on a host."""
    return sorted(host.check_output("docker ps --format '{{.Names}}'").split())


def db_image(host: testinfra.host.Host) -> str:
    return host.check_output("docker image ls labelstack/postgres --format '{{.Repository}}:{{.Tag}}'").split()[0]


def test_second_run_changes_nothing_on_either_host(provisioned: Provisioned) -> None:
    recap = provisioned.second_run.recap()
    assert set(recap) == {"app", "db"}, recap
    assert all(counts["changed"] == 0 for counts in recap.values()), provisioned.second_run.changed_tasks()


@pytest.mark.parametrize("name", ["app", "db"])
def test_docker_installed_and_answering(request: pytest.FixtureRequest, name: str) -> None:
    host: testinfra.host.Host = request.getfixturevalue(name)
    assert host.run("docker version --format '{{.Server.Version}}'").rc == 0


def test_db_host_runs_only_postgresql(db: testinfra.host.Host) -> None:
    container = f"{host_setting(db, 'labelstack_project_name')}-db"  # a plain container: no compose project
    assert compose_services(db) == [container]
    health = db.check_output("docker inspect --format '{{.State.Health.Status}}' %s", container)
    assert health == "healthy"


def test_app_host_runs_label_studio_and_ml_backend_without_a_database(app_deployment: Deployment) -> None:
    expected = [app_deployment.container(service) for service in ("app", "ml-backend", "proxy")]
    assert compose_services(app_deployment.host) == expected


def test_app_host_deployed_without_outbound_network(provisioned: Provisioned, app: testinfra.host.Host) -> None:
    probe = app.run("python3 -c \"import socket; socket.create_connection(('deb.debian.org', 80), timeout=5)\"")
    assert probe.rc != 0, "the app host reached the Debian mirror: it was not offline during the deploy"
    changed = provisioned.first_run.changed_tasks("app")
    assert "labelstack : Load the image into Docker" in changed
    assert not any("Build each image" in task for task in changed)


def test_postgresql_answers_the_app_host(app: testinfra.host.Host) -> None:
    ready = app.run(f"docker run --rm --network host {db_image(app)} pg_isready -h {DB_ADDRESS} -t 10")
    assert ready.rc == 0, ready.stdout + ready.stderr


def from_third_container(network: str, script: str, env: dict[str, str] | None = None) -> str:
    """Output of a bash script run in a throwaway container (PostgreSQL's client image) on `network`.

    Variables of `env` reach it through docker's environment, never its command line.
    """
    image = db_image(testinfra.get_host("local://"))
    names = [arg for name in env or {} for arg in ("-e", name)]
    probe = ["docker", "run", "--rm", "--network", network, *names, "--entrypoint", "bash", image, "-c", script]
    environment = {**os.environ, **(env or {})}
    result = subprocess.run(probe, capture_output=True, text=True, timeout=60, check=True, env=environment)
    return result.stdout + result.stderr


@pytest.mark.parametrize("network", [TEST_NETWORK, "bridge"])
def test_postgresql_refuses_a_third_container(provisioned: Provisioned, app: testinfra.host.Host, network: str) -> None:
    """Another container, on the test network (the app host's peers) or another one: no PostgreSQL."""
    out = from_third_container(
        network,
        f"pg_isready -h {DB_ADDRESS} -t 5; echo pg=$?;"
        f" timeout 5 bash -c 'exec 3<>/dev/tcp/{DB_ADDRESS}/22'; echo ssh=$?",
    )
    assert "pg=0" not in out, out
    if network == TEST_NETWORK:
        # The same container reaches the db host's sshd: the firewall, not routing, keeps it from PostgreSQL.
        assert "ssh=0" in out, out


def test_database_password_generated_on_the_controller_and_never_printed(
    provisioned: Provisioned, app_deployment: Deployment
) -> None:
    mode = CONTROLLER_SECRET.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(CONTROLLER_SECRET.parent.stat().st_mode) == 0o700
    password = CONTROLLER_SECRET.read_text().strip()
    assert len(password) == 40
    env = parse_env_file(app_deployment.host.file(f"{app_deployment.install_dir}/.env").content_string)
    assert env["LABELSTACK_DB_PASSWORD"] == password
    for run in (provisioned.docker_run, provisioned.first_run, provisioned.second_run):
        assert password not in run.output
    assert REPO not in CONTROLLER_SECRET.parents


def test_offline_app_host_deploys_again_with_stale_package_lists(app: testinfra.host.Host) -> None:
    """Hours later apt would refresh its lists before installing: an air-gapped host must not need to."""
    app.check_output("touch -d '3 hours ago' /var/lib/apt/periodic/update-success-stamp /var/lib/apt/lists")
    run = run_playbook("site.yml", INVENTORY, "--limit", "app")
    assert run.returncode == 0, run.output[-3000:]
    assert run.recap()["app"]["changed"] == 0, run.changed_tasks("app")


def test_postgresql_refuses_other_sources_without_the_firewall(db: testinfra.host.Host) -> None:
    """A reboot loses the DOCKER-USER rules (unless persisted): pg_hba.conf must still refuse other sources.

    The rules are removed, a peer with the right password is refused by PostgreSQL itself, and a deploy of the
    db host puts the rules back.
    """
    db.check_output(
        "iptables -S DOCKER-USER | grep -- '--comment \"labelstack' | sed 's/^-A/-D/'"
        ' | while read -r rule; do eval iptables "$rule"; done'
    )
    try:
        assert "labelstack" not in db.check_output("iptables -S DOCKER-USER")
        out = from_third_container(
            TEST_NETWORK,
            f"psql -h {DB_ADDRESS} -U labelstudio -d labelstudio -Atc 'select 1'; echo psql=$?",
            {"PGPASSWORD": CONTROLLER_SECRET.read_text().strip(), "PGCONNECT_TIMEOUT": "5"},
        )
        assert "psql=0" not in out, out
        assert "no pg_hba.conf entry for host" in out, out
    finally:
        run = run_playbook("site.yml", INVENTORY, "--limit", "db")
    assert run.returncode == 0, run.output[-3000:]
    assert db.check_output("iptables -S DOCKER-USER").count("labelstack") == 2
