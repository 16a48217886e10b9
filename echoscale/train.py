"""``train``: one U-Net on a nested subset of the training patients, evaluated on test.

A run is named by its settings (``w16-d4-f0.25-s0``) and writes ``RUN/models/<key>/``:
``config.json``, ``model.pt`` (best-validation weights and config), ``history.csv``,
``metrics.json`` and ``train.log``. It is reproducible: batches and augmentations are
drawn from generators seeded by (seed, step), so a run resumed from its last checkpoint
takes the same steps as one that was never interrupted, and two CPU runs with the same
settings give identical metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
import pickle
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echoscale import __version__, metrics, rundir
from echoscale.augment import augment
from echoscale.dataset import Dataset, load_dataset
from echoscale.errors import InputError
from echoscale.unet import UNet, check_size, count_parameters, forward_flops

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
HISTORY_COLUMNS = ("step", "lr", "train_loss", "val_loss", "val_dice", "seconds")


@dataclass
class TrainConfig:
    """Settings of one training run; the key is made from the first four (and size)."""

    width: int = 16
    depth: int = 4
    fraction: float = 1.0
    seed: int = 0
    max_steps: int = 2000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    eval_every: int = 100
    patience: int = 5
    size: tuple[int, int] | None = None
    device: str = "auto"
    precision: str = "auto"
    augment: bool = True

    @property
    def key(self) -> str:
        """Folder name, e.g. ``w16-d4-f0.25-s0`` (``-128x128`` if resized)."""
        key = f"w{self.width}-d{self.depth}-f{self.fraction:g}-s{self.seed}"
        return key if self.size is None else f"{key}-{self.size[0]}x{self.size[1]}"

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        for name in ("width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {self.seed}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"--fraction must be in (0, 1], got {self.fraction}")
        for name in ("max_steps", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a positive number, got {self.lr}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}")


@dataclass
class _Split:
    """Stack indices of the samples each split uses, and the training patient count."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    n_patients: int


@dataclass
class _State:
    """What a checkpoint holds besides the weights: enough to resume exactly."""

    step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    bad_evals: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AMX or AVX-512 BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(text: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:i`` into a device that exists."""
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(
            f"--device must be auto, cpu, cuda or cuda:i, got {text!r}"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise InputError(
                f"CUDA device {text} is not available ({count} CUDA devices found)"
            )
    elif device.type != "cpu":
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:i, got {text!r}")
    return device


def resolve_precision(text: str, device: torch.device) -> str:
    """``auto`` is bf16 on a CUDA GPU or a CPU with native bf16, else fp32."""
    if text != "auto":
        return text
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def select_training_patients(manifest: dict[str, Any], fraction: float) -> list[str]:
    """Take the first round(fraction * N) patients of the dataset's fixed shuffle.

    Every smaller fraction is therefore a subset of every larger one.
    """
    order = manifest["train_order"]
    n = math.floor(fraction * len(order) + 0.5)
    if n < 1:
        raise InputError(
            f"--fraction {fraction:g} of {len(order)} training patients leaves none; "
            f"the smallest usable fraction is {0.5 / len(order):.3g}"
        )
    return order[:n]


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice, per sample.

    Parameters
    ----------
    logits : Tensor, shape (B, K, H, W)
    target : Tensor, shape (B, H, W), int64 labels in [0, K)

    Returns
    -------
    Tensor, shape (B,)
        Mean pixel cross-entropy plus 1 - mean soft Dice over the K - 1 foreground
        classes, for each sample (smoothing 1 pixel, so an absent class scores well
        when it is also predicted absent).
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, target, reduction="none").mean(dim=(1, 2))
    probs = logits.softmax(dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (probs * onehot).sum(dim=(2, 3))
    total = probs.sum(dim=(2, 3)) + onehot.sum(dim=(2, 3))
    soft_dice = (2 * inter + 1) / (total + 1)
    return ce + 1 - soft_dice.mean(dim=1)


class _Batches:
    """Reads samples from the memory-mapped stacks onto a device, resized if asked."""

    def __init__(
        self, data: Dataset, size: tuple[int, int], device: torch.device
    ) -> None:
        self.data, self.size, self.device = data, size, device

    def get(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        order = np.sort(indices)  # memory maps read fastest in order
        images = torch.from_numpy(np.asarray(self.data.images[order]))
        masks = torch.from_numpy(np.asarray(self.data.masks[order]))
        undo = np.argsort(np.argsort(indices))
        images = images[undo].to(self.device).float().div_(255)[:, None]
        masks = masks[undo].to(self.device).long()
        if tuple(images.shape[-2:]) != self.size:
            images = F.interpolate(images, self.size, mode="bilinear", antialias=True)
            masks = F.interpolate(
                masks[:, None].float(), self.size, mode="nearest-exact"
            )
            masks = masks[:, 0].long()
        return images.contiguous(memory_format=torch.channels_last), masks


def _lr_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up over the first 5% of steps, then cosine decay to 1% of lr."""
    warm = max(1, config.max_steps // 20)
    if step <= warm:
        return config.lr * (0.1 + 0.9 * step / warm)
    progress = (step - warm) / max(1, config.max_steps - warm)
    return config.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))


def _autocast(device: torch.device, precision: str):
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


@torch.no_grad()
def evaluate(
    model: UNet,
    batches: _Batches,
    indices: np.ndarray,
    precision: str,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-sample loss (N,) and predicted labels (N, H, W) of ``indices``."""
    model.eval()
    losses, preds = [], []
    for start in range(0, len(indices), batch_size):
        images, masks = batches.get(indices[start : start + batch_size])
        with _autocast(batches.device, precision):
            logits = model(images)
        losses.append(segmentation_loss(logits, masks).cpu())
        preds.append(logits.argmax(dim=1).to(torch.uint8).cpu())
    model.train()
    return torch.cat(losses).numpy(), torch.cat(preds).numpy()


def _mean_dice(pred: np.ndarray, ref: np.ndarray, n_classes: int) -> float:
    scores = [
        metrics.dice(p == k, r == k)
        for p, r in zip(pred, ref, strict=True)
        for k in range(1, n_classes)
    ]
    return float(np.nanmean(scores)) if scores else float("nan")


def summarize_scores(
    data: Dataset, indices: np.ndarray, preds: np.ndarray, size: tuple[int, int]
) -> dict[str, Any]:
    """Dice and HD95 (mm) per structure and phase (ED, ES, all) over the samples.

    Means skip undefined Dice (both masks empty) and infinite HD95 (one empty); the
    counts of each are reported beside them, never dropped silently.
    """
    structures = metrics.structure_labels(data.manifest["labels"])
    refs = _Batches(data, size, torch.device("cpu")).get(indices)[1].numpy()
    per_phase: dict[str, dict[str, list[dict[str, float]]]] = {}
    for index, pred, ref in zip(indices, preds, refs, strict=True):
        row = data.samples[index]
        h, w = data.images.shape[1:]
        spacing = (
            float(row["row_mm"]) * h / size[0],
            float(row["col_mm"]) * w / size[1],
        )
        scores = metrics.score_structures(pred, ref, structures, spacing)
        for phase in {"all", row["phase"] or "all"}:
            for name, values in scores.items():
                per_phase.setdefault(name, {}).setdefault(phase, []).append(values)
    out: dict[str, Any] = {"dice": {}, "hd95_mm": {}, "counts": {}}
    for name, phases in per_phase.items():
        for phase, items in phases.items():
            dice = np.array([v["dice"] for v in items])
            hd = np.array([v["hd95_mm"] for v in items])
            out["dice"].setdefault(name, {})[phase] = _nanmean(dice)
            out["hd95_mm"].setdefault(name, {})[phase] = _nanmean(hd[np.isfinite(hd)])
            out["counts"].setdefault(name, {})[phase] = {
                "samples": len(items),
                "dice_undefined": int(np.isnan(dice).sum()),
                "hd95_infinite": int(np.isinf(hd).sum()),
            }
    # 1 - Dice, a law metric less noisy than the loss after short training (DESIGN.md)
    overall = [d["all"] for d in out["dice"].values() if d.get("all") is not None]
    out["dice_error"] = round(1 - float(np.mean(overall)), 6) if overall else None
    return out


def _nanmean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 6) if values.size else None


# settings outside the key that change what a run computes
RUN_SETTINGS = (
    "max_steps",
    "batch_size",
    "lr",
    "weight_decay",
    "eval_every",
    "patience",
    "augment",
)


def _check_same_settings(path: Path, config: TrainConfig, what: str, fix: str) -> None:
    """Refuse a finished or resumed key whose stored settings differ from ``config``."""
    try:
        saved = rundir.read_json(path)
    except (OSError, ValueError):
        return
    wanted = asdict(config)
    differ = [
        f"{k} {saved[k]} (asked {wanted[k]})"
        for k in RUN_SETTINGS
        if k in saved and saved[k] != wanted[k]
    ]
    if differ:
        raise InputError(
            f"{config.key} {what} with other settings: {', '.join(differ)}; {fix} to "
            "train with the new ones",
            path.parent,
        )


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with rundir.atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[UNet, dict]:
    """Load a trained model from ``models/<key>/`` or its ``model.pt``.

    Returns the network in eval mode and the run's config. The file is read with
    ``torch.load(weights_only=True)``, so a file holding arbitrary pickled objects is
    refused rather than executed.
    """
    path = Path(path)
    if path.is_dir():
        path = path / rundir.MODEL_FILES["model"]
    if not path.is_file():
        raise InputError("no such model file", path)
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        raise InputError(
            "not an echoscale model: the file is damaged or holds something other "
            "than tensors and plain data",
            path,
        ) from err
    if not isinstance(payload, dict) or not {"state_dict", "model"} <= set(payload):
        raise InputError(
            "not an echoscale model: expected a dict with state_dict and model", path
        )
    try:
        model = UNet(**payload["model"])
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError) as err:
        raise InputError(f"weights do not fit the network: {err}", path) from err
    return model.to(device).eval(), payload.get("config", {})


def train(
    run: str | Path, config: TrainConfig, *, force: bool = False, resume: bool = False
) -> dict[str, Any]:
    """Train one network and evaluate its best-validation checkpoint on the test set.

    Parameters
    ----------
    run : str or Path
        A run directory holding a prepared ``dataset/``.
    config : TrainConfig
    force : bool
        Retrain a key that has finished.
    resume : bool
        Continue an interrupted run from its last checkpoint.

    Returns
    -------
    dict
        The contents of ``metrics.json``.
    """
    config.check()
    paths = rundir.model_paths(run, config.key)
    if paths["metrics"].is_file() and not force:
        _check_same_settings(paths["config"], config, "is trained already", "--force")
        log.info("%s is trained already (--force retrains)", config.key)
        return rundir.read_json(paths["metrics"])
    if resume and paths["checkpoint"].is_file():
        _check_same_settings(paths["config"], config, "was started", "drop --resume")
    data = load_dataset(run)
    size = tuple(config.size or data.images.shape[1:])
    check_size(size, config.depth)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)

    patients = set(select_training_patients(data.manifest, config.fraction))
    split = _Split(
        train=np.array(
            [i for i, r in enumerate(data.samples) if r["patient"] in patients]
        ),
        val=data.indices("val"),
        test=data.indices("test"),
        n_patients=len(patients),
    )
    if not len(split.val) or not len(split.test):
        raise InputError("the dataset has no validation or no test samples", data.root)

    paths["config"].parent.mkdir(parents=True, exist_ok=True)
    with _log_file(paths["log"]):
        return _train(run, config, data, size, device, precision, split, paths, resume)


@contextlib.contextmanager
def _log_file(path: Path) -> Iterator[None]:
    """Append this module's progress lines, timestamped, to ``path`` meanwhile.

    The file gets every progress line whatever the console shows.
    """
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    handler.setLevel(logging.INFO)
    level = log.level
    log.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()


def _train(
    run: str | Path,
    config: TrainConfig,
    data: Dataset,
    size: tuple[int, int],
    device: torch.device,
    precision: str,
    split: _Split,
    paths: dict[str, Path],
    resume: bool,
) -> dict[str, Any]:
    torch.manual_seed(config.seed)
    n_classes = len(data.manifest["classes"])
    model = UNet(
        in_channels=1, out_channels=n_classes, width=config.width, depth=config.depth
    )
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    state, best_weights = _State(), None
    if resume and paths["checkpoint"].is_file():
        try:
            saved = torch.load(
                paths["checkpoint"], map_location=device, weights_only=True
            )
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
            raise InputError(
                "the checkpoint is damaged; rerun without --resume to start afresh",
                paths["checkpoint"],
            ) from err
        model.load_state_dict(saved["state_dict"])
        optimizer.load_state_dict(saved["optimizer"])
        best_weights = saved["best_state_dict"]
        state = _State(**saved["state"])
        log.info("%s: resuming from step %d", config.key, state.step)
    else:
        if resume:
            log.info("%s: no checkpoint to resume from; starting afresh", config.key)
        elif paths["checkpoint"].is_file():
            log.warning(
                "%s: starting afresh; --resume would have continued the "
                "interrupted run",
                config.key,
            )
        # a fresh start must not leave an older result looking finished
        for role in ("metrics", "model", "history", "checkpoint"):
            paths[role].unlink(missing_ok=True)
    record = {
        **asdict(config),
        "key": config.key,
        "size": list(size),
        "classes": list(data.manifest["classes"]),
        "labels": dict(data.manifest["labels"]),
        "device": str(device),
        "precision": precision,
        "echoscale_version": __version__,
    }
    rundir.write_json(paths["config"], record)

    batches = _Batches(data, size, device)
    val_ref = batches.get(split.val)[1].cpu().numpy()  # read once, scored every check
    started = time.perf_counter() - state.seconds
    running = []
    while state.step < config.max_steps and state.bad_evals < config.patience:
        state.step += 1
        rng = np.random.default_rng([config.seed, state.step])
        pick = rng.choice(
            split.train, config.batch_size, replace=len(split.train) < config.batch_size
        )
        images, masks = batches.get(pick)
        if config.augment:
            gen = torch.Generator().manual_seed(config.seed * 1_000_003 + state.step)
            images, masks = augment(images, masks, gen)
            images = images.contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(state.step, config)
        with _autocast(device, precision):
            logits = model(images)
        loss = segmentation_loss(logits, masks).mean()
        if not torch.isfinite(loss):
            raise InputError(
                f"{config.key}: training diverged (the loss is not finite at step "
                f"{state.step}); lower --lr (now {config.lr:g})"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        if state.step % config.eval_every and state.step != config.max_steps:
            continue
        val_loss, val_pred = evaluate(
            model, batches, split.val, precision, config.batch_size
        )
        row = {
            "step": state.step,
            "lr": f"{_lr_at(state.step, config):.3g}",
            "train_loss": f"{np.mean(running):.5f}",
            "val_loss": f"{val_loss.mean():.5f}",
            "val_dice": f"{_mean_dice(val_pred, val_ref, n_classes):.4f}",
            "seconds": f"{time.perf_counter() - started:.1f}",
        }
        running = []
        state.history.append(row)
        if val_loss.mean() < state.best_val:
            state.best_val, state.best_step, state.bad_evals = (
                float(val_loss.mean()),
                state.step,
                0,
            )
            best_weights = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }
        else:
            state.bad_evals += 1
        log.info(
            "%s step %d  train %s  val %s  dice %s  %ss",
            config.key,
            state.step,
            row["train_loss"],
            row["val_loss"],
            row["val_dice"],
            row["seconds"],
        )
        state.seconds = time.perf_counter() - started
        rundir.write_csv(paths["history"], state.history, HISTORY_COLUMNS)
        _save_checkpoint(
            paths["checkpoint"],
            {
                "state_dict": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_state_dict": best_weights,
                "state": asdict(state),
            },
        )

    model.load_state_dict(best_weights)
    test_loss, test_pred = evaluate(
        model, batches, split.test, precision, config.batch_size
    )
    scores = summarize_scores(data, split.test, test_pred, size)
    flops = forward_flops(model, size)
    result = {
        "key": config.key,
        "width": config.width,
        "depth": config.depth,
        "fraction": config.fraction,
        "seed": config.seed,
        "parameters": count_parameters(model),
        "forward_flops": flops,
        "train_flops": 3 * flops * config.batch_size * state.step,
        "train_patients": split.n_patients,
        "train_images": int(len(split.train)),
        "val_patients": len(data.patients("val")),
        "test_patients": len(data.patients("test")),
        "test_images": int(len(split.test)),
        "steps": state.step,
        "best_step": state.best_step,
        "stopped_early": state.step < config.max_steps,
        "val_loss": round(state.best_val, 6),
        "test_loss": round(float(test_loss.mean()), 6),
        **scores,
        "wall_seconds": round(time.perf_counter() - started, 2),
        "device": str(device),
        "precision": precision,
        "size": list(size),
        "torch_version": torch.__version__,
        "echoscale_version": __version__,
    }
    cpu_weights = {k: v.cpu() for k, v in best_weights.items()}
    _save_checkpoint(
        paths["model"],
        {"state_dict": cpu_weights, "model": model.config(), "config": record},
    )
    rundir.write_json(paths["metrics"], result)
    paths["checkpoint"].unlink(missing_ok=True)
    log.info(
        "%s done: test loss %.4f, %d steps, %.0fs",
        config.key,
        result["test_loss"],
        state.step,
        result["wall_seconds"],
    )
    return result
