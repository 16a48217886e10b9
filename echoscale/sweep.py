"""``sweep``: train every (width, depth, fraction, seed) combination that is missing.

A sweep is a set of independent, idempotent ``train`` runs: finished keys are skipped,
so an interrupted sweep reruns without redoing or losing work, and it scales out by
handing the runs to processes (``--jobs``, one device each) or to a scheduler
(``--print-commands`` gives one ``echoscale train`` line per missing run).
``RUN/sweep.csv`` is rebuilt from the finished models' ``metrics.json`` (and the
recorded failures) of the latest sweep's grid, which ``RUN/sweep_plan.json`` keeps:
a model trained outside it (the chosen size on all the data) never enters the laws.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shlex
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from echoscale import rundir
from echoscale.dataset import load_dataset
from echoscale.errors import EchoscaleError, InputError
from echoscale.train import TrainConfig, train

log = logging.getLogger(__name__)

FAILED = "failed.json"
BASE_COLUMNS = (
    "key",
    "status",
    "width",
    "depth",
    "parameters",
    "forward_flops",
    "train_flops",
    "fraction",
    "train_patients",
    "train_images",
    "seed",
    "steps",
    "val_loss",
    "test_loss",
    "dice_error",
)
TAIL_COLUMNS = ("wall_seconds", "device", "precision", "error")
# options of TrainConfig that a train command line repeats
_OPTIONS = ("max_steps", "batch_size", "lr", "eval_every", "patience", "precision")


def plan(
    widths: Sequence[int],
    depths: Sequence[int],
    fractions: Sequence[float],
    seeds: Sequence[int],
    base: TrainConfig,
) -> list[TrainConfig]:
    """Every combination, smallest networks and fractions first, as train configs."""
    configs = []
    for depth in depths:
        for width in sorted(widths):
            for fraction in sorted(fractions):
                for seed in seeds:
                    configs.append(
                        dataclasses.replace(
                            base, width=width, depth=depth, fraction=fraction, seed=seed
                        )
                    )
    keys = [c.key for c in configs]
    if len(set(keys)) != len(keys):
        raise ValueError("the sweep lists the same setting twice")
    for config in configs:
        config.check()
    return configs


def write_plan(run: str | Path, configs: Sequence[TrainConfig]) -> None:
    """Record the sweep's grid (its keys) for :func:`collect`; check the run first.

    Raises
    ------
    InputError
        When ``run`` holds no prepared dataset: nothing is created then.
    """
    load_dataset(run)
    rundir.write_json(Path(run) / rundir.SWEEP_PLAN, {"keys": [c.key for c in configs]})


def planned_keys(run: str | Path) -> list[str] | None:
    """The keys of the latest sweep's grid, or None when no sweep recorded one."""
    path = Path(run) / rundir.SWEEP_PLAN
    if not path.is_file():
        return None
    try:
        keys = rundir.read_json(path)["keys"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        keys = None
    if not isinstance(keys, list):
        raise InputError(
            "is damaged (no list of keys); rerun the sweep, or delete it to "
            "collect every model",
            path,
        )
    return keys


def is_finished(run: str | Path, config: TrainConfig) -> bool:
    """True when the key has a ``metrics.json``."""
    return rundir.model_paths(run, config.key)["metrics"].is_file()


def train_command(
    run: str | Path, config: TrainConfig, device: str | None = None
) -> str:
    """The ``echoscale train`` command line that runs ``config``."""
    args = [
        "echoscale",
        "train",
        str(run),
        "--width",
        str(config.width),
        "--depth",
        str(config.depth),
        "--fraction",
        f"{config.fraction:g}",
        "--seed",
        str(config.seed),
    ]
    defaults = TrainConfig()
    for name in _OPTIONS:
        value = getattr(config, name)
        if value != getattr(defaults, name):
            args += [
                f"--{name.replace('_', '-')}",
                f"{value:g}" if isinstance(value, float) else str(value),
            ]
    if config.size is not None:
        args += ["--size", f"{config.size[0]}x{config.size[1]}"]
    if not config.augment:
        args.append("--no-augment")
    device = device or config.device
    if device != "auto":
        args += ["--device", device]
    return shlex.join(args)


def _record_failure(run: Path, config: TrainConfig, error: str) -> None:
    folder = rundir.model_dir(run, config.key)
    rundir.write_json(
        folder / FAILED,
        {"key": config.key, "error": error, "config": dataclasses.asdict(config)},
    )


def _run_one(run: Path, config: TrainConfig, device: str | None) -> str:
    """Train one config; return "done" or "failed: reason" (never raise)."""
    (rundir.model_dir(run, config.key) / FAILED).unlink(missing_ok=True)
    try:
        train(run, dataclasses.replace(config, device=device or config.device))
        return "done"
    except (EchoscaleError, ValueError, RuntimeError, OSError) as err:
        _record_failure(run, config, str(err))
        return f"failed: {err}"


_worker_device: str | None = None


def _start_worker(slots: Any, devices: list[str | None], threads: int) -> None:
    """Pool initializer: take a device slot and this worker's share of the cores."""
    global _worker_device
    _worker_device = devices[slots.get() % len(devices)]
    torch.set_num_threads(threads)
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), daemon=True
    ).start()
    # progress lines go to each run's train.log; the console gets warnings only
    handler = logging.StreamHandler()
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("echoscale").addHandler(handler)
    logging.getLogger("echoscale").propagate = False


def _exit_with_parent(parent: int) -> None:
    """Stop this worker when the sweep that started it is gone (killed, not asked).

    A sweep stopped by Ctrl-C or SIGTERM shuts its workers down itself; one killed
    outright cannot, and its workers would train on unseen.
    """
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _run_in_worker(run: Path, config: TrainConfig) -> str:
    return _run_one(run, config, _worker_device)


def run_sweep(
    run: str | Path,
    configs: Sequence[TrainConfig],
    *,
    jobs: int = 1,
    devices: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Train the missing configs, then rebuild and return the sweep table.

    Parameters
    ----------
    run : str or Path
        Run directory with a prepared dataset.
    configs : sequence of TrainConfig
        The whole sweep; finished keys are skipped.
    jobs : int
        Runs at once. 1 trains in this process; more start that many worker
        processes, each with its share of the CPU cores, that take runs in turn.
    devices : sequence of str, optional
        Devices handed to the workers in turn (``cuda:0``, ``cuda:1``).

    Returns
    -------
    list of dict
        The rows of ``RUN/sweep.csv``: the runs of ``configs`` only, so that a
        model trained later in the same run (the chosen size on all the data) does
        not enter the laws when the sweep is rerun.

    Raises
    ------
    InputError
        When ``run`` holds no prepared dataset (checked before anything is written).
    """
    run = Path(run)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    write_plan(run, configs)
    todo = [c for c in configs if not is_finished(run, c)]
    skipped = len(configs) - len(todo)
    if skipped:
        log.info("%d of %d runs are finished already", skipped, len(configs))
    devices = list(devices or [None])

    def report(number: int, config: TrainConfig, result: str, when: str) -> None:
        log.info("[%d/%d] %s %s (%s)", number, len(todo), config.key, result, when)

    if jobs == 1:
        for number, config in enumerate(todo, start=1):
            start = time.perf_counter()
            result = _run_one(run, config, devices[0])
            report(number, config, result, f"{time.perf_counter() - start:.0f} s")
        return collect(run)
    # One process per job, each with its own device and share of the cores, kept for
    # all its runs so that torch is imported once per job, not once per run.
    context = multiprocessing.get_context("spawn")
    slots = context.Manager().Queue()
    for slot in range(jobs):
        slots.put(slot)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(
        jobs, context, initializer=_start_worker, initargs=(slots, devices, threads)
    ) as pool:
        started = time.perf_counter()
        futures = {
            pool.submit(_run_in_worker, run, config): (number, config)
            for number, config in enumerate(todo, start=1)
        }
        try:
            for future in as_completed(futures):
                number, config = futures[future]
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    _record_failure(run, config, f"its process died: {err}")
                    result = "failed: its process died"
                elapsed = time.perf_counter() - started
                report(number, config, result, f"{elapsed:.0f} s into the sweep")
        except BaseException:
            # interrupted: stop the runs in progress too, rather than wait for them
            pool.shutdown(wait=False, cancel_futures=True)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            raise
    return collect(run)


def collect(
    run: str | Path, keys: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """Rebuild ``RUN/sweep.csv`` from the models' metrics (and failures); return rows.

    One row per model of ``keys``, by default the latest sweep's grid
    (``RUN/sweep_plan.json``; every model when no sweep recorded one), sorted by
    width, depth, fraction and seed. Dice columns (``dice_<structure>``, over all
    test samples) follow the structures present.

    Raises
    ------
    InputError
        When ``run`` holds no prepared dataset.
    """
    run = Path(run)
    load_dataset(run)
    if keys is None:
        keys = planned_keys(run)
    rows, structures = [], []
    for folder in sorted((run / rundir.MODELS).glob("*")):
        if keys is not None and folder.name not in keys:
            continue
        metrics_path = folder / rundir.MODEL_FILES["metrics"]
        if metrics_path.is_file():
            m = rundir.read_json(metrics_path)
            row = {c: m.get(c, "") for c in BASE_COLUMNS + TAIL_COLUMNS}
            row["status"] = "done"
            for name, phases in m.get("dice", {}).items():
                row[f"dice_{name}"] = phases.get("all")
                if name not in structures:
                    structures.append(name)
            rows.append(row)
        elif (folder / FAILED).is_file():
            failure = rundir.read_json(folder / FAILED)
            config = failure.get("config", {})
            rows.append(
                {
                    **{
                        k: config.get(k, "")
                        for k in ("width", "depth", "fraction", "seed")
                    },
                    "key": failure["key"],
                    "status": "failed",
                    "error": failure.get("error", ""),
                }
            )
    rows.sort(key=lambda r: (r["depth"], r["width"], r["fraction"], r["seed"]))
    columns = (*BASE_COLUMNS, *(f"dice_{s}" for s in structures), *TAIL_COLUMNS)
    rundir.write_csv(run / rundir.SWEEP, rows, columns)
    return rows
