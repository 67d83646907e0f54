"""Read a Label Studio labeling config: the control a built-in model serves, and the documented parsed form.

The built-in models each serve one pairing of a control tag and an object tag (model_kind picks the first the
config has, in the order of KINDS): <Choices> on <Text>, <Labels> on <Text>, <Choices> on <Image>.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChoicesTarget:
    """The control a built-in model fills in (its name keeps model files saved before other kinds loadable)."""

    from_name: str  # the control: <Choices name=…> or <Labels name=…>
    to_name: str  # the object it labels: <Text name=…> or <Image name=…>
    data_key: str  # task data field: value="$text" -> "text"
    labels: tuple[str, ...]


def _root(label_config: str) -> ET.Element | None:
    try:
        return ET.fromstring(label_config)  # noqa: S314 - the config comes from Label Studio, not from the webhook
    except ET.ParseError:
        return None


def parse_config(label_config: str) -> dict[str, dict[str, Any]]:
    """The form model classes read as `parsed_label_config`: per control tag (one with toName), its type,
    to_name list, inputs ({"type", "value"} of each object tag it labels) and labels; {} for a broken config.
    """
    root = _root(label_config)
    if root is None:
        return {}
    objects = {el.get("name"): el for el in root.iter() if el.get("name") and el.get("value", "").startswith("$")}
    parsed = {}
    for el in root.iter():
        name, to_names = el.get("name"), [n for n in el.get("toName", "").split(",") if n]
        if not name or not to_names:
            continue
        tagged = [(child.get("value") or child.get("alias"), child) for child in el]
        tagged = [(label, child) for label, child in tagged if label]
        parsed[name] = {
            "type": el.tag,
            "to_name": to_names,
            "inputs": [
                {"type": objects[n].tag, "value": objects[n].get("value", "")[1:]} for n in to_names if n in objects
            ],
            "labels": [label for label, _ in tagged],
            "labels_attrs": {label: dict(child.attrib) for label, child in tagged},
        }
    return parsed


def find(label_config: str, control: str, objects: tuple[str, ...]) -> ChoicesTarget | None:
    """The first <`control`> whose toName is one of `objects` with a $field value; None when there is none."""
    root = _root(label_config)
    if root is None:
        return None
    fields = {
        el.get("name"): el.get("value", "")
        for el in root.iter()
        if el.tag in objects and el.get("name") and el.get("value", "").startswith("$")
    }
    for el in root.iter(control):
        to_name = el.get("toName", "")
        if el.get("name") and to_name in fields:
            # <Choices> holds <Choice> tags, <Labels> holds <Label> tags, possibly inside layout tags.
            labels = tuple(c.get("value") or c.get("alias") or "" for c in el.iter(control[:-1]))
            return ChoicesTarget(el.get("name", ""), to_name, fields[to_name][1:], tuple(x for x in labels if x))
    return None


def parse(label_config: str) -> ChoicesTarget | None:
    """The first <Choices> bound to a <Text> (or <HyperText>): what the text classifier serves."""
    return find(label_config, "Choices", ("Text", "HyperText"))


def parse_labels(label_config: str) -> ChoicesTarget | None:
    """The first <Labels> bound to a <Text>: what the entity recognizer serves (HyperText spans are XPath ranges,
    not character offsets, so they are not).
    """
    return find(label_config, "Labels", ("Text",))


def parse_image_choices(label_config: str) -> ChoicesTarget | None:
    """The first <Choices> bound to an <Image>: what the image classifier serves."""
    return find(label_config, "Choices", ("Image",))


# The built-in model kinds, in the order model_kind tries them.
KINDS: tuple[tuple[str, Callable[[str], ChoicesTarget | None]], ...] = (
    ("text-choices", parse),
    ("ner", parse_labels),
    ("image-choices", parse_image_choices),
)


def model_kind(label_config: str) -> str | None:
    """Which built-in model serves this config: the first of KINDS it has; None when none does."""
    return next((kind for kind, finder in KINDS if finder(label_config) is not None), None)
