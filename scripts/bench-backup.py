#!/usr/bin/env python3
"""Measure `make backup` and `make restore` on a deployment holding a project of N text tasks.

Creates a throwaway project with --tasks tasks (and --annotations of them annotated) through the API,
times backup.yml, then restore.yml of that backup (without the safety backup, so only the restore is
timed), checks that the project came back whole, deletes it and prints the figures as JSON (also
written to reports/bench/backup.json). The restore replaces the stack's data with the backup just taken:
point it at a test deployment (default inventory/test-local), not at production.

--pitr (an inventory with labelstack_pitr_enabled, e.g. inventory/test-pitr) then measures point-in-time
recovery of the same project: one more annotation is made, T noted (with the WAL archive's lag at T: what a
lost disk would take), the project deleted by mistake, and restore.yml to T timed; the project must come back
with every task and every annotation made before T. The base backup's size and the whole pgBackRest
repository's are reported too.

Usage: scripts/bench-backup.py [--inventory inventory/test-local] [--tasks 20000] [--annotations 200] [--pitr]
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

from labelstack_testlib import (  # noqa: E402 - found above
    NotDeployedError,
    ansible_environment,
    inventory_host,
    restore_time_text,
    run_playbook,
    wal_archive_lag_seconds,
)

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
    parser.add_argument("--pitr", action="store_true", help="also time a point-in-time restore (PITR inventory)")
    args = parser.parse_args()

    # testinfra's ansible backend (finding the inventory's host) runs ansible-inventory: the venv's, this config.
    os.environ.update(ansible_environment())
    try:
        creds = stack_credentials(None, args.inventory)
        api = Client.of_stack(creds)
        title = f"bench-backup-{uuid.uuid4().hex[:8]}"
        project = call(api, "POST", "/api/projects", json={"title": title, "label_config": CONFIG})
        try:
            result = measure(api, project["id"], args)
            if args.pitr:
                result |= measure_pitr(api, project["id"], args, f"{creds['LABELSTACK_PROJECT_NAME']}-db-1", result)
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
    # Ansible's output may wrap a long line: matched with its whitespace folded.
    base = re.search(
        r"Base backup (\S+) in (/\S+): (.+?) in the repository \((.+?) of database\)", " ".join(output.split())
    )
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
    } | ({"base_backup": base[1], "pitr_repo_dir": base[2], "base_backup_size": base[3]} if base else {})


def measure_pitr(
    api: Client, pid: int, args: argparse.Namespace, db_container: str, backups: dict[str, object]
) -> dict[str, object]:
    if "pitr_repo_dir" not in backups:
        fail(f"backup.yml took no base backup: is labelstack_pitr_enabled set in {args.inventory}?")
    host = inventory_host(args.inventory)
    tasks = [task["id"] for task in call(api, "GET", f"/api/tasks?project={pid}&page_size=1")["tasks"]]
    result = [{"from_name": "c", "to_name": "text", "type": "choices", "value": {"choices": ["b"]}}]
    last = call(api, "POST", f"/api/tasks/{tasks[0]}/annotations?project={pid}", json={"result": result})
    time.sleep(1)
    moment = float(int(time.time()))
    lag = wal_archive_lag_seconds(host, db_container)
    time.sleep(2)
    api.call("DELETE", f"/api/projects/{pid}", ok=(204,))
    seconds, _ = playbook(
        "restore.yml",
        args.inventory,
        {"labelstack_restore_time": restore_time_text(moment), "labelstack_restore_safety_backup": False},
    )
    restored = call(api, "GET", f"/api/projects/{pid}")
    if restored["task_number"] != args.tasks or restored["total_annotations_number"] != args.annotations + 1:
        fail(f"restored to T: {restored['task_number']} tasks, {restored['total_annotations_number']} annotations")
    call(api, "GET", f"/api/annotations/{last['id']}")
    repo_bytes = int(host.check_output("du --summarize --bytes %s", backups["pitr_repo_dir"]).split()[0])
    return {
        "pitr_archive_lag_at_t_seconds": round(lag, 1),
        "pitr_restore_seconds": round(seconds, 1),
        "pitr_repository_bytes": repo_bytes,
    }


if __name__ == "__main__":
    main()
