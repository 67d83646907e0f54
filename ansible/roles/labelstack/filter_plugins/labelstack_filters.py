"""The ML backends of a stack, their addresses on the ML network and Label Studio's SSRF block list around them.

labelstack_ml_backends: each item of labelstack_ml_backends ({name, model_dir?, model_class?}) with
what the deploy needs: a fixed address, a model folder on the host, an image key, URL and backup archive;
labelstack_byo_contexts: build contexts of the users' model folders (model.py + requirements.txt, built on the
built-in backend's image by compose/ml-backend/byo.Dockerfile);

labelstack_ml_addresses: fixed addresses of the ML backends (the lower half of the ML subnet, from .2);
labelstack_ml_dynamic_range: the upper half, where Docker places the app (so it never takes a backend's);
labelstack_ssrf_banned_subnets: Label Studio's default SSRF block list minus the networks (/32 each) to allow;
labelstack_from_dir: a file name relative to a folder (the inventory's), absolute ones as they are;
labelstack_projects_yaml: projects as a labelstack_projects YAML document, label configs as blocks;
labelstack_ml_projects_as_projects: the deprecated labelstack_ml_projects items as labelstack_projects items.
"""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any

import yaml

# label_studio/core/utils/io.py validate_ip() (1.23.2): the list USE_DEFAULT_BANNED_SUBNETS turns on.
DEFAULT_BANNED_SUBNETS = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
)


def labelstack_ssrf_banned_subnets(allowed: list[str] | str) -> list[str]:
    """Every default banned subnet, with the allowed networks cut out of the ones containing them."""
    allow = [ipaddress.ip_network(a, strict=True) for a in ([allowed] if isinstance(allowed, str) else allowed)]
    banned = [ipaddress.ip_network(s) for s in DEFAULT_BANNED_SUBNETS]
    for hole in allow:
        result = []
        for net in banned:
            if net.version == hole.version and hole.subnet_of(net):
                result.extend(sorted(net.address_exclude(hole)))
            else:
                result.append(net)
        banned = result
    return [str(n) for n in banned]


def _halves(subnet: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    network = ipaddress.IPv4Network(subnet, strict=True)
    lower, upper = network.subnets(prefixlen_diff=1)
    return lower, upper


def labelstack_ml_addresses(subnet: str, count: int) -> list[str]:
    """`count` fixed addresses for the ML backends: .2 onwards in the subnet's lower half (.1 is the gateway)."""
    hosts = list(_halves(subnet)[0].hosts())[1:]
    if count > len(hosts):
        raise ValueError(f"{subnet} has room for {len(hosts)} ML backends, not {count}: choose a larger subnet")
    return [str(address) for address in hosts[:count]]


def labelstack_ml_dynamic_range(subnet: str) -> str:
    """The subnet's upper half: Docker's pool for the containers without a fixed address (the app)."""
    return str(_halves(subnet)[1])


BUILTIN_IMAGE_KEY = "ml-backend"


def labelstack_ml_backends(
    backends: list[dict[str, Any]], subnet: str, first_data_dir: str, data_dir: str
) -> list[dict[str, Any]]:
    """The backends with their address, model folder, image key, URL and backup archive name.

    The first keeps labelstack_ml_data_dir (and the archive name `ml-models`), as before several backends.
    """
    addresses = labelstack_ml_addresses(subnet, len(backends))
    result = []
    for index, (backend, address) in enumerate(zip(backends, addresses, strict=True)):
        name = backend["name"]
        model_dir = backend.get("model_dir") or ""
        result.append(
            {
                "name": name,
                "model_dir": model_dir,
                "model_class": backend.get("model_class") or "",
                "address": address,
                "url": f"http://{name}.internal:9090",
                "data_dir": first_data_dir if index == 0 else f"{data_dir}/{name}",
                "archive": "ml-models" if index == 0 else f"ml-models-{name}",
                "image_key": f"byo-{name}" if model_dir else BUILTIN_IMAGE_KEY,
            }
        )
    return result


def labelstack_projects_yaml(projects: list[dict[str, Any]]) -> str:
    """`labelstack_projects:` with the given items, multi-line strings (label configs) as literal blocks."""

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    plain = json.loads(json.dumps(projects))  # Ansible's own list, dict and str types are not SafeDumper's
    body = yaml.dump({"labelstack_projects": plain}, Dumper=Dumper, sort_keys=False, width=120, allow_unicode=True)
    header = "# Written by make projects-export; webhook header values read CHANGE-ME (use vault variables).\n"
    return "---\n" + header + body


def labelstack_from_dir(path: str, folder: str) -> str:
    """`path` itself when absolute, else `path` inside `folder`."""
    return path if os.path.isabs(path) else os.path.join(folder, path)


def labelstack_ml_projects_as_projects(items: list[dict[str, Any]], default_backend: str) -> list[dict[str, Any]]:
    """labelstack_ml_projects ({title, label_config, backend?}) as labelstack_projects: the same wiring."""
    return [
        {
            "title": item["title"],
            "label_config": item["label_config"],
            "ml_backends": [item.get("backend") or default_backend],
            "sampling": "Uncertainty sampling",
        }
        for item in items
    ]


def labelstack_byo_contexts(backends: list[dict[str, Any]], version: str) -> dict[str, dict[str, Any]]:
    """Build contexts of the user's model folders (read on the controller, like the role's own contexts)."""
    contexts = {}
    for backend in backends:
        if not backend["model_dir"]:
            continue
        root = backend["model_dir"]
        files = sorted(
            os.path.relpath(os.path.join(folder, name), root)
            for folder, _, names in os.walk(root)
            for name in names
            if "__pycache__" not in folder
        )
        contexts[backend["image_key"]] = {
            "src": root,
            "files": files,
            "args": {},
            "version": version,
            "extra_ca": False,
            "image_name": f"ml-byo-{backend['name']}",
            # Built FROM the built-in backend image, whose name is part of this one's tag.
            "base": BUILTIN_IMAGE_KEY,
            "dockerfile": "byo.Dockerfile",
        }
    return contexts


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {
            "labelstack_ssrf_banned_subnets": labelstack_ssrf_banned_subnets,
            "labelstack_ml_addresses": labelstack_ml_addresses,
            "labelstack_ml_dynamic_range": labelstack_ml_dynamic_range,
            "labelstack_ml_backends": labelstack_ml_backends,
            "labelstack_ml_projects_as_projects": labelstack_ml_projects_as_projects,
            "labelstack_from_dir": labelstack_from_dir,
            "labelstack_projects_yaml": labelstack_projects_yaml,
            "labelstack_byo_contexts": labelstack_byo_contexts,
        }
