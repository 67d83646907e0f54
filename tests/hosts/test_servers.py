"""Deploying to fresh servers over SSH: multi-host layout, air-gapped app host, database reachability."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import testinfra

from labelstack_testlib import REPO, Deployment, host_setting, parse_env_file, run_playbook, wait_for

from .conftest import INVENTORY, Provisioned

DB_ADDRESS = "10.213.7.11"
APP_ADDRESS = "10.213.7.10"
# A source that is not (any longer) in labelstack_db_allowed_clients.
STALE_CLIENT = "10.213.7.99"
TEST_NETWORK = "labelstack-th"
# Where inventory/test-hosts keeps the generated database password on the controller.
CONTROLLER_SECRET = Path.home() / ".labelstack" / "test-hosts" / "db_password"


def compose_services(host: testinfra.host.Host) -> list[str]:
    """Names of the running containers on a host."""
    return sorted(host.check_output("docker ps --format '{{.Names}}'").split())


def db_container(db: testinfra.host.Host) -> str:
    """The db host's PostgreSQL: the compose service `db` of its stack."""
    return f"{host_setting(db, 'labelstack_project_name')}-db-1"


def firewall_container(db: testinfra.host.Host) -> str:
    """The db host's firewall keeper: the compose service `firewall` of its stack."""
    return f"{host_setting(db, 'labelstack_project_name')}-firewall-1"


def db_image(host: testinfra.host.Host) -> str:
    return host.check_output("docker image ls labelstack/postgres --format '{{.Repository}}:{{.Tag}}'").split()[0]


def test_second_run_changes_nothing_on_either_host(provisioned: Provisioned) -> None:
    """Also with the offline app host's package lists hours old: apt would refresh them before installing."""
    recap = provisioned.second_run.recap()
    # localhost: the inventory check every playbook starts with.
    assert set(recap) == {"app", "db", "localhost"}, recap
    assert all(counts["changed"] == 0 for counts in recap.values()), provisioned.second_run.changed_tasks()


@pytest.mark.parametrize("name", ["app", "db"])
def test_docker_installed_and_answering(request: pytest.FixtureRequest, name: str) -> None:
    host: testinfra.host.Host = request.getfixturevalue(name)
    assert host.run("docker version --format '{{.Server.Version}}'").rc == 0


def test_db_host_runs_only_postgresql_and_its_firewall_keeper(db: testinfra.host.Host) -> None:
    container = db_container(db)
    assert compose_services(db) == [container, firewall_container(db)]
    for name in compose_services(db):
        assert db.check_output("docker inspect --format '{{.State.Health.Status}}' %s", name) == "healthy", name
    # The keeper changes the host's firewall and nothing else: the host's network, one capability.
    keeper = json.loads(db.check_output("docker inspect --format '{{json .HostConfig}}' %s", firewall_container(db)))
    assert (keeper["NetworkMode"], keeper["CapAdd"], keeper["CapDrop"]) == ("host", ["NET_ADMIN"], ["ALL"]), keeper
    assert (keeper["ReadonlyRootfs"], keeper["RestartPolicy"]["Name"]) == (True, "unless-stopped"), keeper
    # The compose service of the bundled database, with the same hardening and its own client rules.
    config = json.loads(db.check_output("docker inspect --format '{{json .HostConfig}}' %s", container))
    assert config["CapDrop"] == ["ALL"], config
    assert "no-new-privileges:true" in config["SecurityOpt"], config
    args = db.check_output("docker inspect --format '{{.Args}}' %s", container)
    assert "hba_file=/etc/labelstack/pg_hba.conf" in args


def test_db_host_in_pull_mode_keeps_the_pg_hba_fence(db: testinfra.host.Host) -> None:
    """The official image ignores our entrypoint's variables: the fence must come from the compose service.

    No registry answers here, so pull mode is given an image already on the host (nothing is pulled); the
    deploy must run it with the mounted pg_hba.conf all the same, and a third container stays refused.
    """
    image = db_image(db)
    pull = {"labelstack_image_bundle": "", "labelstack_image_mode": "pull", "labelstack_pull_db_image": image}
    extra = json.dumps(pull)
    run = run_playbook("site.yml", INVENTORY, "--limit", "db", "-e", extra)
    assert run.returncode == 0, run.output[-3000:]
    install_dir = host_setting(db, "labelstack_install_dir")
    assert f"LABELSTACK_DB_IMAGE={image}" in db.file(f"{install_dir}/.env").content_string
    rules = db.file(f"{install_dir}/db/pg_hba.conf").content_string
    assert "10.213.7.10/32" in rules, rules
    assert "all  scram" not in rules, rules
    out = from_third_container(TEST_NETWORK, f"pg_isready -h {DB_ADDRESS} -t 5; echo pg=$?")
    assert "pg=0" not in out, out


def test_wrong_variable_type_on_the_db_host_fails_naming_it(db: testinfra.host.Host) -> None:
    before = db.check_output("docker inspect --format '{{.Id}}' %s", db_container(db))
    # A string would be turned into a one-item list; a mapping is refused by the db-host entry point's spec.
    extra_vars = '{"labelstack_db_allowed_clients": {"net": "10.213.7.10"}}'
    run = run_playbook("site.yml", INVENTORY, "--limit", "db", "-e", extra_vars)
    assert run.returncode != 0
    assert "Validation of arguments failed" in run.output, run.output[-3000:]
    assert "labelstack_db_allowed_clients" in run.output, run.output[-3000:]
    assert db.check_output("docker inspect --format '{{.Id}}' %s", db_container(db)) == before


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


def firewall_rules(db: testinfra.host.Host) -> list[str]:
    return [line for line in db.check_output("iptables -S DOCKER-USER").splitlines() if "labelstack" in line]


def rules_only_for(db: testinfra.host.Host, *clients: str) -> list[str] | None:
    """The stack's rules when they are exactly: one RETURN per client, then the DROP; None otherwise."""
    rules = firewall_rules(db)
    wanted = [f"-s {client}/32 -o {db_bridge(db)} " for client in clients]
    returns = [line for line in rules if "-j RETURN" in line]
    in_order = bool(rules) and "-j DROP" in rules[-1] and len(rules) == len(clients) + 1
    matched = all(any(w in line for line in returns) for w in wanted)
    return rules if in_order and matched else None


def delete_firewall_rules(db: testinfra.host.Host) -> None:
    db.check_output(
        "iptables -S DOCKER-USER | grep -- '--comment \"labelstack' | sed 's/^-A/-D/'"
        ' | while read -r rule; do eval iptables "$rule"; done'
    )


def test_postgresql_refuses_other_sources_without_the_firewall(db: testinfra.host.Host) -> None:
    """The firewall keeper stopped and its rules gone: pg_hba.conf must still refuse other sources.

    A peer with the right password is refused by PostgreSQL itself; the keeper, started again, puts the rules
    back without a deploy.
    """
    db.check_output("docker stop %s", firewall_container(db))
    delete_firewall_rules(db)
    try:
        assert firewall_rules(db) == []
        out = from_third_container(
            TEST_NETWORK,
            f"psql -h {DB_ADDRESS} -U labelstudio -d labelstudio -Atc 'select 1'; echo psql=$?",
            {"PGPASSWORD": CONTROLLER_SECRET.read_text().strip(), "PGCONNECT_TIMEOUT": "5"},
        )
        assert "psql=0" not in out, out
        assert "no pg_hba.conf entry for host" in out, out
    finally:
        db.check_output("docker start %s", firewall_container(db))
    wait_for(lambda: rules_only_for(db, APP_ADDRESS), 30, "the restarted keeper did not put the rules back")


def test_firewall_rules_come_back_after_a_reboot(db: testinfra.host.Host) -> None:
    """A reboot empties the kernel's rules, and no deploy runs: Docker starts the keeper, which restores them.

    The db host has no init system: the test stops dockerd (its containers with it), flushes every iptables
    table as a boot would, and starts dockerd the way the host's boot would.
    """
    keeper = firewall_container(db)
    started = db.check_output("docker inspect --format '{{.State.StartedAt}}' %s", keeper)
    db.check_output("pkill -TERM -x dockerd")
    wait_for(lambda: db.run("pgrep -x dockerd").rc != 0, 60, "dockerd did not stop")
    db.check_output("iptables -F && iptables -X && iptables -t nat -F && iptables -t nat -X")
    assert db.run("iptables -S DOCKER-USER").rc != 0, "the flush left Docker's chain behind"
    # As the docker_engine role starts it on a host without systemd (its log: docker_engine_direct_log).
    db.check_output("setsid nohup /usr/sbin/dockerd >>/var/log/dockerd.log 2>&1 </dev/null &")
    wait_for(lambda: db.run("docker version").rc == 0, 60, "dockerd did not come back")
    wait_for(lambda: rules_only_for(db, APP_ADDRESS), 90, "no rules again after dockerd restarted")
    assert db.check_output("docker inspect --format '{{.State.StartedAt}}' %s", keeper) != started
    wait_for(
        lambda: db.check_output("docker inspect --format '{{.State.Health.Status}}' %s", db_container(db)) == "healthy",
        90,
        "PostgreSQL did not come back healthy after the reboot",
    )


def test_allowed_clients_change_leaves_exactly_the_new_rules(db: testinfra.host.Host) -> None:
    """Two real deploys of the db host: one allowing one more client, then the inventory's list again."""
    extra = json.dumps({"labelstack_db_allowed_clients": [APP_ADDRESS, STALE_CLIENT]})
    run = run_playbook("site.yml", INVENTORY, "--limit", "db", "-e", extra)
    assert run.returncode == 0, run.output[-3000:]
    assert rules_only_for(db, APP_ADDRESS, STALE_CLIENT), firewall_rules(db)
    run = run_playbook("site.yml", INVENTORY, "--limit", "db")
    assert run.returncode == 0, run.output[-3000:]
    assert rules_only_for(db, APP_ADDRESS), f"a client no longer allowed kept its rule: {firewall_rules(db)}"


def db_bridge(db: testinfra.host.Host) -> str:
    install_dir = host_setting(db, "labelstack_install_dir")
    return db.check_output("grep ^LABELSTACK_DB_BRIDGE= %s/.env | cut -d= -f2", install_dir)


def db_client(app_deployment: Deployment, sql: str, *env: str) -> testinfra.backend.base.CommandResult:
    """psql in the app host's db-client (the stack's own connection settings), with extra -e NAME=value."""
    options = "".join(f"-e {shlex.quote(item)} " for item in env)
    return app_deployment.host.run(
        f"cd %s && docker compose run --rm --no-deps -T {options}db-client psql -Atc %s",
        app_deployment.install_dir,
        sql,
    )


def test_app_connects_to_postgresql_over_verified_tls(app_deployment: Deployment, db: testinfra.host.Host) -> None:
    app = app_deployment.host
    assert app.check_output("docker exec %s printenv PGSSLMODE", app_deployment.container("app")) == "verify-full"
    app_deployment.api().call("GET", "/api/projects")  # the app keeps its connections (CONN_MAX_AGE)
    rows = db.check_output(
        "docker exec %s psql -U labelstudio -d postgres -Atc %s",
        db_container(db),
        "SELECT s.ssl, a.client_addr FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
        " WHERE a.client_addr IS NOT NULL AND a.datname = 'labelstudio' AND a.pid <> pg_backend_pid()",
    ).splitlines()
    assert rows, "no connection of the app host seen on the db host"
    assert all(row.startswith("t|") for row in rows), f"connections without TLS: {rows}"
    own = db_client(app_deployment, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert own.stdout.strip() == "t", own.stdout + own.stderr


def test_postgresql_refuses_a_plaintext_connection_from_the_app_host(app_deployment: Deployment) -> None:
    plain = db_client(app_deployment, "SELECT 1", "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=5")
    assert plain.rc != 0, "PostgreSQL accepted a plaintext connection"
    assert "no pg_hba.conf entry" in plain.stderr, plain.stderr
    assert "no encryption" in plain.stderr, plain.stderr


def test_backup_covers_the_database_on_the_db_host(app_deployment: Deployment) -> None:
    """`make backup` on a multi-host inventory: the app host's backup holds the db host's database."""
    app = app_deployment.host
    run = run_playbook("backup.yml", INVENTORY)
    assert run.returncode == 0, run.output[-3000:]
    backup_dir = app_deployment.backup_dir
    name = app.check_output(f"ls {backup_dir} | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z$' | sort | tail -1")
    app.check_output(f"cd {backup_dir}/{name} && sha256sum --check --strict --quiet SHA256SUMS")
    tables = app.check_output(
        f"docker run --rm -i {db_image(app)} pg_restore --list < {backup_dir}/{name}/database.dump"
    )
    assert "TABLE public project " in tables, tables[:2000]
    assert "TABLE public task " in tables, tables[:2000]


def test_restore_puts_the_db_hosts_database_back_and_restarts_the_app(app_deployment: Deployment) -> None:
    """`make restore` with the database on another host: its data comes back, the app and the backend run again."""
    api = app_deployment.api()
    before = sorted(project["id"] for project in api.call("GET", "/api/projects?page_size=1000")["results"])
    run = run_playbook("backup.yml", INVENTORY)
    assert run.returncode == 0, run.output[-3000:]
    name = app_deployment.host.check_output(
        f"ls {app_deployment.backup_dir} | grep -E '^[0-9]{{8}}T[0-9]{{6}}Z$' | sort | tail -1"
    )
    later = api.call("POST", "/api/projects", {"title": "made after the backup"})["id"]
    run = run_playbook("restore.yml", INVENTORY, "-e", json.dumps({"labelstack_restore_backup": name}))
    assert run.returncode == 0, run.output[-6000:]
    services = [app_deployment.container(service) for service in ("app", "ml-backend", "proxy")]
    assert compose_services(app_deployment.host) == services
    for container in services:
        health = app_deployment.host.check_output("docker inspect --format '{{.State.Health.Status}}' %s", container)
        assert health == "healthy", container
    after = sorted(project["id"] for project in api.call("GET", "/api/projects?page_size=1000")["results"])
    assert after == before, f"project {later} was made after the backup"


def test_down_stops_both_hosts_and_a_deploy_brings_them_back(
    app_deployment: Deployment, db: testinfra.host.Host
) -> None:
    app = app_deployment.host
    run = run_playbook("down.yml", INVENTORY)
    assert run.returncode == 0, run.output[-3000:]
    assert compose_services(app) == []
    assert compose_services(db) == []
    assert app.file(app_deployment.app_data_dir).is_directory
    assert db.file(f"{host_setting(db, 'labelstack_data_dir')}/postgres/PG_VERSION").exists
    run = run_playbook("site.yml", INVENTORY)
    assert run.returncode == 0, run.output[-3000:]
    assert compose_services(db) == [db_container(db), firewall_container(db)]
    assert compose_services(app) == [app_deployment.container(service) for service in ("app", "ml-backend", "proxy")]
