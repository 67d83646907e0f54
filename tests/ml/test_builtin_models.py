"""The default backend picks its model from the label config: named entities (<Labels> on <Text>) and image
classification (<Choices> on <Image>, images read from the local-files storage) learn from annotations.

Each class of this module is one project, annotated like an annotator would, then measured on held-out tasks.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import pytest
from PIL import Image

from labelstack_testlib import Api, Deployment, remove_folders, wait_for, write_files

from .mllib import (
    IMAGE_CONFIG,
    NER_CONFIG,
    backend_post,
    check_lowest_score_first,
    choice_result,
    label_of,
    make_images,
    make_sentences,
    ml_tool,
    retrieve_predictions,
    span_f1,
    span_result,
    wait_until_learned,
)

TRAIN_TIMEOUT = 240
Span = tuple[int, int, str]


@dataclass
class Project:
    id: int
    truth: dict[int, Any]  # task id -> the true spans, or the true label (the file name for the unreadable ones)
    data: dict[int, dict[str, str]]  # task id -> its data


def create_project(api: Api, name: str, config: str) -> int:
    project = api.call("POST", "/api/projects", {"title": f"ml-{name}-{uuid.uuid4().hex[:10]}", "label_config": config})
    return project["id"]


def connect(ml_settings: dict[str, str], project: int) -> None:
    ml_tool(ml_settings, "connect", str(project))


def annotate(api: Api, project: int, task_id: int, result: list[dict[str, object]]) -> None:
    api.call("POST", f"/api/tasks/{task_id}/annotations?project={project}", {"result": result})


def trained_predictions(api: Api, project: Project, ids: list[int]) -> dict[int, dict[str, Any]] | None:
    """The predictions of `ids` by the project's current model once the backend published a trained one."""
    version = api.call("GET", f"/api/projects/{project.id}").get("model_version")
    if not str(version).startswith("v"):
        return None
    preds = retrieve_predictions(api, project.id, ids)
    return preds if {p.get("model_version") for p in preds.values()} == {version} and len(preds) == len(ids) else None


def record_predict_latency(
    deployment: Deployment, project: Project, ids: list[int], record_property: pytest.RecordProperty
) -> None:
    """Time /predict for 1 and for all `ids` (from inside the backend's container, minus an empty call's time:
    docker exec's own cost), for the README's figures.
    """

    def timed(tasks: list[int]) -> float:
        body = json.dumps({"project": f"{project.id}.0", "tasks": [{"id": t, "data": project.data[t]} for t in tasks]})
        started = time.monotonic()
        status, text = backend_post(deployment, "/predict", body)
        assert status == 200, text
        return time.monotonic() - started

    empty = min(timed([]) for _ in range(3))
    one = min(timed(ids[:1]) for _ in range(3)) - empty
    many = timed(ids) - empty
    record_property("predict_1_ms", round(one * 1000, 1))
    record_property(f"predict_{len(ids)}_ms", round(many * 1000, 1))
    print(f"project {project.id}: /predict 1 task {one * 1000:.0f} ms, {len(ids)} tasks {many * 1000:.0f} ms")


def backend_log_since(deployment: Deployment, since: float) -> str:
    return deployment.host.check_output(
        f"docker logs --since {int(since)} {deployment.container('ml-backend')} 2>&1 | grep 'cannot use image' || true"
    )


# ---------------------------------------------------------------- named entities


@pytest.fixture(scope="module")
def ner_project(api: Api, ml_settings: dict[str, str]) -> Iterator[Project]:
    project = create_project(api, "ner", NER_CONFIG)
    try:
        rows = make_sentences(160)
        api.call("POST", f"/api/projects/{project}/import", [{"text": t, "n": i} for i, (t, _) in enumerate(rows)])
        tasks = api.all_tasks(project)
        truth = {t["id"]: rows[t["data"]["n"]][1] for t in tasks}
        connect(ml_settings, project)
        yield Project(project, truth, {t["id"]: t["data"] for t in tasks})
    finally:
        api.call("DELETE", f"/api/projects/{project}", ok=(204, 404))


def test_entities_are_learned_from_60_texts(
    api: Api, ner_project: Project, deployment: Deployment, record_property: pytest.RecordProperty
) -> None:
    ids = sorted(ner_project.truth)
    train, held_out = ids[:60], ids[60:]
    for task_id in train:
        text = ner_project.data[task_id]["text"]
        annotate(api, ner_project.id, task_id, span_result(text, ner_project.truth[task_id]))
    wait_until_learned(deployment, TRAIN_TIMEOUT)
    preds = wait_for(
        lambda: trained_predictions(api, ner_project, held_out), TRAIN_TIMEOUT, "no trained NER predictions", 3
    )
    predicted: list[set[Span]] = []
    for task_id in held_out:
        text = ner_project.data[task_id]["text"]
        spans = set()
        for result in preds[task_id]["result"]:
            value = result["value"]
            assert text[value["start"] : value["end"]] == value["text"], (task_id, text, value)
            assert 0.0 <= result["score"] <= 1.0, result
            spans.add((value["start"], value["end"], value["labels"][0]))
        predicted.append(spans)
    f1 = span_f1([set(ner_project.truth[t]) for t in held_out], predicted)
    record_property("ner_span_f1", f1)
    assert f1 >= 0.8, f"span F1 {f1:.3f} on {len(held_out)} held-out texts after 60 annotations"
    record_predict_latency(deployment, ner_project, held_out, record_property)


def test_entity_tasks_are_served_least_sure_first(api: Api, ner_project: Project, ml_settings: dict[str, str]) -> None:
    check_lowest_score_first(api, ml_settings, ner_project.id)


# ---------------------------------------------------------------- images

N_IMAGES, N_TRAIN_IMAGES = 100, 40
BAD = ("broken.png", "huge.png", "missing.png")  # not an image, 50 megapixels, no such file


def huge_png() -> bytes:
    """50 megapixels in a few kilobytes (1 bit per pixel, one colour): too many pixels, not too many bytes."""
    buffer = io.BytesIO()
    Image.new("1", (10000, 5000)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_project(api: Api, ml_settings: dict[str, str], deployment: Deployment) -> Iterator[Project]:
    folder = f"ml-images-{uuid.uuid4().hex[:8]}"
    images = make_images(N_IMAGES)
    files = {f"{i:03d}.png": png for i, (_, png) in enumerate(images)}
    write_files(deployment, {folder: {**files, "broken.png": b"\x89PNG\r\n\x1a\nnot an image", "huge.png": huge_png()}})
    project = create_project(api, "images", IMAGE_CONFIG)
    try:
        storage = api.call(
            "POST",
            "/api/storages/localfiles",
            {"project": project, "path": f"{deployment.local_files_root}/{folder}", "use_blob_urls": True},
        )
        api.call("POST", f"/api/storages/localfiles/{storage['id']}/sync")
        missing = f"/data/local-files/?d={quote(folder)}/missing.png"
        api.call("POST", f"/api/projects/{project}/import", [{"image": missing}])

        def synced() -> list[dict[str, Any]] | None:
            tasks = api.all_tasks(project)
            return tasks if len(tasks) == N_IMAGES + len(BAD) else None

        tasks = wait_for(synced, 60, f"the sync of {folder} did not create {N_IMAGES + 2} tasks")
        truth = {}
        for task in tasks:
            name = unquote(task["data"]["image"]).rsplit("/", 1)[-1]
            truth[task["id"]] = name if name in BAD else images[int(name.split(".")[0])][0]
        connect(ml_settings, project)
        yield Project(project, truth, {t["id"]: t["data"] for t in tasks})
    finally:
        api.call("DELETE", f"/api/projects/{project}", ok=(204, 404))
        remove_folders(deployment, [folder])


def test_images_are_learned_from_40_annotations(
    api: Api, image_project: Project, deployment: Deployment, record_property: pytest.RecordProperty
) -> None:
    good = sorted(t for t, label in image_project.truth.items() if label not in BAD)
    bad = sorted(t for t, label in image_project.truth.items() if label in BAD)
    train, held_out = good[:N_TRAIN_IMAGES], good[N_TRAIN_IMAGES:]
    since = time.time() - 5
    # The unreadable images are annotated too: training leaves them out instead of failing.
    for task_id in train + bad:
        label = "Circle" if task_id in bad else image_project.truth[task_id]
        annotate(api, image_project.id, task_id, choice_result(label, "shape", "image"))
    wait_until_learned(deployment, TRAIN_TIMEOUT)
    preds = wait_for(
        lambda: trained_predictions(api, image_project, held_out), TRAIN_TIMEOUT, "no trained image predictions", 3
    )
    accuracy = sum(label_of(preds[t]) == image_project.truth[t] for t in held_out) / len(held_out)
    record_property("image_accuracy", accuracy)
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f} on {len(held_out)} held-out images after 40 annotations"
    record_predict_latency(deployment, image_project, held_out, record_property)
    logged = backend_log_since(deployment, since)
    for name in BAD:
        assert name in logged, f"no log line about {name}: {logged[-2000:]}"


def test_unreadable_images_get_an_empty_prediction(
    api: Api, image_project: Project, deployment: Deployment, ml_settings: dict[str, str]
) -> None:
    """A broken file, a 50-megapixel image and a missing file: 200 with an empty result each, and a log line."""
    bad = sorted(t for t, label in image_project.truth.items() if label in BAD)
    tasks = [{"id": t, "data": image_project.data[t]} for t in bad]
    since = time.time() - 1
    started = time.monotonic()
    body = json.dumps({"project": f"{image_project.id}.0", "tasks": tasks})
    status, text = backend_post(deployment, "/predict", body)
    assert status == 200, text
    assert time.monotonic() - started < 30, "refusing the unreadable images took too long"
    assert [r["result"] for r in json.loads(text)["results"]] == [[], [], []], text
    logged = backend_log_since(deployment, since)
    for task_id in bad:
        name = image_project.truth[task_id]
        reason = {"broken.png": "not a readable image", "huge.png": "more than 25000000", "missing.png": "404"}[name]
        lines = [line for line in logged.splitlines() if name in line]
        assert lines, f"{name}: no log line: {logged[-2000:]}"
        assert reason in lines[-1], f"{name}: expected {reason!r} in {lines[-1]}"


def test_an_uploaded_image_is_read_through_label_studio(
    api: Api, image_project: Project, deployment: Deployment
) -> None:
    """An image uploaded in the import dialog lives under /data/upload/: the trained model reads it from there."""
    label, content = make_images(1, seed=99)[0]
    response = api.request(
        "POST", f"/api/projects/{image_project.id}/import", files={"file": ("uploaded.png", content, "image/png")}
    )
    assert response.status_code == 201, response.text
    task = next(t for t in api.all_tasks(image_project.id) if "uploaded" in str(t["data"].get("image")))
    assert str(task["data"]["image"]).startswith("/data/upload/"), task["data"]
    status, text = backend_post(
        deployment, "/predict", json.dumps({"project": f"{image_project.id}.0", "tasks": [task]})
    )
    assert status == 200, text
    [prediction] = json.loads(text)["results"]
    assert label_of(prediction) == label, f"uploaded {label}, predicted {prediction}"


def test_image_tasks_are_served_least_sure_first(api: Api, image_project: Project, ml_settings: dict[str, str]) -> None:
    check_lowest_score_first(api, ml_settings, image_project.id)
