"""``sweep``: missing runs only, failures recorded, interruption, commands, tables."""

from __future__ import annotations

import dataclasses
import shlex

import pytest
from click.testing import CliRunner
from conftest import make_camus_patient

from echoscale import prepare, rundir, sweep, train
from echoscale.cli import cli

BASE = train.TrainConfig(max_steps=4, batch_size=2, eval_every=2, size=(32, 32))
# the same tiny sweep, as command-line options
GRID = [
    "--widths",
    "2",
    "--depths",
    "2",
    "--fractions",
    "0.5,1",
    "--seeds",
    "0",
    "--max-steps",
    "4",
    "--eval-every",
    "2",
    "--batch-size",
    "2",
    "--size",
    "32",
]


@pytest.fixture
def small_run(tmp_path):
    for k in range(1, 9):
        make_camus_patient(tmp_path / "src", f"patient{k:04d}")
    run = tmp_path / "run"
    prepare.prepare_camus(tmp_path / "src", run, size=(48, 40), val=0.15, test=0.15)
    return run


def _stamps(run):
    return {
        p.parent.name: p.stat().st_mtime_ns
        for p in (run / "models").glob("*/metrics.json")
    }


def test_the_plan_covers_every_combination_smallest_first():
    configs = sweep.plan([8, 4], [2], [1, 0.5], [0, 1], BASE)
    assert [c.key for c in configs][:3] == [
        "w4-d2-f0.5-s0-32x32",
        "w4-d2-f0.5-s1-32x32",
        "w4-d2-f1-s0-32x32",
    ]
    assert len(configs) == 8
    with pytest.raises(ValueError, match="same setting twice"):
        sweep.plan([4, 4], [2], [1], [0], BASE)


def test_a_sweep_trains_what_is_missing_and_records_failures(small_run):
    configs = sweep.plan([2, 4], [2], [0.5, 1], [0], BASE)
    too_deep = sweep.plan([2], [6], [1], [0], BASE)
    rows = sweep.run_sweep(small_run, configs + too_deep)
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(done) == 4 and len(failed) == 1
    assert "depth 6" in failed[0]["error"]
    table = rundir.read_csv(small_run / "sweep.csv")
    assert {r["key"] for r in table} == {c.key for c in configs + too_deep}
    assert {"dice_lv_endo", "dice_myo", "test_loss", "train_patients"} <= set(table[0])
    before = _stamps(small_run)
    sweep.run_sweep(small_run, configs)
    assert _stamps(small_run) == before


def test_an_interrupted_sweep_reruns_without_redoing_finished_runs(
    small_run, monkeypatch
):
    configs = sweep.plan([2], [2], [0.25, 0.5, 1], [0], BASE)
    real_train = train.train
    calls = []

    def interrupt_third(run, config, **kwargs):
        calls.append(config.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_train(run, config, **kwargs)

    monkeypatch.setattr(sweep, "train", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(small_run, configs)
    finished = _stamps(small_run)
    assert len(finished) == 2
    monkeypatch.setattr(sweep, "train", real_train)
    rows = sweep.run_sweep(small_run, configs)
    assert [r["status"] for r in rows] == ["done"] * 3
    after = _stamps(small_run)
    assert {k: after[k] for k in finished} == finished


def test_printed_commands_run_the_missing_trainings(small_run, invoke):
    result = invoke(
        "sweep",
        small_run,
        *GRID,
        "--print-commands",
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all(
        line.startswith("echoscale train ") for line in lines
    )
    args = shlex.split(lines[0])[1:]
    assert invoke(*args).exit_code == 0
    again = invoke(
        "sweep",
        small_run,
        *GRID,
        "--print-commands",
    )
    assert len(again.stdout.strip().splitlines()) == 1


def test_collect_rebuilds_the_table_from_the_models(small_run, invoke):
    sweep.run_sweep(small_run, sweep.plan([2], [2], [1], [0, 1], BASE))
    (small_run / "sweep.csv").unlink()
    result = invoke("sweep", small_run, "--collect")
    assert result.exit_code == 0 and "2 models" in result.stdout
    assert len(rundir.read_csv(small_run / "sweep.csv")) == 2


def test_a_model_trained_outside_the_grid_stays_out_of_the_sweep_table(small_run):
    # the chosen size trained on all the data later, in the same run: a rerun of
    # the sweep must not hand the laws a point at the target size
    grid = sweep.plan([2], [2], [0.5], [0], BASE)
    sweep.run_sweep(small_run, grid)
    extra = dataclasses.replace(BASE, width=2, depth=2, fraction=1.0)
    train.train(small_run, extra)
    rows = sweep.run_sweep(small_run, grid)
    assert [r["key"] for r in rows] == [grid[0].key]
    assert len(rundir.read_csv(small_run / "sweep.csv")) == 1
    # --collect keeps to the grid the sweep recorded, unless told other keys
    assert [r["key"] for r in sweep.collect(small_run)] == [grid[0].key]
    every = {grid[0].key, extra.key}
    assert {r["key"] for r in sweep.collect(small_run, every)} == every


def test_printed_commands_record_the_grid_that_collect_keeps_to(small_run, invoke):
    result = invoke("sweep", small_run, *GRID, "--print-commands")
    extra = dataclasses.replace(BASE, width=2, depth=2, fraction=0.25)
    train.train(small_run, extra)
    for line in result.stdout.strip().splitlines():
        assert invoke(*shlex.split(line)[1:]).exit_code == 0
    collected = invoke("sweep", small_run, "--collect")
    assert "2 models" in collected.stdout
    keys = {r["key"] for r in rundir.read_csv(small_run / "sweep.csv")}
    assert extra.key not in keys and len(keys) == 2


@pytest.mark.parametrize("mode", [[], ["--collect"], ["--print-commands"]])
def test_a_folder_without_a_dataset_is_refused_and_left_alone(tmp_path, mode):
    run = tmp_path / "not-a-run"
    result = CliRunner().invoke(cli, ["sweep", str(run), *GRID, *mode])
    assert result.exit_code == 1
    assert "run 'echoscale prepare' first" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_a_sweep_whose_every_run_failed_exits_with_an_error(small_run):
    args = ["sweep", str(small_run), *GRID, "--depths", "6"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert "0 models done, 2 failed" in result.stdout
    assert "no run of the sweep finished" in result.stderr


@pytest.mark.slow
def test_jobs_run_in_separate_processes(small_run, invoke):
    result = invoke(
        "sweep",
        small_run,
        *GRID,
        "--jobs",
        "2",
        "--devices",
        "cpu",
    )
    assert result.exit_code == 0, result.stderr
    assert "2 models done, 0 failed" in result.stdout
    config = rundir.read_json(
        rundir.model_paths(small_run, "w2-d2-f1-s0-32x32")["config"]
    )
    assert config["device"] == "cpu"


def test_a_damaged_sweep_plan_is_named_not_ignored(small_run):
    (small_run / rundir.SWEEP_PLAN).write_text("{not json")
    result = CliRunner().invoke(cli, ["sweep", str(small_run), "--collect"])
    assert result.exit_code == 1
    assert rundir.SWEEP_PLAN in result.stderr and "damaged" in result.stderr
    assert not (small_run / rundir.SWEEP).exists()
