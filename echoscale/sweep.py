"""``sweep``: train every (width, depth, fraction, seed) combination that is missing.

A sweep is a set of independent, idempotent ``train`` runs: finished keys are skipped,
so an interrupted sweep reruns without redoing or losing work, and it scales out by
handing the runs to processes (``--jobs``, one device each) or to a scheduler
(``--print-commands`` gives one ``echoscale train`` line per missing run).
``RUN/sweep.csv`` is rebuilt from every finished model's ``metrics.json`` (and every
recorded failure).
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from echoscale import rundir
from echoscale.errors import EchoscaleError
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


def _run_one(
    run: Path, config: TrainConfig, device: str | None, in_process: bool
) -> str:
    """Train one config; return "done" or "failed: reason" (never raise)."""
    (rundir.model_dir(run, config.key) / FAILED).unlink(missing_ok=True)
    if in_process:
        try:
            train(run, dataclasses.replace(config, device=device or config.device))
            return "done"
        except (EchoscaleError, ValueError, RuntimeError, OSError) as err:
            _record_failure(run, config, str(err))
            return f"failed: {err}"
    command = shlex.split(train_command(run, config, device))
    command = [sys.executable, "-m", "echoscale", "-q", *command[1:]]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode == 0:
        return "done"
    lines = proc.stderr.strip().splitlines()
    reason = lines[-1] if lines else f"exit code {proc.returncode}"
    _record_failure(run, config, reason)
    return f"failed: {reason}"


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
        Runs at once. 1 trains in this process; more start one ``echoscale train``
        process per run.
    devices : sequence of str, optional
        Devices handed to the runs in turn (``cuda:0``, ``cuda:1``).

    Returns
    -------
    list of dict
        The rows of ``RUN/sweep.csv``.
    """
    run = Path(run)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    todo = [c for c in configs if not is_finished(run, c)]
    skipped = len(configs) - len(todo)
    if skipped:
        log.info("%d of %d runs are finished already", skipped, len(configs))
    devices = list(devices or [None])

    def work(item: tuple[int, TrainConfig]) -> None:
        number, config = item
        device = devices[(number - 1) % len(devices)]
        start = time.perf_counter()
        result = _run_one(run, config, device, in_process=jobs == 1)
        log.info(
            "[%d/%d] %s %s (%.0f s)",
            number,
            len(todo),
            config.key,
            result,
            time.perf_counter() - start,
        )

    if jobs == 1:
        for item in enumerate(todo, start=1):
            work(item)
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            list(pool.map(work, enumerate(todo, start=1)))
    return collect(run)


def collect(run: str | Path) -> list[dict[str, Any]]:
    """Rebuild ``RUN/sweep.csv`` from every model's metrics (and failures); return rows.

    One row per model, sorted by width, depth, fraction and seed. Dice columns
    (``dice_<structure>``, over all test samples) follow the structures present.
    """
    run = Path(run)
    rows, structures = [], []
    for folder in sorted((run / rundir.MODELS).glob("*")):
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
