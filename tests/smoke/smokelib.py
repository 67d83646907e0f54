"""Helpers of the SDK smoke suite: throwaway projects, the five canonical label configs, comparing exports."""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from dataclasses import dataclass, field

from label_studio_sdk import LabelStudio

from labelstack_testlib import Api, JsonValue

# Nothing listens on port 1: media URLs of the tasks must never be needed by the server (imports, exports).
UNREACHABLE_MEDIA = "http://127.0.0.1:1/smoke"
TITLE_MAX_LENGTH = 50  # Project.title is a CharField(max_length=50)
COMMON_EXPORT_FORMATS = frozenset({"JSON", "JSON_MIN", "CSV", "TSV"})


def open_zip(content: bytes, what: str) -> zipfile.ZipFile:
    """The export archive, asserted to be a zip file."""
    assert zipfile.is_zipfile(io.BytesIO(content)), f"{what} is not a zip archive: {content[:200]!r}"
    return zipfile.ZipFile(io.BytesIO(content))


@dataclass
class ProjectFactory:
    """Creates uniquely titled throwaway projects and deletes all of them in `cleanup()`."""

    ls: LabelStudio
    api: Api
    prefix: str
    ids: list[int] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def title(self, name: str) -> str:
        """A unique project title under this run's prefix."""
        return f"{self.prefix}{next(self._counter)}-{name}"[:TITLE_MAX_LENGTH]

    def create(self, name: str, label_config: str) -> int:
        """Create a project with the new SDK and return its id."""
        project = self.ls.projects.create(title=self.title(name), label_config=label_config)
        assert project.id, f"project {name} was created without an id: {project!r}"
        return self.adopt(project.id)

    def adopt(self, project_id: int) -> int:
        """Delete this project (made by another client) in `cleanup()` too."""
        self.ids.append(project_id)
        return project_id

    def cleanup(self) -> None:
        """Delete every project made or adopted here (already deleted ones are fine)."""
        ids, self.ids = self.ids, []
        delete_projects(self.api, list(reversed(ids)))


def delete_projects(api: Api, project_ids: list[int]) -> None:
    """Delete the projects (with their tasks and storages), asserting none is left."""
    failures = []
    for project_id in project_ids:
        response = api.delete(f"/api/projects/{project_id}/")
        if response.status_code not in (204, 404):
            failures.append(f"project {project_id}: HTTP {response.status_code} {response.text[:200]}")
    assert not failures, f"could not delete smoke projects: {failures}"


@dataclass(frozen=True)
class LabelConfigCase:
    """One canonical labeling setup: its config, tasks, one annotation per task and what exports must show."""

    name: str
    label_config: str
    data_key: str  # the $variable the object tag reads
    from_name: str  # the control tag that the annotations fill
    tasks: tuple[dict[str, JsonValue], ...]
    results: tuple[list[dict[str, JsonValue]], ...]  # annotation result of each task
    min_values: tuple[JsonValue, ...]  # JSON_MIN (and CSV) value of `from_name` for each task
    export_formats: frozenset[str]  # formats GET /export/formats must offer (enabled)


def _choice(from_name: str, to_name: str, value: str) -> dict[str, JsonValue]:
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [value]}}


def _box(
    region_id: str, label: str, xywh: tuple[float, float, float, float], size: tuple[int, int]
) -> dict[str, JsonValue]:
    """A rectangle in Label Studio's units: percent of the image size; the size itself in pixels."""
    x, y, width, height = xywh
    return {
        "id": region_id,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": size[0],
        "original_height": size[1],
        "image_rotation": 0,
        "value": {"x": x, "y": y, "width": width, "height": height, "rotation": 0, "rectanglelabels": [label]},
    }


def _box_min(box: dict[str, JsonValue]) -> dict[str, JsonValue]:
    return {**box["value"], "original_width": box["original_width"], "original_height": box["original_height"]}


def _span(region_id: str, text: str, phrase: str, label: str) -> dict[str, JsonValue]:
    start = text.index(phrase)
    return {
        "id": region_id,
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": start, "end": start + len(phrase), "text": phrase, "labels": [label]},
    }


def _transcription(text: str) -> dict[str, JsonValue]:
    return {"from_name": "transcription", "to_name": "audio", "type": "textarea", "value": {"text": [text]}}


IMAGE_CLASSIFICATION = LabelConfigCase(
    name="image-classification",
    label_config="""
<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image">
    <Choice value="Cat"/>
    <Choice value="Dog"/>
    <Choice value="Other"/>
  </Choices>
</View>""",
    data_key="image",
    from_name="choice",
    tasks=({"image": f"{UNREACHABLE_MEDIA}/cat.jpg"}, {"image": f"{UNREACHABLE_MEDIA}/dog.jpg"}),
    results=([_choice("choice", "image", "Cat")], [_choice("choice", "image", "Dog")]),
    min_values=("Cat", "Dog"),
    export_formats=COMMON_EXPORT_FORMATS,
)

OD_LABELS = ("Car", "Person", "Traffic Sign")
OD_RESULTS = (
    [
        _box("box-car", "Car", (10.0, 20.0, 30.0, 40.0), (640, 480)),
        _box("box-person", "Person", (55.5, 12.25, 20.5, 62.5), (640, 480)),
    ],
    [_box("box-sign", "Traffic Sign", (70.0, 5.0, 12.5, 25.0), (1024, 768))],
)
OBJECT_DETECTION = LabelConfigCase(
    name="object-detection",
    label_config="""
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car" background="red"/>
    <Label value="Person" background="blue"/>
    <Label value="Traffic Sign" background="green"/>
  </RectangleLabels>
</View>""",
    data_key="image",
    from_name="label",
    tasks=({"image": f"{UNREACHABLE_MEDIA}/street.jpg"}, {"image": f"{UNREACHABLE_MEDIA}/crossing.jpg"}),
    results=OD_RESULTS,
    min_values=tuple([_box_min(box) for box in boxes] for boxes in OD_RESULTS),
    export_formats=COMMON_EXPORT_FORMATS | {"COCO", "YOLO", "VOC"},
)

TEXT_CLASSIFICATION = LabelConfigCase(
    name="text-classification",
    label_config="""
<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>""",
    data_key="text",
    from_name="sentiment",
    tasks=({"text": "I love this product, it works great."}, {"text": "Terrible: it broke after a day."}),
    results=([_choice("sentiment", "text", "Positive")], [_choice("sentiment", "text", "Negative")]),
    min_values=("Positive", "Negative"),
    export_formats=COMMON_EXPORT_FORMATS,
)

NER_TEXTS = ("Alice works at Acme Corp in Paris .", "Bob flew to New York .")
NER_RESULTS = (
    [
        _span("ent-alice", NER_TEXTS[0], "Alice", "Person"),
        _span("ent-acme", NER_TEXTS[0], "Acme Corp", "Organization"),
        _span("ent-paris", NER_TEXTS[0], "Paris", "Location"),
    ],
    [_span("ent-bob", NER_TEXTS[1], "Bob", "Person"), _span("ent-ny", NER_TEXTS[1], "New York", "Location")],
)
NAMED_ENTITIES = LabelConfigCase(
    name="named-entities",
    label_config="""
<View>
  <Labels name="label" toName="text">
    <Label value="Person" background="red"/>
    <Label value="Organization" background="blue"/>
    <Label value="Location" background="green"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>""",
    data_key="text",
    from_name="label",
    tasks=tuple({"text": text} for text in NER_TEXTS),
    results=NER_RESULTS,
    min_values=tuple([span["value"] for span in spans] for spans in NER_RESULTS),
    export_formats=COMMON_EXPORT_FORMATS | {"CONLL2003"},
)

AUDIO_TRANSCRIPTION = LabelConfigCase(
    name="audio-transcription",
    label_config="""
<View>
  <Audio name="audio" value="$audio"/>
  <TextArea name="transcription" toName="audio" rows="4"/>
</View>""",
    data_key="audio",
    from_name="transcription",
    tasks=({"audio": f"{UNREACHABLE_MEDIA}/hello.wav"}, {"audio": f"{UNREACHABLE_MEDIA}/morning.mp3"}),
    results=([_transcription("hello world")], [_transcription("good morning, Grüße")]),
    min_values=("hello world", "good morning, Grüße"),
    export_formats=COMMON_EXPORT_FORMATS | {"ASR_MANIFEST"},
)

CASES = (IMAGE_CLASSIFICATION, OBJECT_DETECTION, TEXT_CLASSIFICATION, NAMED_ENTITIES, AUDIO_TRANSCRIPTION)


def data_signature(data: dict[str, JsonValue]) -> str:
    """A stable key for a task's data, to match tasks across projects and exports."""
    return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class AnnotatedProject:
    """A project of one case with its tasks imported and annotated (task ids in the order of `case.tasks`)."""

    project_id: int
    case: LabelConfigCase
    task_ids: tuple[int, ...]


def create_annotated_project(ls: LabelStudio, projects: ProjectFactory, case: LabelConfigCase) -> AnnotatedProject:
    """Create a project for `case`, import its tasks and annotate each one through the new SDK."""
    project_id = projects.create(case.name, case.label_config)
    imported = ls.projects.import_tasks(id=project_id, request=list(case.tasks), return_task_ids=True)
    assert imported.task_count == len(case.tasks), f"{case.name}: import reported {imported!r}"
    ids_by_data = {data_signature(task.data): task.id for task in ls.tasks.list(project=project_id)}
    task_ids = tuple(ids_by_data[data_signature(data)] for data in case.tasks)
    for task_id, result in zip(task_ids, case.results, strict=True):
        ls.annotations.create(id=task_id, result=result, lead_time=2.5)
    return AnnotatedProject(project_id, case, task_ids)


def json_diff(left: JsonValue, right: JsonValue, path: str = "$") -> list[str]:
    """Paths where two JSON values differ, e.g. `$[0].annotations[0].result: [...] != [...]`."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [
            line
            for key in sorted(set(left) | set(right), key=str)
            for line in (
                json_diff(left[key], right[key], f"{path}.{key}")
                if key in left and key in right
                else [f"{path}.{key}: only in {'left' if key in left else 'right'}"]
            )
        ]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [
            line for i, (a, b) in enumerate(zip(left, right, strict=True)) for line in json_diff(a, b, f"{path}[{i}]")
        ]
    return [] if left == right else [f"{path}: {left!r} != {right!r}"]
