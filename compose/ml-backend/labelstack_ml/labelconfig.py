"""Read a Label Studio labeling config: the <Choices> bound to a <Text>, and the documented parsed form."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChoicesTarget:
    from_name: str  # the <Choices name=…>
    to_name: str  # the <Text name=…>
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


def parse(label_config: str) -> ChoicesTarget | None:
    """The first <Choices> whose toName is a <Text> with a $field value; None when there is none."""
    root = _root(label_config)
    if root is None:
        return None
    texts = {
        el.get("name"): el.get("value", "")
        for el in root.iter()
        if el.tag in ("Text", "HyperText") and el.get("name") and el.get("value", "").startswith("$")
    }
    for el in root.iter("Choices"):
        to_name = el.get("toName", "")
        if el.get("name") and to_name in texts:
            labels = tuple(c.get("value") or c.get("alias") or "" for c in el.iter("Choice"))
            return ChoicesTarget(el.get("name", ""), to_name, texts[to_name][1:], tuple(x for x in labels if x))
    return None
