"""The calls the backend makes to Label Studio, with its own token (LABEL_STUDIO_API_KEY), never one it was sent."""

from __future__ import annotations

import logging
import time

import requests

from .base import Json

log = logging.getLogger("labelstack_ml")

# Runs wait in the background: an export, import or delete of 5,000 predictions took minutes on a loaded host.
TIMEOUT = 900
# A file (an image to classify) is read while Label Studio waits for /predict: fail fast instead.
FILE_TIMEOUT = 30
# PostgreSQL breaks a deadlock between a run's prediction import and annotators' saves by failing one of them,
# which Label Studio answers with a 500 and a rolled-back transaction. Seen on the test stack: without a retry the
# run is lost and the project waits for the next annotation. Each call is tried this often, the waits doubling.
ATTEMPTS = 3
RETRY_WAIT = 1.0


class TooLargeError(ValueError):
    """A file larger than the caller's limit (refused from Content-Length, or after reading that many bytes)."""


class LabelStudio:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, body: Json = None, **params: str) -> Json:
        """One API call, tried again after a server error (5xx), which Label Studio answers with its transaction
        rolled back; a client error (4xx) is final at once.
        """
        for attempt in range(1, ATTEMPTS + 1):
            response = self.session.request(method, f"{self.url}{path}", params=params, json=body, timeout=TIMEOUT)
            if response.status_code < 500 or attempt == ATTEMPTS:
                break
            log.warning(
                "%s %s answered %s (attempt %d of %d): trying again",
                method,
                path,
                response.status_code,
                attempt,
                ATTEMPTS,
            )
            time.sleep(RETRY_WAIT * 2 ** (attempt - 1))
        response.raise_for_status()
        return response.json() if response.content else None

    def read_file(self, path: str, max_bytes: int) -> bytes:
        """A file Label Studio serves at `path` (e.g. /data/local-files/?d=… or /data/upload/…), at most
        `max_bytes` long: streamed, so a huge file costs one chunk past the limit, not its size.
        """
        with self.session.get(f"{self.url}{path}", stream=True, timeout=FILE_TIMEOUT) as response:
            response.raise_for_status()
            if int(response.headers.get("Content-Length") or 0) > max_bytes:
                raise TooLargeError(f"{response.headers['Content-Length']} bytes, more than {max_bytes}")
            content = bytearray()
            for chunk in response.iter_content(64 * 1024):
                content += chunk
                if len(content) > max_bytes:
                    raise TooLargeError(f"more than {max_bytes} bytes")
            return bytes(content)

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
