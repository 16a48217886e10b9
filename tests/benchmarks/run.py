"""Run every benchmark and write one JSON report and a Markdown table.

Usage: ``python -m tests.benchmarks.run --out bench/report.json`` (``make bench``).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from echoscale import rundir
from tests.benchmarks import bench_prepare

BENCHMARKS = {"prepare_camus": bench_prepare.run}


def _markdown(report: dict) -> str:
    lines = [
        "| benchmark | patients | seconds | peak RSS MiB | above imports MiB "
        "| time ratio | peak ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, section in report["benchmarks"].items():
        for row in section.get("runs", []):
            lines.append(
                f"| {name} | {row['patients']} | {row['seconds']} "
                f"| {row['peak_rss_mib']} "
                f"| {row['peak_above_imports_mib']} | {row['time_ratio_vs_3']} "
                f"| {row['peak_ratio_vs_3']} |"
            )
    return "\n".join(lines) + "\n"


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
        "benchmarks": {name: fn() for name, fn in BENCHMARKS.items()},
    }
    rundir.write_json(args.out, report)
    rundir.write_text(args.out.with_suffix(".md"), _markdown(report))
    print(_markdown(report), end="")


if __name__ == "__main__":
    main()
