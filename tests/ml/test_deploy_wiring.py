"""The deploy creates the projects of labelstack_projects that name an ML backend and wires them to it.

(Also those of labelstack_ml_projects, the deprecated variable deployed as such projects.)
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from labelstack_testlib import Api, Deployment

from .mllib import ml_tool


@pytest.fixture(scope="module")
def deployed_projects(api: Api, deployment: Deployment, ml_settings: dict[str, str]) -> list[dict[str, Any]]:
    wanted = [p["title"] for p in deployment.variables.get("labelstack_ml_projects") or []]
    wanted += [
        p["title"]
        for p in deployment.variables.get("labelstack_projects") or []
        if ml_settings["ML_BACKEND_URL"].startswith(f"http://{(p.get('ml_backends') or ['-'])[0]}.internal:")
    ]
    if not wanted:
        pytest.skip("this inventory declares no project connected to the default ML backend")
    found = {p["title"]: p for p in api.all_projects()}
    missing = [title for title in wanted if title not in found]
    assert not missing, f"the deploy did not create {missing}"
    return [found[title] for title in wanted]


def test_projects_use_their_sampling_and_show_predictions(
    deployment: Deployment, deployed_projects: list[dict[str, Any]]
) -> None:
    declared = {p["title"]: p for p in deployment.variables.get("labelstack_projects") or []}
    for project in deployed_projects:
        wanted = declared.get(project["title"], {}).get("sampling", "Uncertainty sampling")
        assert project["sampling"] == wanted, project["title"]
        assert project["show_collab_predictions"], project["title"]


def test_projects_are_connected_to_the_ml_backend(
    api: Api, ml_settings: dict[str, str], deployed_projects: list[dict[str, Any]]
) -> None:
    for project in deployed_projects:
        backends = api.call("GET", f"/api/ml?project={project['id']}")
        urls = {b["url"].rstrip("/"): b for b in backends}
        backend = urls.get(ml_settings["ML_BACKEND_URL"])
        assert backend, f"{project['title']}: ML backends {sorted(urls)}"
        assert backend["auth_method"] == "BASIC_AUTH", backend
        # Label Studio checks /health and /setup with the stored credentials: a wrong password shows as ERROR.
        assert backend["readable_state"] == "Connected", backend


def test_projects_send_annotation_events_to_the_backend(
    api: Api, ml_settings: dict[str, str], deployed_projects: list[dict[str, Any]]
) -> None:
    for project in deployed_projects:
        hooks = api.call("GET", f"/api/webhooks/?project={project['id']}")
        hook = next((h for h in hooks if h["url"] == ml_settings["ML_BACKEND_WEBHOOK_URL"]), None)
        assert hook, f"{project['title']}: webhooks {[h['url'] for h in hooks]}"
        assert hook["is_active"], hook["url"]
        assert hook["send_for_all_actions"], hook["url"]
        assert hook["headers"].get("Authorization", "").startswith("Basic "), "the webhook sends no credentials"


def test_connecting_again_changes_nothing(ml_settings: dict[str, str], deployed_projects: list[dict[str, Any]]) -> None:
    for project in deployed_projects:
        out = json.loads(ml_tool(ml_settings, "connect", str(project["id"])))
        assert out["changed"] is False, out


def test_the_tool_installed_on_the_host_runs_as_the_readme_says(
    deployment: Deployment, deployed_projects: list[dict[str, Any]]
) -> None:
    """README "ML backend": <install_dir>/bin/labelstack-ml with the deployment's credentials file, as root."""
    tool = f"{deployment.install_dir}/bin/labelstack-ml"
    credentials = f"{deployment.secrets_dir}/credentials.env"
    run = deployment.host.run("%s connect %s --credentials %s", tool, str(deployed_projects[0]["id"]), credentials)
    assert run.rc == 0, f"{tool} failed: {run.stderr[-2000:]}"
    assert json.loads(run.stdout)["changed"] is False, run.stdout
