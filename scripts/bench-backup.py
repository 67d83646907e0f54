#!/usr/bin/env python3
"""Measure `make backup` and `make restore` on a deployment holding a project of N text tasks.

Creates a throwaway project with --tasks tasks (and --annotations of them annotated) through the API,
times backup.yml, then restore.yml of that backup (without the safety backup, so only the restore is
timed), checks that the project came back whole, deletes it and prints the figures as JSON (also
written to reports/bench/backup.json). The restore replaces the stack's data with the backup just taken:
point it at a test deployment (default inventory/test-local), not at production.

Usage: scripts/bench-backup.py [--inventory inventory/test-local] [--tasks 20000] [--annotations 200]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
# The benchmark's client and its way of finding a deployment's credentials (this script's folder is on sys.path).
from bench import BenchError, Client, stack_credentials  # noqa: E402

from labelstack_testlib import NotDeployedError, ansible_environment, run_playbook  # noqa: E402 - found above

CONFIG = '<View><Text name="text" value="$text"/><Choices name="c" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'  # noqa: E501


def fail(message: str) -> None:
    sys.exit(f"FAIL: {message}")


def call(api: Client, method: str, path: str, **kwargs: object) -> dict:
    return api.call(method, path, **kwargs).json()


def playbook(name: str, inventory: str, extra: dict[str, object] | None = None) -> tuple[float, str]:
    started = time.monotonic()
    run = run_playbook(name, inventory, *(["-e", json.dumps(extra)] if extra else []))
    seconds = time.monotonic() - started
    if run.returncode != 0:
        fail(f"{name} failed:\n{run.output[-3000:]}")
    return seconds, run.output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory", default="inventory/test-local", help="deployment to measure (not production)")
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks in the project (default 20000)")
    parser.add_argument("--annotations", type=int, default=200, help="annotated tasks (default 200)")
    args = parser.parse_args()

    # testinfra's ansible backend (finding the inventory's host) runs ansible-inventory: the venv's, this config.
    os.environ.update(ansible_environment())
    try:
        api = Client.of_stack(stack_credentials(None, args.inventory))
        title = f"bench-backup-{uuid.uuid4().hex[:8]}"
        project = call(api, "POST", "/api/projects", json={"title": title, "label_config": CONFIG})
        try:
            result = measure(api, project["id"], args)
        finally:
            api.call("DELETE", f"/api/projects/{project['id']}", ok=(204, 404))
    except (BenchError, NotDeployedError) as exc:
        fail(str(exc))
    out = REPO / "reports" / "bench" / "backup.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def measure(api: Client, pid: int, args: argparse.Namespace) -> dict[str, object]:
    started = time.monotonic()
    created = call(
        api,
        "POST",
        f"/api/projects/{pid}/import?return_task_ids=true",
        json=[{"text": f"task {i} of the backup benchmark"} for i in range(args.tasks)],
    )
    import_seconds = time.monotonic() - started
    result = [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]
    for task_id in created["task_ids"][: args.annotations]:
        api.call("POST", f"/api/tasks/{task_id}/annotations?project={pid}", json={"result": result})

    backup_seconds, output = playbook("backup.yml", args.inventory)
    match = re.search(r"Backup (\d{8}T\d{6}Z) \(([^)]+)\)", output)
    if not match:
        fail(f"backup.yml printed no backup name:\n{output[-2000:]}")
    name, size = match.groups()
    restore_seconds, _ = playbook(
        "restore.yml", args.inventory, {"labelstack_restore_backup": name, "labelstack_restore_safety_backup": False}
    )
    restored = call(api, "GET", f"/api/projects/{pid}")
    if restored["task_number"] != args.tasks or restored["num_tasks_with_annotations"] != args.annotations:
        fail(f"restored project: {restored['task_number']} tasks, {restored['num_tasks_with_annotations']} annotated")
    return {
        "inventory": args.inventory,
        "tasks": args.tasks,
        "annotations": args.annotations,
        "import_seconds": round(import_seconds, 1),
        "backup": name,
        "backup_size": size,
        "backup_seconds": round(backup_seconds, 1),
        "restore_seconds": round(restore_seconds, 1),
    }


if __name__ == "__main__":
    main()
