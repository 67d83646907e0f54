"""The built-in models beyond text choices: model selection from the label config, the entity recognizer's
tokenization and offsets, the image classifier's decoding limits; both learn the synthetic data of tests/ml.
"""

from __future__ import annotations

import io
import time

import pytest
import requests
import requests_mock
from PIL import Image

from labelstack_ml import builtin, calls, labelconfig, lsapi
from labelstack_ml.image import ImageChoicesModel, ImageClassifier, ImageError, decode, features, studio_path
from labelstack_ml.lsapi import LabelStudio, TooLargeError
from labelstack_ml.model import TextClassifier
from labelstack_ml.ner import EntityRecognizer, Span, bio_tags, spans_of, tokenize
from ml.mllib import CONFIG as TOPIC_CONFIG
from ml.mllib import IMAGE_CONFIG, NER_CONFIG, make_images, make_sentences, span_f1, span_result


def annotated(task_id: int, data: dict[str, object], result: list[dict[str, object]]) -> dict[str, object]:
    return {"id": task_id, "data": data, "annotations": [{"id": task_id, "result": result}]}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (TOPIC_CONFIG, TextClassifier),
        (NER_CONFIG, EntityRecognizer),
        (IMAGE_CONFIG, ImageClassifier),
        # HyperText spans are XPath ranges, not character offsets: no entity model for them.
        ('<View><HyperText name="h" value="$html"/><Labels name="l" toName="h"><Label value="A"/>'
         "</Labels></View>", None),
        ('<View><Image name="i" value="$img"/><RectangleLabels name="r" toName="i"><Label value="A"/>'
         "</RectangleLabels></View>", None),
        ('<View><Audio name="a" value="$audio"/><TextArea name="t" toName="a"/></View>', None),
        ("<View><broken", None),
        # Text choices come first when a config has several pairings.
        (NER_CONFIG.replace("</View>", '<Choices name="c" toName="text"><Choice value="x"/></Choices></View>'),
         TextClassifier),
    ],
)  # fmt: skip
def test_the_label_config_picks_the_model(config: str, expected: type | None) -> None:
    assert builtin.model_class(config) is expected


def test_labels_are_read_from_the_config() -> None:
    target = labelconfig.parse_labels(NER_CONFIG)
    assert target == labelconfig.ChoicesTarget("entity", "text", "text", ("Person", "Organization", "Location"))
    image = labelconfig.parse_image_choices(IMAGE_CONFIG)
    assert image == labelconfig.ChoicesTarget("shape", "image", "image", ("Circle", "Square", "Triangle"))


def test_the_default_class_delegates_by_project() -> None:
    ner = calls.construct(builtin.BuiltinModels, project_id="1", label_config=NER_CONFIG)
    image = calls.construct(builtin.BuiltinModels, project_id="2", label_config=IMAGE_CONFIG)
    other = calls.construct(builtin.BuiltinModels, project_id="3", label_config="<View></View>")
    assert isinstance(ner.delegate, EntityRecognizer)
    assert isinstance(image.delegate, ImageClassifier)
    assert other.delegate is None
    assert other.predict([{"id": 1, "data": {}}]) == []
    assert other.fit("START_TRAINING", {"tasks": []}) is None


@pytest.mark.parametrize(
    "text",
    [
        "Anna Smith joined Acme Corp.",
        "  leading and trailing spaces  ",
        "O'Neil, O\u2019Neil and Jean-Luc met in São Paulo (Brazil)!",
        "tabs\tand\nnewlines\r\nand  double  spaces",
        "emoji \U0001f600 and CJK 東京 and combining e\u0301 marks",
        "",
    ],
)
def test_tokens_keep_exact_character_offsets(text: str) -> None:
    tokens = tokenize(text)
    assert all(text[t.start : t.end] == t.word for t in tokens)
    assert all(not t.word.isspace() and t.word.strip() == t.word for t in tokens)
    # Every non-space character is in exactly one token.
    covered = {i for t in tokens for i in range(t.start, t.end)}
    assert covered == {i for i, c in enumerate(text) if not c.isspace()}


def test_spans_round_trip_through_tags() -> None:
    text = "Yesterday Anna O'Neil flew from São Paulo to Lima, said Acme Corp."
    spans = [Span(10, 21, "Person"), Span(32, 41, "Location"), Span(45, 49, "Location"), Span(56, 65, "Organization")]
    tokens = tokenize(text)
    tags = bio_tags(tokens, spans)
    assert [s for s, _ in spans_of(tokens, tags)] == spans
    # A span an annotator started inside a word claims the whole word.
    assert bio_tags(tokens, [Span(12, 21, "Person")]) == tags[:1] + ["B-Person", "I-Person"] + ["O"] * (len(tags) - 3)


def test_entity_recognizer_learns_spans_with_exact_offsets() -> None:
    rows = make_sentences(160)
    train, held_out = rows[:60], rows[60:]
    model = calls.construct(EntityRecognizer, project_id="11", label_config=NER_CONFIG)
    tasks = [annotated(i, {"text": text}, span_result(text, spans)) for i, (text, spans) in enumerate(train)]
    started = time.monotonic()
    assert model.fit("START_TRAINING", {"tasks": tasks})["annotations"] == 60
    fit_seconds = time.monotonic() - started
    started = time.monotonic()
    predictions = calls.predict(model, [{"id": i, "data": {"text": text}} for i, (text, _) in enumerate(held_out)])
    per_task_ms = (time.monotonic() - started) * 1000 / len(held_out)
    predicted = []
    for (text, _), prediction in zip(held_out, predictions, strict=True):
        assert 0.0 <= prediction["score"] <= 1.0
        for result in prediction["result"]:
            value = result["value"]
            assert text[value["start"] : value["end"]] == value["text"], (text, value)
            assert result["type"] == "labels"
            assert result["score"] >= prediction["score"]  # the task is as unsure as its least sure token
        predicted.append(
            {(r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in prediction["result"]}
        )
    f1 = span_f1([set(spans) for _, spans in held_out], predicted)
    print(f"NER: span F1 {f1:.3f}, fit {fit_seconds:.2f}s, predict {per_task_ms:.2f} ms/text")
    assert f1 >= 0.8
    # The model file is what a restarted backend loads.
    again = calls.construct(EntityRecognizer, project_id="11")
    assert calls.predict(again, [{"id": 1, "data": {"text": held_out[0][0]}}]) == predictions[:1]


def test_image_classifier_learns_shapes_and_colours() -> None:
    images = make_images(140)
    train, held_out = images[:40], images[40:]
    model = ImageChoicesModel()
    started = time.monotonic()
    model.fit([features(decode(png)) for _, png in train], [label for label, _ in train])
    fit_seconds = time.monotonic() - started
    started = time.monotonic()
    probas = model.predict_proba([features(decode(png)) for _, png in held_out])
    per_image_ms = (time.monotonic() - started) * 1000 / len(held_out)
    accuracy = sum(max(p, key=p.__getitem__) == label for p, (label, _) in zip(probas, held_out, strict=True))
    accuracy /= len(held_out)
    print(f"images: accuracy {accuracy:.3f}, fit {fit_seconds:.2f}s, decode+features+predict {per_image_ms:.2f} ms")
    assert accuracy >= 0.9


def png(size: tuple[int, int], mode: str = "1") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def test_unreadable_and_oversized_images_are_refused() -> None:
    with pytest.raises(ImageError, match="not a readable image"):
        decode(b"\x89PNG\r\n\x1a\n but not really")
    with pytest.raises(ImageError, match="not a readable image"):
        decode(make_images(1)[0][1][:400])  # a truncated file
    # 50 megapixels in a 1-bit PNG of a few kilobytes: refused from its header, never decoded.
    with pytest.raises(ImageError, match="10000x5000 pixels, more than 25000000"):
        decode(png((10000, 5000)))
    assert decode(png((300, 200), "RGB")).size == (64, 64)


def test_an_image_file_over_the_byte_limit_is_refused_while_streaming(requests_mock: requests_mock.Mocker) -> None:
    studio = LabelStudio("http://app:8080", "backend-token")
    body = b"x" * 300_000
    requests_mock.get("http://app:8080/data/upload/3/declared.png", content=body, headers={"Content-Length": "300000"})
    with pytest.raises(TooLargeError, match="300000 bytes, more than 100000"):
        studio.read_file("/data/upload/3/declared.png", 100_000)
    # Without a Content-Length (chunked), the read stops one chunk past the limit.
    requests_mock.get("http://app:8080/data/upload/3/chunked.png", body=io.BytesIO(body))
    with pytest.raises(TooLargeError, match="more than 100000 bytes"):
        studio.read_file("/data/upload/3/chunked.png", 100_000)
    requests_mock.get("http://app:8080/data/upload/3/chunked.png", body=io.BytesIO(body))  # the first was read
    assert studio.read_file("/data/upload/3/chunked.png", 300_000) == body
    assert requests_mock.last_request.headers["Authorization"] == "Token backend-token"


def test_a_server_error_is_tried_again_and_a_client_error_is_not(
    requests_mock: requests_mock.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lsapi, "RETRY_WAIT", 0.0)
    studio = LabelStudio("http://app:8080", "backend-token")
    imports = "http://app:8080/api/projects/7/import/predictions"
    # A deadlock PostgreSQL broke by failing this import: Label Studio rolled it back and answered 500.
    requests_mock.post(imports, [{"status_code": 500, "json": {"detail": "deadlock detected"}}, {"status_code": 201}])
    studio.import_predictions(7, [{"task": 1, "result": []}])
    assert requests_mock.call_count == 2
    requests_mock.post(imports, status_code=500)
    with pytest.raises(requests.HTTPError, match="500"):
        studio.import_predictions(7, [{"task": 1, "result": []}])
    assert requests_mock.call_count == 2 + lsapi.ATTEMPTS
    requests_mock.patch("http://app:8080/api/projects/7", status_code=400)
    with pytest.raises(requests.HTTPError, match="400"):
        studio.set_model_version(7, "v1")
    assert requests_mock.call_count == 3 + lsapi.ATTEMPTS


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("/data/local-files/?d=shapes/a.png", "/data/local-files/?d=shapes/a.png"),
        ("https://ls.example.org:8443/data/local-files/?d=shapes%2Fa.png", "/data/local-files/?d=shapes%2Fa.png"),
        ("/data/upload/3/5b2c-a.png", "/data/upload/3/5b2c-a.png"),
        ("http://evil.example/steal.png", None),
        ("s3://bucket/a.png", None),
        ("/api/projects/", None),
    ],
)
def test_images_are_read_only_from_label_studio(url: str, path: str | None) -> None:
    if path is None:
        with pytest.raises(ImageError, match="not a Label Studio"):
            studio_path(url)
    else:
        assert studio_path(url) == path


def test_an_image_outside_label_studio_is_logged_not_fetched(caplog: pytest.LogCaptureFixture) -> None:
    model = calls.construct(ImageClassifier, project_id="12", label_config=IMAGE_CONFIG)
    assert model.predict([{"id": 1, "data": {"image": "http://elsewhere/a.png"}}]) == []  # untrained: none at all
    with caplog.at_level("WARNING", logger="labelstack_ml"):
        assert model.image_features({"id": 7, "data": {"image": "http://elsewhere/a.png"}}, "image") is None
    assert "task 7: cannot use image http://elsewhere/a.png: not a Label Studio" in caplog.text
