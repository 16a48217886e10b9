"""Whole studies: README's commands, ``make demo``, and ``make study`` on real CAMUS.

README cannot drift from the code: every ``$ echoscale ...`` line in its console blocks
runs here, in order, and every ``$ make ...`` line names a Makefile target that a test
here (or CI itself, for install and test) runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from echoscale import rundir

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# make targets that README shows, and who runs them
MAKE_TARGETS = {
    "install": "CI (.ci/run)",
    "test": "CI (.ci/run)",
    "demo": "test_make_demo_runs_the_whole_study",
    "study": "test_make_study_on_the_real_camus_patients",
    "contrast": "test_make_demo_runs_the_whole_study",
    "bench": "tests/benchmarks (make bench)",
}


def readme_commands() -> list[str]:
    """The ``$ `` lines of README's console blocks, in order."""
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(), re.S)
    lines = []
    for block in blocks:
        for line in block.splitlines():
            if line.startswith("$ "):
                lines.append(line[2:])
    return lines


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_readme_shows_only_commands_that_exist():
    commands = readme_commands()
    assert len(commands) > 15
    makefile = (ROOT / "Makefile").read_text()
    first_words = set()
    for command in commands:
        words = command.split()
        if words[0] == "make":
            target = words[1] if len(words) > 1 and "=" not in words[1] else "install"
            assert target in MAKE_TARGETS, command
            assert re.search(rf"^{target}:", makefile, re.M), command
        else:
            assert words[0] in ("echoscale", "case=$(echoscale"), command
            first_words.add(words[1] if words[0] == "echoscale" else "cases")
    # every subcommand has its example
    from echoscale.cli import cli

    assert set(cli.commands) <= first_words | {"prepare"}
    assert {"segment", "perfuse", "compare"} <= first_words


@pytest.mark.slow
def test_every_echoscale_command_in_readme_runs(tmp_path):
    lines = [c for c in readme_commands() if not c.startswith("make")]
    script = "set -euo pipefail\n" + "\n".join(lines) + "\n"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "tour" / "report.md").read_text()
    assert "not run" not in report, report
    selection = rundir.read_json(tmp_path / "tour" / "camus" / "selection.json")
    assert (tmp_path / "tour" / "camus" / "models" / selection["key"]).is_dir()


def _make(*args: str, cwd: Path = ROOT, timeout: int = 1800):
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_make_demo_runs_the_whole_study(tmp_path):
    demo = tmp_path / "demo"
    done = _make("demo", f"DEMO={demo}", f"BIN={Path(sys.executable).parent}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = rundir.read_json(demo / "report.json")
    law = report["law"]
    assert law is not None and law["choice"] in {"w4-d3", "w8-d3", "w16-d3"}
    assert law["measured"] is not None and law["parameter_ratio"] >= 1
    # chosen by a law (then backtested) or, where none fits, on measured losses
    if law["basis"] == "law":  # backtested, or said why the refit failed
        backtest = law["backtest"]
        assert backtest["success"] or backtest["message"]
        assert "backtest" in done.stdout
    else:
        assert law["basis"] == "measured" and law["law_failures"]
    dice = report["segmentation"]["dice"]
    assert dice["lv_endo"]["ED"]["mean"] > 0.7
    perfusion = report["perfusion"]
    assert perfusion is not None and perfusion["used"] >= 7
    assert {r["decision"] for r in perfusion["rows"].values()} <= {
        "equivalent",
        "not shown equivalent",
        "undefined",
    }
    printed = done.stdout
    assert "Network size" in printed and law["choice"] in printed
    assert "equivalence" in printed
    for name in ("law.png", "law.csv", "sweep.csv", "selection.json"):
        assert (demo / "camus" / name).is_file(), name
    assert (demo / "compare" / "perfusion" / "metrics.csv").is_file()
    # the contrast sweep's laws keep the CAMUS exponents, and they chose its size
    ceus_law = rundir.read_json(demo / "ceus" / "law.json")
    assert ceus_law["transfer_from"] == str(demo / "camus" / "law.json")
    camus_law = rundir.read_json(demo / "camus" / "law.json")
    for key, moved in ceus_law["transfer"]["sizes"].items():
        source = camus_law["sizes"][key]
        if source["success"]:
            assert moved["fixed"] == {"beta": source["params"]["beta"]}, key
    contrast = report["contrast_law"]
    assert contrast["basis"] in {"transfer", "measured"}
    if contrast["basis"] == "transfer":
        assert contrast["transfer"]["bias"] is not None
    assert "Contrast network size" in printed


@pytest.mark.slow
def test_make_study_on_the_real_camus_patients(tmp_path, camus_root):
    """The real-data study: a law and its backtest, or a choice that says it had none.

    Seven training patients at CPU settings may leave the losses flat in D; then
    fit-law must say so for every size and select chooses on the measured losses,
    saying so. Either way the networks must have learnt (test Dice).
    """
    study = tmp_path / "study"
    settings = [
        f"STUDY={study}",
        f"CAMUS={camus_root}",
        f"BIN={Path(sys.executable).parent}",
        *STUDY_CPU_SETTINGS,
    ]
    done = _make("study", *settings)
    run = study / "camus"
    rows = rundir.read_csv(run / "sweep.csv")
    assert len(rows) == 12 and all(r["status"] == "done" for r in rows)
    largest = max(float(r["fraction"]) for r in rows)
    best = [float(r["dice_lv_endo"]) for r in rows if float(r["fraction"]) == largest]
    assert max(best) > 0.75
    law = rundir.read_json(run / "law.json")
    assert done.returncode == 0, done.stderr[-3000:]
    report = rundir.read_json(study / "report.json")
    assert report["segmentation"]["dice"]["lv_endo"]["ED"]["mean"] > 0.7
    if report["law"]["basis"] == "law":
        # the law's extrapolation to the held-out largest fraction lands near it
        backtest = report["law"]["backtest"]
        assert not backtest["success"] or abs(backtest["rel_error"]) < 0.25
        assert backtest["success"] or backtest["message"]
    else:  # no law: every fit says why, and the choice says it was measured
        assert all(not f["success"] and f["message"] for f in law["sizes"].values())
        assert "no law could be fitted" in done.stdout


# small settings that run the real-data study on a 2-core CPU (README names them)
STUDY_CPU_SETTINGS = [
    "SIZE=96",
    "WIDTHS=4,8",
    "DEPTH=4",
    "FRACTIONS=0.3,0.5,0.75",
    "SEEDS=0,1",
    "STEPS=300",
    "EVAL=50",
    "LR=6e-3",
    "BATCH=4",
    "JOBS=2",
    "BOOT=200",
    "VAL=0.17",
    "TEST=0.25",
    "METRIC=dice_error",
]


def test_readme_gives_the_real_data_study_with_the_tested_settings():
    (line,) = [c for c in readme_commands() if "CAMUS=../shared/data/camus" in c]
    assert set(STUDY_CPU_SETTINGS) <= set(line.split())
