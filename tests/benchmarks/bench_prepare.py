"""Time and peak memory of ``prepare camus`` on 3, 6 and 12 real patients.

Each run is a fresh process, so its peak resident memory (ru_maxrss) is its own. The
baseline is a process that only imports echoscale's prepare stage (torch included); the
ratios compare every run with the 3-patient one, measured in the same session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CAMUS = ROOT.parent / "shared" / "data" / "camus"
COMPLETE = [f"patient{k:04d}" for k in range(1, 13)]

_PREPARE = (
    "import sys; from echoscale.prepare import prepare_camus; "
    "prepare_camus(sys.argv[1], sys.argv[2], sequences=True)"
)
_IMPORT = "import echoscale.prepare"


def _measure(code: str, *args: str) -> tuple[float, float]:
    """Run ``python -c code args`` in a child; return (seconds, peak RSS in MiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args])
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark child failed: {code} {args}")
    return seconds, usage.ru_maxrss / 1024


def run() -> dict:
    """Prepare 3, 6 and 12 patients (with sequences); return the report section."""
    if not CAMUS.is_dir():
        return {"skipped": f"{CAMUS} is not present"}
    _, base_mib = _measure(_IMPORT)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (3, 6, 12):
            src = Path(tmp) / f"src{n}"
            src.mkdir()
            for name in COMPLETE[:n]:
                (src / name).symlink_to(CAMUS / name, target_is_directory=True)
            seconds, peak = _measure(_PREPARE, str(src), str(Path(tmp) / f"run{n}"))
            rows.append(
                {
                    "patients": n,
                    "seconds": round(seconds, 3),
                    "peak_rss_mib": round(peak, 1),
                    "peak_above_imports_mib": round(peak - base_mib, 1),
                }
            )
    first = rows[0]
    for row in rows:
        row["time_ratio_vs_3"] = round(row["seconds"] / first["seconds"], 3)
        row["peak_ratio_vs_3"] = round(row["peak_rss_mib"] / first["peak_rss_mib"], 3)
    return {
        "what": "prepare camus --sequences on real CAMUS patients, one process per run",
        "import_only_peak_rss_mib": round(base_mib, 1),
        "runs": rows,
    }


def markdown(section: dict) -> str:
    """A Markdown table of the runs."""
    lines = [
        "| patients | seconds | peak RSS MiB | above imports MiB | time ratio "
        "| peak ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in section["runs"]:
        lines.append(
            f"| {r['patients']} | {r['seconds']} | {r['peak_rss_mib']} "
            f"| {r['peak_above_imports_mib']} | {r['time_ratio_vs_3']} "
            f"| {r['peak_ratio_vs_3']} |"
        )
    return "\n".join(lines) + "\n"
