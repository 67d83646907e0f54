"""Find the <Choices> bound to a <Text> in a Label Studio labeling config."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class ChoicesTarget:
    from_name: str  # the <Choices name=…>
    to_name: str  # the <Text name=…>
    data_key: str  # task data field: value="$text" -> "text"
    labels: tuple[str, ...]


def parse(label_config: str) -> ChoicesTarget | None:
    """The first <Choices> whose toName is a <Text> with a $field value; None when there is none."""
    try:
        root = ET.fromstring(label_config)  # noqa: S314
    except ET.ParseError:
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
