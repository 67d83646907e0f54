"""Helpers of the ML backend tests: synthetic texts and their label config, the provisioning tool."""

from __future__ import annotations

import io
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image, ImageDraw

from labelstack_testlib import REPO, Api, Deployment, wait_for

LABELS = ("Sports", "Finance", "Weather")
# Three vocabularies sharing many words, so a single shared word never decides the label.
VOCABULARY = {
    "Sports": "match goal team coach league score season player stadium win final cup",
    "Finance": "market stock bank price rate profit investor bond score fund growth win",
    "Weather": "rain storm wind forecast cloud sunny cold front season temperature snow final",
}
SHARED = ["today", "report", "local", "big", "news", "week", "update", "early", "late", "strong", "high", "low"]


def choices_config(tag: str, field: str, name: str, labels: tuple[str, ...]) -> str:
    """A single-choice label config: `name` picks one of `labels` for the `<tag>` showing the task's `field`."""
    choices = "\n    ".join(f'<Choice value="{label}"/>' for label in labels)
    return f"""<View>
  <{tag} name="{field}" value="${field}"/>
  <Choices name="{name}" toName="{field}" choice="single">
    {choices}
  </Choices>
</View>"""


CONFIG = choices_config("Text", "text", "topic", LABELS)


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


ENTITY_LABELS = ("Person", "Organization", "Location")
NER_CONFIG = """<View>
  <Labels name="entity" toName="text">
    {labels}
  </Labels>
  <Text name="text" value="$text"/>
</View>""".format(labels="\n    ".join(f'<Label value="{label}"/>' for label in ENTITY_LABELS))
GAZETTEERS = {
    "Person": [
        f"{first} {last}"
        for first in ("Anna", "Ben", "Chloé", "David", "Emeka", "Fatima", "Grace", "Hiro", "Ines", "Jonas", "Kofi")
        for last in ("Smith", "Okafor", "Müller", "Tanaka", "Rossi", "O'Neil", "García", "Novak", "Lindqvist")
    ],
    "Organization": [
        f"{head} {tail}"
        for head in ("Acme", "Globex", "Initech", "Umbrella", "Northwind", "Contoso", "Vandelay", "Hooli", "Stark")
        for tail in ("Corp", "Industries", "Bank", "Labs", "Group", "Foundation", "Airlines", "Press")
    ],
    "Location": [
        "Paris", "Lagos", "São Paulo", "New York", "Kyoto", "Berlin", "Nairobi", "Lima", "Oslo", "Cape Town",
        "Vancouver", "Marseille", "Hanoi", "Krakow", "Buenos Aires", "Lisbon", "Accra", "Seoul", "Dublin", "Quito",
    ],
}  # fmt: skip
# {P} a person, {O} an organisation, {L} a place; lowercase sentence starts and fillers vary the context.
TEMPLATES = (
    "{P} joined {O} last spring.",
    "Yesterday {P} flew from {L} to {L} for a meeting with {O}.",
    "{O} opened a new office in {L}, said {P}.",
    "According to {P}, the weather in {L} was terrible.",
    "The board of {O} met in {L} on Tuesday.",
    "{P} and {P} both work for {O}.",
    "shares of {O} fell after the report from {L}.",
    "In {L}, {P} gave a talk about climate and cities.",
    "A spokesperson for {O} declined to comment.",
    "{P} moved to {L} in 2019 and never looked back.",
    "Nobody expected {O} to win the contract in {L}.",
    "we asked {P} whether {O} would hire more engineers.",
    "The mayor of {L} thanked {O} for the donation.",
    "Traffic was slow near the station this morning.",
    '{P} said: "{L} is lovely in May."',
)
SLOT = re.compile(r"\{([POL])\}")
SLOT_LABELS = {"P": "Person", "O": "Organization", "L": "Location"}


def make_sentences(n: int, seed: int = 11) -> list[tuple[str, list[tuple[int, int, str]]]]:
    """Texts with their entity spans (start, end, label): text[start:end] is the entity, by construction."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    rows = []
    for i in range(n):
        template = TEMPLATES[i % len(TEMPLATES)] if i < len(TEMPLATES) else rng.choice(TEMPLATES)
        text, spans, pos = "", [], 0
        for match in SLOT.finditer(template):
            text += template[pos : match.start()]
            label = SLOT_LABELS[match.group(1)]
            entity = rng.choice(GAZETTEERS[label])
            spans.append((len(text), len(text) + len(entity), label))
            text += entity
            pos = match.end()
        rows.append((text + template[pos:], spans))
    return rows


def span_result(text: str, spans: list[tuple[int, int, str]]) -> list[dict[str, Any]]:
    return [
        {
            "from_name": "entity",
            "to_name": "text",
            "type": "labels",
            "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]},
        }
        for start, end, label in spans
    ]


def span_f1(truth: list[set[tuple[int, int, str]]], predicted: list[set[tuple[int, int, str]]]) -> float:
    """Span-level F1: a predicted span counts only with exactly the true start, end and label."""
    hits = sum(len(t & p) for t, p in zip(truth, predicted, strict=True))
    n_true, n_predicted = sum(map(len, truth)), sum(map(len, predicted))
    return 2 * hits / (n_true + n_predicted) if n_true + n_predicted else 1.0


IMAGE_LABELS = ("Circle", "Square", "Triangle")
IMAGE_CONFIG = choices_config("Image", "image", "shape", IMAGE_LABELS)
# Each class has its own shape and hue; sizes, positions, tints, backgrounds and pixel noise vary.
HUES = {"Circle": (200, 60, 50), "Square": (60, 170, 70), "Triangle": (60, 90, 200)}


def make_image(label: str, rng: random.Random, side: int = 96) -> bytes:
    """A PNG of one class: a shape of the class's colour (tinted) on a noisy grey background."""
    grey = rng.randint(90, 200)
    image = Image.new("RGB", (side, side), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    size = rng.randint(side // 3, side * 2 // 3)
    x, y = rng.randint(0, side - size), rng.randint(0, side - size)
    colour = tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in HUES[label])
    if label == "Circle":
        draw.ellipse((x, y, x + size, y + size), fill=colour)
    elif label == "Square":
        draw.rectangle((x, y, x + size, y + size), fill=colour)
    else:
        draw.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], fill=colour)
    noise = Image.effect_noise((side, side), 40).convert("RGB")
    buffer = io.BytesIO()
    Image.blend(image, noise, 0.25).save(buffer, "PNG")
    return buffer.getvalue()


def make_images(n: int, seed: int = 5) -> list[tuple[str, bytes]]:
    """n (label, PNG) pairs, the classes taking turns."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    return [(IMAGE_LABELS[i % 3], make_image(IMAGE_LABELS[i % 3], rng)) for i in range(n)]


@dataclass
class MlProject:
    id: int
    texts: dict[int, str]  # task id -> true label
    ml_backend: int


def choice_result(label: str, from_name: str = "topic", to_name: str = "text") -> list[dict[str, Any]]:
    return [{"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


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


def check_lowest_score_first(api: Api, ml_settings: dict[str, str], project: int) -> list[dict[str, Any]]:
    """`labelstack-ml uncertain` lists stored predictions lowest score first, and Label Studio's "next task"
    (uncertainty sampling) serves one with that lowest score; the rows it listed.
    """

    def lowest() -> list[dict[str, Any]] | None:
        out = ml_tool(ml_settings, "uncertain", str(project), "--limit", "5")
        return [json.loads(line) for line in out.splitlines()] or None

    rows = wait_for(lowest, 60, "labelstack-ml uncertain printed no task")
    assert rows == sorted(rows, key=lambda r: r["score"])
    nxt = api.call("GET", f"/api/projects/{project}/next")
    score = {p["model_version"]: p["score"] for p in nxt["predictions"]}.get(rows[0]["model_version"])
    # Equal scores may come in either order: compare scores, not ids.
    assert score == pytest.approx(rows[0]["score"]), (nxt["id"], score, rows[:3])
    return rows


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


def retrieve_predictions(api: Api, project: int, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Ask Label Studio to predict `ids` where they lack a prediction of the current version; the latest ones."""
    api.call(
        "POST",
        f"/api/dm/actions?id=retrieve_tasks_predictions&project={project}",
        {"project": project, "selectedItems": {"all": False, "included": ids}},
    )
    latest = {}
    for task in api.all_tasks(project):
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
