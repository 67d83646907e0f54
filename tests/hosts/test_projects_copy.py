"""Projects as code across stacks: `make projects-export` of the local test stack (inventory/test-local, which
`make test` deploys and tests before the hosts), fed back as the projects of the fresh stack on the test hosts,
reproduces them field by field, as that stack exports them again.

Nothing is shared between the two stacks: the storage folder, the ML backend named in the export and the
webhook are resolved anew on the app host. The copies are deleted afterwards, so the hosts' smoke suite that
follows sees the stack as deployed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelstack_testlib import Deployment, NotDeployedError, inventory_host, make, read_credentials

from .conftest import INVENTORY

SOURCE = "inventory/test-local"
TITLES = ("ml-deploy-check", "Product photos", "Entity spans")


def exported(inventory: str, path: Path) -> dict[str, dict[str, Any]]:
    run = make("projects-export", inventory, f"PROJECTS_FILE={path}")
    assert run.returncode == 0, f"make projects-export INVENTORY={inventory} failed:\n{run.stdout[-4000:]}"
    return {p["title"]: p for p in yaml.safe_load(path.read_text())["labelstack_projects"]}


@pytest.fixture(scope="module")
def copied(
    app_deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]]:
    """The source stack's export and the hosts' export after `make projects` applied the former to the hosts."""
    try:  # (not load_deployment: it would make this process trust the source's CA instead of the hosts')
        read_credentials(inventory_host(SOURCE), SOURCE)
    except NotDeployedError as exc:
        pytest.skip(f"the source stack is not deployed ({exc}): `make test` deploys it before the hosts")
    folder = tmp_path_factory.mktemp("projects-copy")
    source = exported(SOURCE, folder / "source.yml")
    assert set(TITLES) <= set(source), f"{SOURCE}'s stack lacks some of {TITLES}: {sorted(source)}"
    (folder / "projects.yml").write_text(yaml.safe_dump({"labelstack_projects": [source[t] for t in TITLES]}))
    api = app_deployment.api()
    try:
        applied = make("projects", INVENTORY, f"ANSIBLE_ARGS=-e @{folder}/projects.yml")
        assert applied.returncode == 0, f"make projects on the hosts failed:\n{applied.stdout[-4000:]}"
        yield source, exported(INVENTORY, folder / "copy.yml")
    finally:
        for project in api.all_projects():
            if project["title"] in TITLES:
                api.call("DELETE", f"/api/projects/{project['id']}")


@pytest.mark.parametrize("title", TITLES)
def test_export_reproduces_the_project_on_a_fresh_stack(
    copied: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]], title: str
) -> None:
    source, copy = copied
    assert title in copy, f"{title} was not created on the hosts: {sorted(copy)}"
    for key in sorted(set(source[title]) | set(copy[title])):
        assert copy[title].get(key) == source[title].get(key), f"{title}: {key} differs on the hosts"


def test_the_copied_projects_backend_is_connected(
    app_deployment: Deployment, copied: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]
) -> None:
    api = app_deployment.api()
    text = next(p for p in api.all_projects() if p["title"] == TITLES[0])
    backends = api.call("GET", f"/api/ml?project={text['id']}")
    assert [b["readable_state"] for b in backends] == ["Connected"], backends
