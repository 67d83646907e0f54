"""The deploy itself: apply, idempotent re-apply, check mode, bad input refused up front."""

from __future__ import annotations

import json
import socket

import pytest

from labelstack_testlib import Deployment, PlaybookRun, run_playbook


def _containers(deployment: Deployment) -> dict[str, str]:
    """Container name -> container id of the stack (ids change when a container is recreated)."""
    out = deployment.host.check_output(
        "docker ps --filter label=com.docker.compose.project=%s --format '{{.Names}} {{.ID}}'",
        deployment.project_name,
    )
    return dict(line.split() for line in out.splitlines())


def _secret_digests(deployment: Deployment) -> str:
    return deployment.host.check_output(
        "find %s -type f -print0 | sort -z | xargs -0 sha256sum", deployment.secrets_dir
    )


@pytest.fixture(scope="module")
def rerun(deployment: Deployment) -> tuple[PlaybookRun, dict[str, str], dict[str, str], str, str]:
    """A second apply, with the containers and secrets seen before and after it."""
    before, secrets_before = _containers(deployment), _secret_digests(deployment)
    run = run_playbook("site.yml", deployment.inventory)
    return run, before, _containers(deployment), secrets_before, _secret_digests(deployment)


def test_first_apply_succeeded(first_deploy: PlaybookRun | None) -> None:
    if first_deploy is None:
        pytest.skip("run with --deploy to exercise the first apply")
    assert first_deploy.returncode == 0, first_deploy.output[-4000:]


def test_second_apply_reports_no_change(rerun: tuple[PlaybookRun, dict, dict, str, str]) -> None:
    run = rerun[0]
    assert run.returncode == 0, run.output[-4000:]
    changed = {host: counts["changed"] for host, counts in run.recap().items()}
    assert changed, f"no PLAY RECAP in the output:\n{run.output[-2000:]}"
    assert all(count == 0 for count in changed.values()), (
        f"second deploy changed something: {changed}; tasks: {run.changed_tasks()}"
    )


def test_second_apply_restarts_no_container(rerun: tuple[PlaybookRun, dict, dict, str, str]) -> None:
    _, before, after, _, _ = rerun
    assert {"app", "db"} <= {name.rsplit("-", 2)[-2] for name in before}, f"stack not running: {before}"
    assert before == after, f"containers were recreated by a no-op deploy: {before} -> {after}"


def test_second_apply_keeps_every_secret(rerun: tuple[PlaybookRun, dict, dict, str, str]) -> None:
    _, _, _, secrets_before, secrets_after = rerun
    assert secrets_before == secrets_after, "a re-run regenerated a secret"


def test_check_mode_reports_no_change(deployment: Deployment, rerun: tuple) -> None:
    run = run_playbook("site.yml", deployment.inventory, "--check")
    assert run.returncode == 0, run.output[-4000:]
    changed = {host: counts["changed"] for host, counts in run.recap().items()}
    assert all(count == 0 for count in changed.values()), f"check mode predicts changes: {run.changed_tasks()}"


def test_no_secret_in_deploy_output(deployment: Deployment, rerun: tuple) -> None:
    for secret in (deployment.password, deployment.api_key):
        assert secret not in rerun[0].output, "a secret was printed by ansible-playbook"


def test_deploy_prints_the_ml_backend_urls_a_user_types(deployment: Deployment, rerun: tuple) -> None:
    """The URLs for Settings > Model are those of credentials.env, so a user can copy them from the deploy's output."""
    urls = [entry.split("=", 1)[1] for entry in deployment.credentials["ML_BACKENDS"].split()]
    assert urls, "credentials.env lists no ML backend"
    output = rerun[0].output
    start = output.find("ML backends for Settings > Model")
    assert start >= 0, f"the deploy's summary names no ML backend:\n{output[-2000:]}"
    summary = output[start : start + 200 + 100 * len(urls)]
    for url in urls:
        assert url in summary, f"the deploy's summary does not name {url}: {summary!r}"


@pytest.mark.parametrize(
    ("extra_vars", "named"),
    [
        ('{"labelstack_port": 70000}', "labelstack_port"),
        ('{"labelstack_image_mode": "sideways"}', "labelstack_image_mode"),
        ('{"labelstack_url": "example.org/"}', "labelstack_url"),
        ('{"labelstack_db_external": true}', "labelstack_db_external"),
        ('{"labelstack_wsgi_processes": 0}', "labelstack_wsgi_processes"),
        ('{"labelstack_proxy_enabled": false, "labelstack_bind_address": "0.0.0.0"}', "labelstack_bind_address"),
        ('{"labelstack_app_memory_limit": "lots"}', "labelstack_app_memory_limit"),
        ('{"docker_engine_service_manager": "upstart"}', "docker_engine_service_manager"),
    ],
)
def test_bad_variable_fails_before_any_change(deployment: Deployment, extra_vars: str, named: str) -> None:
    before = _containers(deployment)
    run = run_playbook("site.yml", deployment.inventory, "-e", extra_vars)
    assert run.returncode != 0, f"deploy accepted {extra_vars}"
    assert named in run.output, f"the error does not name {named}:\n{run.output[-2000:]}"
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.changed_tasks()
    assert _containers(deployment) == before, "a refused deploy touched the containers"


def _backups(deployment: Deployment) -> str:
    return deployment.host.check_output("ls -A %s 2>/dev/null || true", deployment.backup_dir)


@pytest.mark.parametrize(
    ("playbook", "extra_vars", "named"),
    [
        ("backup.yml", '{"labelstack_backup_keep": "seven"}', "labelstack_backup_keep"),
        (
            "restore.yml",
            '{"labelstack_restore_backup": "20260101T000000Z", "labelstack_restore_safety_backup": "maybe"}',
            "labelstack_restore_safety_backup",
        ),
    ],
)
def test_wrong_variable_type_on_an_operation_fails_naming_it(
    deployment: Deployment, playbook: str, extra_vars: str, named: str
) -> None:
    before, backups = _containers(deployment), _backups(deployment)
    run = run_playbook(playbook, deployment.inventory, "-e", extra_vars)
    assert run.returncode != 0, f"{playbook} accepted {extra_vars}"
    assert named in run.output, f"the error does not name {named}:\n{run.output[-2000:]}"
    assert "Validation of arguments failed" in run.output, f"the entry point's spec did not run:\n{run.output[-2000:]}"
    assert _containers(deployment) == before, f"a refused {playbook} touched the containers"
    assert _backups(deployment) == backups, f"a refused {playbook} touched the backups"


@pytest.mark.parametrize("playbook", ["site.yml", "backup.yml", "down.yml"])
def test_missing_inventory_fails_with_a_message(deployment: Deployment, playbook: str) -> None:
    before = _containers(deployment)
    run = run_playbook(playbook, "inventory/no-such-inventory")
    assert run.returncode != 0, f"{playbook} on a missing inventory exited 0:\n{run.output[-2000:]}"
    assert "inventory/no-such-inventory has no host in group labelstack" in run.output, run.output[-2000:]
    assert _containers(deployment) == before


def test_busy_port_fails_before_any_container_is_replaced(deployment: Deployment) -> None:
    """Another process on the port: preflight says so, instead of compose failing after replacing containers."""
    with socket.socket() as busy:
        busy.bind((deployment.bind_address, 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = _containers(deployment)
        run = run_playbook("site.yml", deployment.inventory, "-e", json.dumps({"labelstack_port": port}))
    assert run.returncode != 0, "the deploy went ahead on a busy port"
    taken = f"labelstack_port {port} on {deployment.bind_address} is already taken by another process"
    assert taken in run.output, run.output[-2000:]
    assert all(counts["changed"] == 0 for counts in run.recap().values()), run.changed_tasks()
    assert _containers(deployment) == before, "a refused deploy touched the containers"
