"""Unit tests of scripts/bench.py's arithmetic and report (no stack, no quick start)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from labelstack_testlib import REPO, load_module

bench = load_module("bench", REPO / "scripts" / "bench.py")


def test_p95_is_the_value_below_which_95_percent_fall() -> None:
    assert bench.p95_ms([i / 1000 for i in range(1, 101)]) == 95.0
    assert bench.p95_ms([0.5]) == 500.0


def test_targets_compare_ratios_in_the_right_direction() -> None:
    assert bench.target_met("pages_per_s", 2.0) == ">= 1.8 yes"
    assert bench.target_met("pages_per_s", 1.5) == ">= 1.8 NO"
    assert bench.target_met("export_s", 0.4) == "<= 0.5 yes"
    assert bench.target_met("export_s", 0.6) == "<= 0.5 NO"
    assert bench.target_met("peak_rss_mib", 3.0) == ""


def test_resident_memory_of_a_process_tree_includes_the_children() -> None:
    size = 64 << 20
    code = f"import time; x = b'1' * {size}; print('ready', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        own = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        assert bench.tree_rss_bytes([child.pid]) >= size
        assert bench.tree_rss_bytes([os.getpid()]) >= own + size
    finally:
        child.kill()
        child.wait()


def test_markdown_table_holds_both_sides_and_their_ratio() -> None:
    figures: dict[str, Any] = {key: 1.0 for key, _ in bench.FIGURES}
    report = {
        "started": "20260101T000000Z",
        "label_studio_version": "1.23.2",
        "workload": {"tasks": 10, "annotations": 2, "pages": 3, "clients": 8},
        "machine": {"nproc": 2, "cpu": "test cpu", "ram_gib": 1.0},
        "load_before": "0.1 0.1 0.1",
        "load_after": "0.2 0.2 0.2",
        "sides": {
            "deployed": dict(figures, pages_per_s=4.0, exported_tasks=10, settings={}),
            "quickstart": dict(figures, pages_per_s=2.0, exported_tasks=10),
        },
    }
    table = bench.markdown(report)
    assert "| task-list pages/s | 4.0 | 2.0 | 2.0 | >= 1.8 yes |" in table
    assert "| exported tasks | 10 | 10 | 1.0 |  |" in table
    assert "2 CPUs (test cpu)" in table


def test_help_and_bad_arguments() -> None:
    script = str(REPO / "scripts" / "bench.py")
    assert subprocess.run([sys.executable, script, "--help"], capture_output=True, check=False).returncode == 0
    bad = subprocess.run([sys.executable, script, "--quick", "--tasks", "5", "--annotations", "9"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "--annotations 9 exceeds --tasks 5" in bad.stderr
