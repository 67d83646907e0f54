"""What a deployment holds, as comparable values: before and after a backup/restore or an upgrade."""

from __future__ import annotations

import json
from dataclasses import dataclass

from labelstack_testlib import Api, Deployment


@dataclass(frozen=True)
class Snapshot:
    """What must survive a backup and restore, as comparable values."""

    projects: dict[int, str]
    tasks: dict[int, list[int]]  # project -> task ids
    annotations: dict[int, list[tuple[int, str]]]  # task -> (annotation id, result)
    predictions: dict[int, list[tuple[int, str, float | None]]]  # task -> (prediction id, model_version, score)
    files: dict[str, str]  # path under the data directories -> sha256


def data_files(deployment: Deployment) -> dict[str, str]:
    out = deployment.host.check_output(
        "cd / && find %s %s -type f -print0 | sort -z | xargs -0 -r sha256sum",
        deployment.app_data_dir,
        deployment.ml_data_dir,
    )
    return {path: digest for digest, path in (line.split(maxsplit=1) for line in out.splitlines())}


def snapshot(api: Api, deployment: Deployment) -> Snapshot:
    projects = {p["id"]: p["title"] for p in api.all_projects()}
    tasks: dict[int, list[int]] = {}
    annotations: dict[int, list[tuple[int, str]]] = {}
    predictions: dict[int, list[tuple[int, str, float | None]]] = {}
    for project in projects:
        listed = api.all_tasks(project)
        tasks[project] = sorted(t["id"] for t in listed)
        for task in listed:
            annotations[task["id"]] = sorted(
                (a["id"], json.dumps(a["result"], sort_keys=True)) for a in task.get("annotations") or []
            )
            predictions[task["id"]] = sorted(
                (p["id"], p["model_version"], p["score"]) for p in task.get("predictions") or []
            )
    return Snapshot(projects, tasks, annotations, predictions, data_files(deployment))
