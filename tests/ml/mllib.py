"""Helpers of the ML backend tests: synthetic texts and their label config, the provisioning tool."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from labelstack_testlib import REPO, Deployment, wait_for

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
