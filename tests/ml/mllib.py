"""Helpers of the ML backend tests: synthetic texts and their label config, the provisioning tool."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from labelstack_testlib import REPO, Api, Deployment, wait_for

LABELS = ("Sports", "Finance", "Weather")
# Three vocabularies sharing many words, so a single shared word never decides the label.
VOCABULARY = {
    "Sports": "match goal team coach league score season player stadium win final cup",
    "Finance": "market stock bank price rate profit investor bond score fund growth win",
    "Weather": "rain storm wind forecast cloud sunny cold front season temperature snow final",
}
SHARED = ["today", "report", "local", "big", "news", "week", "update", "early", "late", "strong", "high", "low"]
CONFIG = """<View>
  <Text name="text" value="$text"/>
  <Choices name="topic" toName="text" choice="single">
    {choices}
  </Choices>
</View>""".format(choices="\n    ".join(f'<Choice value="{label}"/>' for label in LABELS))


def make_texts(n: int = 300, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    rows = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        own = VOCABULARY[label].split()
        other = VOCABULARY[LABELS[(i + 1) % len(LABELS)]].split()
        words = rng.sample(own, 3) + rng.sample(other, 1) + rng.sample(SHARED, 3)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@dataclass
class MlProject:
    id: int
    texts: dict[int, str]  # task id -> true label
    ml_backend: int


def choice_result(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "topic", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def ml_tool(ml_settings: dict[str, str], *args: str) -> str:
    """Run scripts/labelstack-ml.py with the deployment's settings in its environment (not on its command line).

    The CA is the local copy the session trusts (REQUESTS_CA_BUNDLE), not the path on the host.
    """
    env = dict(os.environ, **{k: v for k, v in ml_settings.items() if k.startswith(("LABEL_STUDIO_", "ML_BACKEND_"))})
    env["LABELSTACK_CA_CERT"] = os.environ.get("REQUESTS_CA_BUNDLE", "")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/labelstack-ml.py"), *args, "--credentials", "/nonexistent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def wait_until_learned(deployment: Deployment, timeout: float = 180) -> None:
    """Wait until the ML backend has no training queued or running (its /health lists none).

    Trainings publish predictions; a snapshot taken while one runs misses the predictions it is about to store.
    """
    probe = (
        f"docker exec {deployment.container('ml-backend')} python3 -c 'import json, urllib.request; "
        'print(json.load(urllib.request.urlopen("http://127.0.0.1:9090/health", timeout=4))["training"])\''
    )
    wait_for(
        lambda: deployment.host.check_output(probe) == "[]" or None, timeout, "the ML backend never stopped training", 1
    )


def retrieve_predictions(api: Api, project: MlProject, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Ask Label Studio to predict `ids` where they lack a prediction of the current version; the latest ones."""
    api.call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project.id}",
        {"project": project.id, "selectedItems": {"all": False, "included": ids}},
    )
    latest = {}
    for task in api.all_tasks(project.id):
        preds = task.get("predictions") or []
        if task["id"] in ids and preds:
            latest[task["id"]] = max(preds, key=lambda p: p.get("id", 0))
    return latest


def label_of(prediction: dict[str, Any]) -> str | None:
    return next((c for r in prediction.get("result") or [] for c in r["value"].get("choices", [])), None)


def annotate(api: Api, project: int, task_id: int, label: str) -> None:
    api.call("POST", f"/api/tasks/{task_id}/annotations?project={project}", {"result": choice_result(label)})


# Runs inside the backend's container, which is on no host port: its own credentials are in its environment.
# The body "OVERSIZE" sends only headers announcing one byte more than the backend accepts: it must answer
# 413 without reading a body (a client that sends the whole body first sees the connection reset instead).
BACKEND_POST = """
import base64, http.client, os, sys
path, body, auth = sys.argv[1], sys.argv[2].encode(), sys.argv[3] == "auth"
headers = {"Content-Type": "application/json"}
if auth:
    pair = os.environ["BASIC_AUTH_USER"] + ":" + os.environ["BASIC_AUTH_PASS"]
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
conn = http.client.HTTPConnection("127.0.0.1", 9090, timeout=60)
if body == b"OVERSIZE":
    headers["Content-Length"] = str(int(os.environ.get("ML_MAX_REQUEST_BYTES") or 33554432) + 1)
    conn.putrequest("POST", path)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
else:
    conn.request("POST", path, body=body, headers=headers)
response = conn.getresponse()
print(response.status, response.read().decode())
"""


def backend_post(deployment: Deployment, path: str, body: str, auth: bool = True) -> tuple[int, str]:
    """POST `body` to the default ML backend's `path` from inside its container: (status, response text)."""
    flag = "auth" if auth else "none"
    out = deployment.host.check_output(
        "docker exec %s python3 -c %s %s %s %s", deployment.container("ml-backend"), BACKEND_POST, path, body, flag
    )
    status, _, text = out.partition(" ")
    return int(status), text


def connect_as_the_ui_does(api: Api, ml_settings: dict[str, str], project: int, url: str, title: str) -> dict[str, Any]:
    """The fields of the Connect Model form (Settings > Model), nothing else: POST /api/ml as the UI sends it."""
    form = {
        "project": project,
        "title": title,
        "url": url,
        "auth_method": "BASIC_AUTH",
        "basic_auth_user": ml_settings["ML_BACKEND_USER"],
        "basic_auth_pass": ml_settings["ML_BACKEND_PASSWORD"],
        "is_interactive": False,
    }
    return api.call("POST", "/api/ml", form)
