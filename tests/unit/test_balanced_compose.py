"""The balanced app tier's compose wiring (no stack needed): the other app hosts start exactly the server the
first one starts after migrating, the balancer publishes HTTPS only, and the ML routers take their ends from
their environment."""

from __future__ import annotations

import re

import yaml

from labelstack_testlib import REPO

COMPOSE = REPO / "compose"
ENV_TEMPLATE = REPO / "ansible" / "roles" / "labelstack" / "templates" / "env.j2"


def test_the_other_app_hosts_run_the_server_the_entrypoint_runs_after_migrating() -> None:
    entrypoint = (COMPOSE / "app" / "docker-entrypoint.sh").read_text()
    served = re.search(r"label-studio-uwsgi\)\n(?:.*\n)*?\s*exec (uwsgi [^\n]+)\n", entrypoint)
    assert served, "label-studio-uwsgi of the entrypoint execs no uwsgi"
    followers = re.search(r"^LABELSTACK_APP_COMMAND=.*else '([^']+)'", ENV_TEMPLATE.read_text(), re.MULTILINE)
    assert followers, "env.j2 sets no LABELSTACK_APP_COMMAND for the other app hosts"
    assert followers.group(1) == served.group(1)


def test_the_balanced_override_changes_the_apps_command_and_keeps_its_cache_off_the_shared_folder() -> None:
    services = yaml.safe_load((COMPOSE / "docker-compose.balanced.yml").read_text())["services"]
    assert services == {
        "app": {
            "command": "${LABELSTACK_APP_COMMAND:?}",
            "volumes": ["${LABELSTACK_APP_CACHE_DIR:?}:/label-studio/data/cache"],
        }
    }
    # The counters' folder (labelstack_settings.py) is under the data folder the app hosts share.
    settings = (COMPOSE / "app" / "settings" / "labelstack_settings.py").read_text()
    assert 'os.path.join(BASE_DATA_DIR, "cache", "auth-failures")' in settings


def test_the_balancer_publishes_https_only_with_the_key_beside_the_certificate() -> None:
    lb = yaml.safe_load((COMPOSE / "docker-compose.lb.yml").read_text())["services"]["lb"]
    assert lb["ports"] == ["${LABELSTACK_BIND_ADDRESS:?}:${LABELSTACK_HTTPS_PORT:?}:8443"]
    targets = {volume.split(":")[-2] for volume in lb["volumes"]}  # source:target:ro
    assert {"/etc/labelstack/tls/server.crt", "/etc/labelstack/tls/server.crt.key"} <= targets, targets


def test_the_ml_router_takes_its_port_and_upstream_from_its_environment() -> None:
    config = (COMPOSE / "ml-router.cfg").read_text()
    assert 'bind ":${LABELSTACK_ML_ROUTER_PORT}"' in config
    assert 'server upstream "${LABELSTACK_ML_ROUTER_UPSTREAM}"' in config
    router = yaml.safe_load((COMPOSE / "ml-router.yml").read_text())["services"]["ml-router"]
    assert router["volumes"] == ["${LABELSTACK_INSTALL_DIR:?}/ml-router.cfg:/etc/labelstack/ml-router.cfg:ro"]
