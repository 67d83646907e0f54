#!/usr/bin/env python3
"""Wire Label Studio projects to labelstack's ML backend, and list the tasks it is least sure about.

  labelstack-ml.py connect PROJECT_ID            connect an existing project (see below); safe to run again
  labelstack-ml.py ensure TITLE CONFIG_FILE      create the project TITLE with the label config in CONFIG_FILE
                                                 unless a project of that title exists, then connect it
  labelstack-ml.py uncertain PROJECT_ID          unlabeled tasks, lowest stored prediction score of the
                                                 project's current model version first (no re-prediction)

"Connect" means: the backend at ML_BACKEND_URL with basic auth, predictions shown and retrieved when a task
loads, a webhook that sends annotation events to the backend (it trains on them), "Uncertainty sampling".
connect and ensure print one JSON line with "changed": true when they created or changed anything.

URL, API token and the backend's credentials come from the deployment's credentials file
(--credentials, default /etc/labelstack/credentials.env, root only) or LABEL_STUDIO_URL /
LABEL_STUDIO_API_KEY / ML_BACKEND_URL / ML_BACKEND_USER / ML_BACKEND_PASSWORD
in the environment. Standard library only, so it runs with the target host's python3.
HTTPS: LABELSTACK_CA_CERT (from the credentials file or the environment) names the CA to trust (the
deploy's generated one); LABELSTACK_TLS_VERIFY=false skips verification (the deploy uses it on loopback
with a certificate issued for the public name).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The API client and the wiring the deploy uses too: installed beside this tool on the host, in the role's
# module_utils in the repository.
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "ansible/roles/labelstack/module_utils")]
from labelstack_api import ML_PROJECT_SETTINGS, Api, ApiError, Json, connect_ml_backend  # noqa: E402

KEYS = ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "ML_BACKEND_URL", "ML_BACKEND_USER", "ML_BACKEND_PASSWORD")
PAGE = 100
PROJECT_SETTINGS = dict(ML_PROJECT_SETTINGS, sampling="Uncertainty sampling")


def load_settings(credentials: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    path = Path(credentials)
    if path.is_file():
        for line in path.read_text().splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith("#"):
                settings[key] = value.strip("'")
    settings.update({k: os.environ[k] for k in KEYS if os.environ.get(k)})
    missing = [k for k in KEYS if not settings.get(k)]
    if missing:
        sys.exit(f"FAIL: {', '.join(missing)} not set (read {credentials} or the environment)")
    return settings


def tasks(api: Api, project: int) -> Iterator[dict[str, Json]]:
    """Every task of the project with its predictions, page by page (the API serves 100 at most)."""
    for page in itertools.count(1):
        query = urllib.parse.urlencode({"project": project, "page": page, "page_size": PAGE, "fields": "all"})
        status, text = api.request("GET", f"/api/tasks?{query}")
        if status == 404:  # past the last page
            return
        if status >= 400:
            raise ApiError("GET", f"/api/tasks?{query}", status, text)
        batch = json.loads(text)["tasks"]
        yield from batch
        if len(batch) < PAGE:
            return


def connect(api: Api, s: dict[str, str], project: int) -> dict[str, Any]:
    """Idempotent: reuses the backend and the webhook when they exist, changes only what differs."""
    backend, changed = connect_ml_backend(
        api, project, s["ML_BACKEND_URL"], s["ML_BACKEND_USER"], s["ML_BACKEND_PASSWORD"]
    )
    current = api.call("GET", f"/api/projects/{project}")
    changed |= api.ensure("/api/projects", current, PROJECT_SETTINGS)[1]
    return {"changed": changed, "project": project, "ml_backend": backend["id"]}


def ensure_project(api: Api, s: dict[str, str], title: str, config_file: str) -> dict[str, Any]:
    """The project titled `title`, created with the config when missing; an existing one is never modified."""
    try:
        label_config = Path(config_file).read_text()
    except OSError as exc:
        sys.exit(f"FAIL: cannot read the label config {config_file}: {exc.strerror}")
    query = urllib.parse.urlencode({"title": title, "page_size": 100})
    found = api.call("GET", f"/api/projects?{query}")
    found = [p for p in (found["results"] if isinstance(found, dict) else found) if p["title"] == title]
    if len(found) > 1:
        sys.exit(f"FAIL: {len(found)} projects are titled {title!r}; connect one with: connect PROJECT_ID")
    created = not found
    project = api.call("POST", "/api/projects", {"title": title, "label_config": label_config}) if created else found[0]
    result = connect(api, s, project["id"])
    result["changed"] |= created
    return result


def uncertain(api: Api, project: int, limit: int) -> list[dict[str, Any]]:
    """One listing of the project's tasks with their stored predictions; no prediction is requested."""
    version = api.call("GET", f"/api/projects/{project}").get("model_version")
    rows = []
    for task in tasks(api, project):
        if task.get("total_annotations") or task.get("is_labeled"):
            continue
        current = [
            p for p in task.get("predictions") or [] if p.get("model_version") == version and p.get("score") is not None
        ]
        if not current:
            continue
        latest = max(current, key=lambda p: p.get("id", 0))
        choice = next((c for r in latest.get("result") or [] for c in r.get("value", {}).get("choices", [])), None)
        rows.append({"task": task["id"], "score": latest["score"], "label": choice, "model_version": version})
    return sorted(rows, key=lambda r: (r["score"], r["task"]))[:limit]


def main() -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--credentials",
        default=os.environ.get("LABELSTACK_CREDENTIALS", "/etc/labelstack/credentials.env"),
        help="the deployment's credentials.env (default: %(default)s)",
    )
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("connect", parents=[common], help="connect an existing project").add_argument("project", type=int)
    ensure = sub.add_parser("ensure", parents=[common], help="create the project unless it exists, then connect it")
    ensure.add_argument("title")
    ensure.add_argument("config_file")
    unc = sub.add_parser("uncertain", parents=[common], help="most uncertain unlabeled tasks first")
    unc.add_argument("project", type=int)
    unc.add_argument("--limit", type=int, default=20, help="how many tasks to print (default 20)")
    args = parser.parse_args()
    settings = load_settings(args.credentials)
    api = Api(
        settings["LABEL_STUDIO_URL"],
        settings["LABEL_STUDIO_API_KEY"],
        ca_path=os.environ.get("LABELSTACK_CA_CERT", settings.get("LABELSTACK_CA_CERT", "")),
        validate_certs=os.environ.get("LABELSTACK_TLS_VERIFY", "true").lower() != "false",
    )
    try:
        if args.command == "connect":
            print(json.dumps(connect(api, settings, args.project)))
        elif args.command == "ensure":
            print(json.dumps(ensure_project(api, settings, args.title, args.config_file)))
        else:
            for row in uncertain(api, args.project, args.limit):
                print(json.dumps(row))
    except ApiError as exc:
        sys.exit(f"FAIL: {exc}")
    except urllib.error.URLError as exc:
        sys.exit(f"FAIL: {settings['LABEL_STUDIO_URL']}: {exc.reason}")


if __name__ == "__main__":
    main()
