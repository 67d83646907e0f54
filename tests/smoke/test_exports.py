"""Export formats of the five canonical projects: JSON_MIN, CSV for all, COCO/YOLO for boxes, CONLL2003 for NER."""

from __future__ import annotations

import csv
import io
import json
from pathlib import PurePosixPath

import pytest
from label_studio_sdk import LabelStudio

from labelstack_testlib import Api

from .smokelib import (
    CASES,
    NAMED_ENTITIES,
    OBJECT_DETECTION,
    OD_LABELS,
    AnnotatedProject,
    LabelConfigCase,
    ProjectFactory,
    create_annotated_project,
    open_zip,
)

# CONLL2003 tokens and BIO tags of NAMED_ENTITIES' two texts.
EXPECTED_CONLL = [
    [
        ("Alice", "B-Person"),
        ("works", "O"),
        ("at", "O"),
        ("Acme", "B-Organization"),
        ("Corp", "I-Organization"),
        ("in", "O"),
        ("Paris", "B-Location"),
        (".", "O"),
    ],
    [("Bob", "B-Person"), ("flew", "O"), ("to", "O"), ("New", "B-Location"), ("York", "I-Location"), (".", "O")],
]


@pytest.fixture(scope="module")
def annotated(ls: LabelStudio, module_projects: ProjectFactory) -> dict[str, AnnotatedProject]:
    """One annotated project per case, shared by this module's tests."""
    return {case.name: create_annotated_project(ls, module_projects, case) for case in CASES}


def media_name(url: str) -> str:
    """File name of a task's media URL without extension, as COCO/YOLO name their files (after a hash prefix)."""
    return PurePosixPath(url).stem


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_export_formats_offered_for_the_config(
    case: LabelConfigCase, annotated: dict[str, AnnotatedProject], api: Api, ls: LabelStudio
) -> None:
    project_id = annotated[case.name].project_id
    response = api.get(f"/api/projects/{project_id}/export/formats")
    assert response.status_code == 200, response.text
    offered = {fmt["name"] for fmt in response.json() if not fmt.get("disabled")}
    assert case.export_formats <= offered, f"formats not offered: {sorted(case.export_formats - offered)}"
    if case is not NAMED_ENTITIES:
        assert "CONLL2003" not in offered, "CONLL2003 offered for a config without Text + Labels"
    sdk_formats = ls.projects.exports.list_formats(project_id)  # typed list[str], returns the dicts above
    assert {fmt["name"] for fmt in sdk_formats if not fmt.get("disabled")} == offered  # type: ignore[index]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_json_min_export(case: LabelConfigCase, annotated: dict[str, AnnotatedProject], api: Api) -> None:
    project = annotated[case.name]
    items = api.export(project.project_id, "JSON_MIN").json()
    assert len(items) == len(case.tasks), f"JSON_MIN has {len(items)} items: {items}"
    by_id = {item["id"]: item for item in items}
    for task_id, data, value in zip(project.task_ids, case.tasks, case.min_values, strict=True):
        item = by_id.get(task_id)
        assert item is not None, f"task {task_id} missing from JSON_MIN: {items}"
        assert item[case.data_key] == data[case.data_key]
        assert item.get(case.from_name) == value, f"JSON_MIN value of {case.from_name} for task {task_id}"
        assert item["annotation_id"], "JSON_MIN item without annotation_id"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_csv_export(case: LabelConfigCase, annotated: dict[str, AnnotatedProject], api: Api) -> None:
    project = annotated[case.name]
    response = api.export(project.project_id, "CSV")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))
    assert len(rows) == len(case.tasks), f"CSV has {len(rows)} rows:\n{response.text}"
    assert {"id", "annotation_id", case.data_key, case.from_name} <= set(rows[0]), f"CSV header: {list(rows[0])}"
    by_id = {int(row["id"]): row for row in rows}
    for task_id, data, value in zip(project.task_ids, case.tasks, case.min_values, strict=True):
        row = by_id[task_id]
        assert row[case.data_key] == data[case.data_key]
        cell = row[case.from_name]
        # Single values are written as they are, lists of regions as JSON.
        assert (cell if isinstance(value, str) else json.loads(cell)) == value, f"CSV cell of task {task_id}: {cell}"


def expected_boxes(project: AnnotatedProject) -> list[tuple[str, str, tuple[float, ...], tuple[int, int]]]:
    """(image name, label, (x, y, w, h) in percent, (width, height) in pixels) of every annotated box."""
    boxes = []
    for data, result in zip(project.case.tasks, project.case.results, strict=True):
        for box in result:
            value = box["value"]
            xywh = (value["x"], value["y"], value["width"], value["height"])
            size = (box["original_width"], box["original_height"])
            boxes.append((media_name(data["image"]), value["rectanglelabels"][0], xywh, size))
    return boxes


def test_coco_export(annotated: dict[str, AnnotatedProject], api: Api) -> None:
    project = annotated[OBJECT_DETECTION.name]
    archive = open_zip(api.export(project.project_id, "COCO").content, "COCO export")
    assert "result.json" in archive.namelist(), f"COCO archive contents: {archive.namelist()}"
    coco = json.loads(archive.read("result.json"))

    category_names = {category["id"]: category["name"] for category in coco["categories"]}
    assert sorted(category_names.values()) == sorted(OD_LABELS), f"COCO categories: {coco['categories']}"
    images = {image["id"]: image for image in coco["images"]}
    assert len(images) == len(project.case.tasks), f"COCO images: {coco['images']}"

    exported: list[tuple[str, str, list[float]]] = []
    for annotation in coco["annotations"]:
        image = images[annotation["image_id"]]
        name = media_name(image["file_name"]).split("__")[-1]
        exported.append((name, category_names[annotation["category_id"]], annotation["bbox"]))
        assert annotation["area"] == pytest.approx(annotation["bbox"][2] * annotation["bbox"][3])

    expected = expected_boxes(project)
    assert len(exported) == len(expected), f"COCO annotations: {coco['annotations']}"
    for name, label, (x, y, w, h), (width, height) in expected:
        image = next((i for i in images.values() if media_name(i["file_name"]).endswith(f"__{name}")), None)
        assert image is not None, f"no COCO image for {name}: {coco['images']}"
        assert (image["width"], image["height"]) == (width, height), f"COCO size of {name} (from original_*)"
        bbox = [x * width / 100, y * height / 100, w * width / 100, h * height / 100]
        matches = [b for n, lab, b in exported if (n, lab) == (name, label)]
        assert matches == [pytest.approx(bbox)], f"COCO box {label} on {name}: expected pixels {bbox}, got {matches}"


def parse_yolo_line(line: str) -> tuple[int, float, float, float, float]:
    class_index, *numbers = line.split()
    assert len(numbers) == 4, f"YOLO line is not 'class x_center y_center w h': {line!r}"
    cx, cy, w, h = (float(n) for n in numbers)
    return int(class_index), cx, cy, w, h


def test_yolo_export(annotated: dict[str, AnnotatedProject], api: Api) -> None:
    project = annotated[OBJECT_DETECTION.name]
    archive = open_zip(api.export(project.project_id, "YOLO").content, "YOLO export")
    names = archive.namelist()
    assert "classes.txt" in names, f"YOLO archive contents: {names}"
    classes = archive.read("classes.txt").decode().splitlines()
    assert sorted(classes) == sorted(OD_LABELS), f"classes.txt: {classes}"
    notes = json.loads(archive.read("notes.json"))
    assert [c["name"] for c in sorted(notes["categories"], key=lambda c: c["id"])] == classes

    label_files = {media_name(n).split("__")[-1]: n for n in names if n.startswith("labels/") and n.endswith(".txt")}
    expected: dict[str, list[tuple[int, float, float, float, float]]] = {}
    for name, label, (x, y, w, h), _size in expected_boxes(project):
        # LS: x, y = top-left corner in percent; YOLO: centre and size normalised to 0..1.
        yolo = (classes.index(label), (x + w / 2) / 100, (y + h / 2) / 100, w / 100, h / 100)
        expected.setdefault(name, []).append(yolo)
    assert sorted(label_files) == sorted(expected), f"YOLO label files: {names}"
    for name, boxes in expected.items():
        lines = archive.read(label_files[name]).decode().split("\n")
        parsed = sorted(parse_yolo_line(line) for line in lines if line.strip())
        assert len(parsed) == len(boxes), f"{label_files[name]}: {lines}"
        for got, want in zip(parsed, sorted(boxes), strict=True):
            assert got[0] == want[0], f"{label_files[name]}: class {got[0]}, expected {want[0]} ({classes[want[0]]})"
            assert got[1:] == pytest.approx(want[1:], abs=1e-6), f"{label_files[name]}: {got} != {want}"


def read_conll(text: str) -> list[list[tuple[str, str]]]:
    """Sentences of a CONLL2003 file as (token, tag) pairs, -DOCSTART- skipped."""
    sentences: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        if not line.strip():
            if sentences[-1]:
                sentences.append([])
            continue
        if line.startswith("-DOCSTART-"):
            continue
        columns = line.split()
        assert len(columns) == 4, f"not a CONLL2003 token line: {line!r}"
        assert columns[1:3] == ["-X-", "_"], f"not a CONLL2003 token line: {line!r}"
        sentences[-1].append((columns[0], columns[3]))
    return [sentence for sentence in sentences if sentence]


def test_conll2003_export(annotated: dict[str, AnnotatedProject], api: Api) -> None:
    project = annotated[NAMED_ENTITIES.name]
    response = api.export(project.project_id, "CONLL2003")
    sentences = read_conll(response.content.decode("utf-8"))
    assert sorted(sentences) == sorted(EXPECTED_CONLL), f"CONLL2003 export:\n{response.text}"
