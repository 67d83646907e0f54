"""The calls the backend makes to Label Studio, with its own token (LABEL_STUDIO_API_KEY), never one it was sent."""

from __future__ import annotations

import requests

from .base import Json

# Runs wait in the background: an export, import or delete of 5,000 predictions took minutes on a loaded host.
TIMEOUT = 900


class LabelStudio:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, body: Json = None, **params: str) -> Json:
        response = self.session.request(method, f"{self.url}{path}", params=params, json=body, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json() if response.content else None

    def project(self, project: int) -> dict[str, Json]:
        return self.call("GET", f"/api/projects/{project}")

    def tasks(self, project: int) -> list[dict[str, Json]]:
        """Every task with its annotations, in one export (the task list API pages at 100)."""
        return self.call("GET", f"/api/projects/{project}/export", exportType="JSON", download_all_tasks="true")

    def import_predictions(self, project: int, rows: list[dict[str, Json]]) -> None:
        self.call("POST", f"/api/projects/{project}/import/predictions", rows)

    def set_model_version(self, project: int, version: str) -> None:
        self.call("PATCH", f"/api/projects/{project}", {"model_version": version})

    def prediction_versions(self, project: int) -> list[str]:
        """The model versions the project's predictions carry."""
        versions = self.call("GET", f"/api/projects/{project}/model-versions")
        # {version: count}; older Label Studio releases answered a plain list of versions.
        return list(versions)

    def delete_predictions(self, project: int, version: str) -> None:
        self.call("DELETE", f"/api/projects/{project}/model-versions", {"model_version": version})
