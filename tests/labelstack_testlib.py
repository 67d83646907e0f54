"""Helpers shared by the labelstack test suites: running playbooks, reading a deployment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


@dataclass(frozen=True)
class PlaybookRun:
    """Outcome of one ansible-playbook run."""

    returncode: int
    output: str

    def recap(self) -> dict[str, dict[str, int]]:
        """Per-host counters of the PLAY RECAP, e.g. {"localhost": {"changed": 0, ...}}."""
        hosts: dict[str, dict[str, int]] = {}
        tail = self.output.rsplit("PLAY RECAP", 1)[-1]
        for line in tail.splitlines():
            match = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
            if match:
                hosts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
        return hosts

    def changed_tasks(self, host: str = "") -> list[str]:
        """Names of tasks that reported a change, on `host` or any (for readable assertion messages)."""
        marker = f"changed: [{host}]" if host else "changed:"
        names: list[str] = []
        task = ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith(marker):
                names.append(task)
        return names


def run_playbook(playbook: str, inventory: str, *args: str, timeout: int = 3600) -> PlaybookRun:
    """Run a playbook of this repository with the repository's ansible.cfg."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", inventory, f"ansible/{playbook}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(proc.returncode, proc.stdout + proc.stderr)


def wait_for(check: Callable[[], T | None], timeout: float, message: str, interval: float = 1.0) -> T:
    """Poll `check` until it returns something truthy; fail with `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - keep polling; the last error goes in the message
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"{message} (waited {timeout:.0f}s; last error: {last_error!r})")


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks ignored, optional single quotes stripped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        values[key] = value
    return values
