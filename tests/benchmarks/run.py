"""Run every benchmark and write one JSON report and a Markdown table.

Usage: ``python -m tests.benchmarks.run --out bench/report.json`` (``make bench``).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from echoscale import rundir
from tests.benchmarks import bench_perfusion, bench_prepare, bench_train

BENCHMARKS = {
    "prepare_camus": bench_prepare,
    "train_speed": bench_train,
    "perfusion_phantom": bench_perfusion,
}


def _markdown(report: dict) -> str:
    parts = []
    for name, section in report["benchmarks"].items():
        parts.append(f"## {name}\n\n{section.get('what', '')}\n")
        if "skipped" in section:
            parts.append(f"skipped: {section['skipped']}\n")
        else:
            parts.append(BENCHMARKS[name].markdown(section))
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/report.json"))
    args = parser.parse_args()
    report = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "benchmarks": {name: module.run() for name, module in BENCHMARKS.items()},
    }
    rundir.write_json(args.out, report)
    rundir.write_text(args.out.with_suffix(".md"), _markdown(report))
    print(_markdown(report), end="")


if __name__ == "__main__":
    main()
