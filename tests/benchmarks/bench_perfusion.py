"""Accuracy and speed of ``perfuse`` on the phantom's contrast loops (issue 6, part 3).

Everything runs on the CPU from fixed seeds, in one process:

* **True masks.** A 12-case phantom (seed 0, default noise and size); each case is
  perfused with its own ``masks.*`` and every segment's A, beta and A*beta after
  every flash is compared with ``ground_truth.json`` (a curve per segment per
  flash). The same curves measured on the phantom's own segment labels
  (``segments.*``, on the frames perfuse used, fitted as perfuse fits) tell the
  error of perfuse's six regions from the noise of the loop itself.
* **Predicted masks.** The cases are prepared at 96 x 112 (1 validation and 4 test
  cases), a width-8 depth-3 U-Net is trained for 600 steps, and each test case is
  segmented (``keep_largest``) and perfused with the predicted masks, eroded by 0,
  1 and 2 mm: the LV cavity is about 16 times brighter than the myocardium, so a
  mask that spills into it inflates A.
* **Speed.** Seconds per loop of ``perfuse`` (no figure; one run with the figure
  too), each against reading the loop with :func:`echoscale.images.read_image`;
  curves per second of :func:`echoscale.perfusion.fit_replenishment` on synthetic
  curves against one plain ``scipy.optimize.curve_fit`` call started at the true
  values; frames per second of ``segment`` against reading the same loops.

Relative errors are ``measured / truth - 1``. A curve is *within* a tolerance when
both its A and its beta are; a failed fit counts as outside, and a flash that has no
masked frame after it (a case labelled on its first part only) is left out. Errors
are over the successful fits, *flagged* ones included (fitted with a warning, such
as a curve that ends before its plateau). The Dice of the predicted masks is given
on the labelled frames, on every frame (against ``segments.*``) and in the first
second after each flash, when the myocardium is darkest.

The issue's targets (A and beta within 5 % for every segment with the true masks,
10 % with predicted masks) are judged per segment position over the cases: the rms
of its A and of its beta errors (:func:`_by_segment`), beside its median (the bias)
and its worst curve.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import optimize

from echoscale import images, metrics, perfusion, regions, rundir
from echoscale.ceus import prepare_ceus
from echoscale.dataset import load_dataset, source_folders
from echoscale.perfuse import PERFUSION_CSV, TIC, perfuse
from echoscale.phantom import make_phantom
from echoscale.segment import segment_inputs
from echoscale.train import TrainConfig, train

SEED = 0
N_CASES = 12
SIZE = (96, 112)
VAL, TEST = 0.09, 0.33  # of 12 cases: 1 validation, 4 test
TRAINING = TrainConfig(
    width=8, depth=3, max_steps=600, lr=1e-2, batch_size=8, eval_every=100, device="cpu"
)
ERODE_MM = (0.0, 1.0, 2.0)
TOLERANCES = (0.05, 0.10)
N_SYNTHETIC = 200  # synthetic curves timed
PARAMETERS = ("A", "beta", "A_beta")
AFTER_FLASH_S = 1.0  # the Dice of the frames this soon after a flash is reported


# --- accuracy ---------------------------------------------------------------------


def _number(value: Any) -> float:
    """A CSV cell or a number as float; an empty cell (nan written) as nan."""
    return math.nan if value in ("", None) else float(value)


def _case_files(case: Path) -> dict[str, Path]:
    """The cine, masks and segments files of a phantom case folder."""
    return {
        stem: sorted(case.glob(f"{stem}.*"))[0]
        for stem in ("cine", "masks", "segments")
    }


def _compare(case: str, rows: list[dict[str, Any]], truth: dict) -> list[dict]:
    """One record per segment-curve of ``perfusion.csv``-like rows, with its errors.

    Rows hold ``region``, ``flash``, ``n_frames``, ``success`` and the fit's values,
    as CSV text or as numbers.
    """
    segments = {s["name"]: s for s in truth["segments"]}
    curves = []
    for row in rows:
        seg = segments.get(row["region"])
        if seg is None:  # the whole myocardium has no single truth
            continue
        record = {
            "case": case,
            "region": row["region"],
            # the view-neutral position (wall1_basal ... wall2_basal)
            "position": regions.NEUTRAL_NAMES[seg["label"] - 1],
            "flash": int(row["flash"]),
            "n_frames": int(row["n_frames"]),
            "success": str(row["success"]) == "True",
            # fitted, but with a warning (no plateau, no covariance)
            "flagged": str(row["success"]) == "True" and row["message"] != "ok",
        }
        for name in PARAMETERS:
            record[f"{name}_error"] = _number(row[name]) / seg[name] - 1
        # the fit's own standard errors, relative to the truth
        record["A_se"] = _number(row["se_A"]) / seg["A"]
        record["beta_se"] = _number(row["se_beta"]) / seg["beta"]
        curves.append(record)
    return curves


def _own_segments(case: Path, out: Path, truth: dict) -> list[dict]:
    """The curves of the phantom's own segment labels on the frames perfuse used.

    Linearised, censored at the ceiling and fitted as :func:`perfuse` does, so any
    difference from perfuse's errors comes from its regions.
    """
    files = _case_files(case)
    cine = images.read_image(files["cine"]).array
    labels = images.read_image(files["segments"]).array
    tic = rundir.read_csv(out / TIC)
    # frames before the first flash have means but belong to no curve
    used = [r for r in tic if r["myocardium"] != "" and r["flash"] != ""]
    frames = np.array([int(r["frame"]) for r in used])
    flash = np.array([int(r["flash"]) for r in used])
    t = np.array([float(r["t_s"]) for r in used])
    dr = truth["dynamic_range_db"]
    power = perfusion.linearise(cine[frames], dr, truth["v_max"])
    ceiling = perfusion.saturation_ceiling(cine)
    clipped = top = None
    if ceiling is not None:
        clipped = cine[frames] >= ceiling
        top = float(perfusion.linearise(np.array([ceiling]), dr, truth["v_max"])[0])
    curves = perfusion.time_intensity(power, labels[frames], 6, clipped, top)
    rows = []
    for k in np.unique(flash):
        inside = flash == k
        for seg in truth["segments"]:
            r = seg["label"] - 1
            y, n = curves.mean[inside, r], curves.pixels[inside, r]
            good = np.isfinite(y)
            fit = perfusion.fit_replenishment(
                t[inside][good],
                y[good],
                1 / np.sqrt(np.maximum(n[good], 1)),
                proportional=True,
            )
            rows.append({"region": seg["name"], "flash": k, **fit.to_dict()})
    return _compare(case.name, rows, truth)


def _summary(curves: list[dict]) -> dict[str, Any]:
    """Error statistics of segment-curves; errors over the successful fits."""
    measurable = [c for c in curves if c["n_frames"] >= perfusion.MIN_POINTS]
    fitted = [c for c in measurable if c["success"]]
    out: dict[str, Any] = {
        "curves": len(measurable),
        "fitted": len(fitted),
        "flagged": sum(c["flagged"] for c in fitted),
        "no_masked_frames": len(curves) - len(measurable),
    }
    if not fitted:
        return out
    for name in PARAMETERS:
        err = np.array([c[f"{name}_error"] for c in fitted])
        out[f"{name}_max_abs"] = round(float(np.max(np.abs(err))), 4)
        out[f"{name}_rms"] = round(float(np.sqrt(np.mean(err**2))), 4)
        out[f"{name}_median"] = round(float(np.median(err)), 4)
    for tol in TOLERANCES:
        inside = [
            abs(c["A_error"]) <= tol and abs(c["beta_error"]) <= tol for c in fitted
        ]
        out[f"within_{round(tol * 100)}pct"] = round(sum(inside) / len(measurable), 4)
    # the fit's own standard error of beta: errors near it are the loop's noise
    se = np.array([c["beta_se"] for c in fitted])
    out["beta_se_median"] = round(float(np.nanmedian(se)), 4)
    # Errors in units of those standard errors: an SD near 1 says the errors are
    # the noise the fit expects, not a bias. A curve whose A or beta has a standard
    # error over 2.5 % cannot be held within 5 % (2 SE) by any fit of its data.
    for name in ("A", "beta"):
        err = np.array([c[f"{name}_error"] for c in fitted])
        se = np.array([c[f"{name}_se"] for c in fitted])
        z = err[np.isfinite(se) & (se > 0)] / se[np.isfinite(se) & (se > 0)]
        out[f"{name}_z_sd"] = round(float(np.std(z)), 3) if z.size else None
    noisy = [max(c["A_se"], c["beta_se"]) > TOLERANCES[0] / 2 for c in fitted]
    out["se_over_half_5pct"] = round(sum(noisy) / len(fitted), 4)
    worst = max(fitted, key=lambda c: max(abs(c["A_error"]), abs(c["beta_error"])))
    out["worst"] = {
        "case": worst["case"],
        "region": worst["region"],
        "flash": worst["flash"],
        "A_error": round(worst["A_error"], 4),
        "beta_error": round(worst["beta_error"], 4),
    }
    return out


def _by_segment(curves: list[dict], target: float) -> dict[str, Any]:
    """Accuracy per segment position over all cases: bias, rms and worst error.

    The accuracy target reads per segment: a position meets it when the rms of its
    A and of its beta errors over the cases are both within ``target`` (single
    curves scatter about the truth by their fit's standard error, up to twice the
    rms). Failed fits count against the position as ``failed``.
    """
    out: dict[str, Any] = {"target": target, "positions": {}}
    for position in regions.NEUTRAL_NAMES:
        mine = [c for c in curves if c["position"] == position]
        mine = [c for c in mine if c["n_frames"] >= perfusion.MIN_POINTS]
        fitted = [c for c in mine if c["success"]]
        row: dict[str, Any] = {"curves": len(mine), "failed": len(mine) - len(fitted)}
        for name in ("A", "beta"):
            err = np.array([c[f"{name}_error"] for c in fitted])
            if err.size:
                row[f"{name}_median"] = round(float(np.median(err)), 4)
                row[f"{name}_rms"] = round(float(np.sqrt(np.mean(err**2))), 4)
                row[f"{name}_max_abs"] = round(float(np.max(np.abs(err))), 4)
        row["meets"] = bool(
            fitted
            and not row["failed"]
            and max(row["A_rms"], row["beta_rms"]) <= target
        )
        out["positions"][position] = row
    out["every_segment_meets"] = all(r["meets"] for r in out["positions"].values())
    return out


def _perfuse_case(
    case: Path, masks: Path, out: Path, erode_mm: float = 0.0
) -> tuple[list[dict], float]:
    """Perfuse one case; return its segment-curves and the seconds it took."""
    truth = rundir.read_json(case / "ground_truth.json")
    start = time.perf_counter()
    perfuse(_case_files(case)["cine"], masks, out, erode_mm=erode_mm, figure=False)
    seconds = time.perf_counter() - start
    return _compare(case.name, rundir.read_csv(out / PERFUSION_CSV), truth), seconds


def _every_frame(case: Path, out: Path) -> list[dict]:
    """Perfuse with the true myocardium on every frame (the union of ``segments.*``).

    ``masks.*`` carries the myocardium only on the frames a reader labelled; the
    phantom's segment labels hold it on every frame, so these curves use every
    frame of the loop.
    """
    files = _case_files(case)
    cine = images.read_image(files["cine"])
    labels = images.read_image(files["segments"]).array
    out.mkdir(parents=True, exist_ok=True)
    masks = out / "every_frame.tif"
    images.write_image(
        masks, (labels > 0).astype(np.uint8), cine.spacing, cine.frame_times
    )
    curves, _ = _perfuse_case(case, masks, out / "perfusion")
    return curves


def _true_masks(cases: list[Path], out: Path) -> dict[str, Any]:
    """Every case with its own masks, with the own-segment check and the timings."""
    per_case, all_curves, own_curves, every_curves, timing = [], [], [], [], []
    for case in cases:
        truth = rundir.read_json(case / "ground_truth.json")
        files = _case_files(case)
        start = time.perf_counter()
        n_frames = images.read_image(files["cine"]).n_frames
        read_s = time.perf_counter() - start
        curves, seconds = _perfuse_case(case, files["masks"], out / case.name)
        own = _own_segments(case, out / case.name, truth)
        every = _every_frame(case, out / "every_frame" / case.name)
        all_curves += curves
        own_curves += own
        every_curves += every
        timing.append({"frames": n_frames, "read_s": read_s, "perfuse_s": seconds})
        per_case.append(
            {
                "case": case.name,
                "view": truth["view"],
                "labelling": truth["labelling"],
                "saturated": truth["saturation_level"] is not None,
                "flashes": len(truth["flashes"]),
                **_summary(curves),
                "own_segments": _summary(own),
                "every_frame": _summary(every),
            }
        )
    return {
        "cases": per_case,
        "all": _summary(all_curves),
        "own_segments_all": _summary(own_curves),
        "every_frame_all": _summary(every_curves),
        "by_segment": {
            "every_frame": _by_segment(every_curves, TOLERANCES[0]),
            "labelled_frames": _by_segment(all_curves, TOLERANCES[0]),
        },
        "curves": all_curves,
        "timing": timing,
    }


def _dice(case: Path, predicted: Path, truth: dict) -> dict[str, float]:
    """Mean per-frame myocardial Dice: labelled frames, every frame, after a flash.

    The reference on every frame is the phantom's ``segments.*`` (the masks are
    its labelled frames). ``after flash`` is the first second after each flash,
    when the myocardium is darkest.
    """
    pred = images.read_image(predicted).array > 0
    ref = images.read_image(_case_files(case)["segments"]).array > 0
    scores = np.array([metrics.dice(p, r) for p, r in zip(pred, ref, strict=True)])
    times = np.asarray(rundir.read_json(case / "case.json")["frame_times"])
    after = np.zeros(len(times), bool)
    for flash in truth["flashes"]:
        after |= (times >= flash["t0_s"]) & (times < flash["t0_s"] + AFTER_FLASH_S)
    return {
        "dice_labelled": round(float(np.nanmean(scores[truth["labelled_frames"]])), 4),
        "dice_all_frames": round(float(np.nanmean(scores)), 4),
        "dice_after_flash": round(float(np.nanmean(scores[after])), 4),
    }


def _predicted_masks(src: Path, tmp: Path, true_curves: list[dict]) -> dict[str, Any]:
    """Prepare, train, segment the test cases and perfuse them with each erosion.

    ``true_curves`` (the true-mask results) give the same test cases' errors with
    their true masks, for comparison.
    """
    run = tmp / "run"
    start = time.perf_counter()
    prepare_ceus(src, run, size=SIZE, val=VAL, test=TEST, seed=SEED)
    prepare_s = time.perf_counter() - start
    start = time.perf_counter()
    trained = train(run, TRAINING)
    train_s = time.perf_counter() - start
    tests = source_folders(run, "test")
    cines = [_case_files(case)["cine"] for case in tests]

    start = time.perf_counter()
    frames = sum(images.read_image(c).n_frames for c in cines)
    read_s = time.perf_counter() - start
    seg_out = tmp / "segment"
    model = rundir.model_dir(run, TRAINING.key)
    start = time.perf_counter()
    segment_inputs(model, cines, seg_out, keep_largest=True, device="cpu")
    segment_s = time.perf_counter() - start

    truths = {c.name: rundir.read_json(c / "ground_truth.json") for c in tests}
    dice = {
        c.name: _dice(c, seg_out / c.name / "masks.tif", truths[c.name]) for c in tests
    }
    settings = []
    for erode in ERODE_MM:
        per_case, everything = [], []
        for case in tests:
            out = tmp / f"perfuse-erode{erode:g}" / case.name
            curves, _ = _perfuse_case(case, seg_out / case.name, out, erode)
            everything += curves
            per_case.append({"case": case.name, **dice[case.name], **_summary(curves)})
        settings.append(
            {
                "erode_mm": erode,
                "cases": per_case,
                "all": _summary(everything),
                "by_segment": _by_segment(everything, TOLERANCES[1]),
            }
        )
    names = {c.name for c in tests}
    return {
        "training": {
            **{k: getattr(TRAINING, k) for k in ("width", "depth", "max_steps", "lr")},
            "size": list(SIZE),
            "batch_size": TRAINING.batch_size,
            "train_cases": len(load_dataset(run).patients("train")),
            "test_cases": sorted(names),
            "steps": trained["steps"],
            "best_step": trained["best_step"],
            "test_dice_myo": trained["dice"]["myo"]["all"],
            "prepare_s": round(prepare_s, 2),
            "train_s": round(train_s, 2),
        },
        "true_masks_same_cases": _summary(
            [c for c in true_curves if c["case"] in names]
        ),
        "erode": settings,
        "segment_timing": {"frames": frames, "read_s": read_s, "segment_s": segment_s},
    }


# --- speed ------------------------------------------------------------------------


def _fit_speed() -> dict[str, Any]:
    """fit_replenishment on synthetic curves against one plain curve_fit call each.

    Curves like the phantom's: 150 frames at 20 fps, A 100-3000, beta 0.2-2 1/s, C
    5-50, multiplicative Gaussian noise of 5% (the mean of some 400 speckle pixels).
    """
    rng = np.random.default_rng(SEED)
    t = np.arange(150) / 20.0
    truths = np.column_stack(
        [rng.uniform(100, 3000, N_SYNTHETIC), rng.uniform(0.2, 2, N_SYNTHETIC),
         rng.uniform(5, 50, N_SYNTHETIC)]
    )  # fmt: skip
    curves = [
        perfusion.replenishment(t, *p) * (1 + 0.05 * rng.standard_normal(t.size))
        for p in truths
    ]
    sigma = np.ones_like(t)
    start = time.perf_counter()
    # as perfuse calls it: weights proportional to the intensity (speckle)
    fits = [perfusion.fit_replenishment(t, y, sigma, proportional=True) for y in curves]
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    for y, p in zip(curves, truths, strict=True):
        optimize.curve_fit(perfusion.replenishment, t, y, p0=p)
    plain_s = time.perf_counter() - start
    beta = np.array([f.beta for f in fits]) / truths[:, 1] - 1
    return {
        "curves": N_SYNTHETIC,
        "points_per_curve": int(t.size),
        "fit_curves_per_s": round(N_SYNTHETIC / fit_s, 1),
        "plain_curve_fit_per_s": round(N_SYNTHETIC / plain_s, 1),
        "fit_time_vs_plain_curve_fit": round(fit_s / plain_s, 2),
        "success_fraction": round(float(np.mean([f.success for f in fits])), 4),
        "beta_rms_error": round(float(np.sqrt(np.nanmean(beta**2))), 4),
    }


def _speed(true: dict, predicted: dict, figure_s: float) -> dict[str, Any]:
    timing = true["timing"]
    perfuse_s = float(np.mean([r["perfuse_s"] for r in timing]))
    read_s = float(np.mean([r["read_s"] for r in timing]))
    seg = predicted["segment_timing"]
    return {
        "perfuse_s_per_loop": round(perfuse_s, 3),
        "perfuse_frames_per_loop": round(
            float(np.mean([r["frames"] for r in timing])), 1
        ),
        "perfuse_with_figure_s": round(figure_s, 3),
        "read_s_per_loop": round(read_s, 4),
        "perfuse_time_vs_read": round(perfuse_s / read_s, 1),
        "segment_frames": seg["frames"],
        "segment_frames_per_s": round(seg["frames"] / seg["segment_s"], 1),
        "read_frames_per_s": round(seg["frames"] / seg["read_s"], 1),
        "segment_time_vs_read": round(seg["segment_s"] / seg["read_s"], 1),
        **_fit_speed(),
    }


def run() -> dict:
    """Run the accuracy and speed measurements; return the report section."""
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_phantom(tmp / "phantom", patients=1, ceus_cases=N_CASES, seed=SEED)
        src = tmp / "phantom" / "ceus"
        cases = sorted(p for p in src.iterdir() if p.is_dir())
        true = _true_masks(cases, tmp / "true")
        start = time.perf_counter()
        files = _case_files(cases[0])
        perfuse(files["cine"], files["masks"], tmp / "figure", figure=True)
        figure_s = time.perf_counter() - start
        predicted = _predicted_masks(src, tmp, true.pop("curves"))
        speed = _speed(true, predicted, figure_s)
    true.pop("timing")
    predicted.pop("segment_timing")
    return {
        "what": (
            f"perfuse on a {N_CASES}-case phantom (seed {SEED}): relative errors of "
            "every segment's A, beta, A*beta per flash against ground_truth.json, "
            "with the true masks and with masks from a U-Net trained on the phantom "
            "(eroded 0/1/2 mm); speed against reading the loop (read_image) and "
            "against one plain curve_fit per curve; CPU, shared cores"
        ),
        "threads": torch.get_num_threads(),
        "targets": {"true_masks": 0.05, "predicted_masks": 0.10},
        "true_masks": true,
        "predicted_masks": predicted,
        "speed": speed,
        "total_s": round(time.perf_counter() - started, 1),
    }


# --- report -----------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _error_cells(s: dict) -> str:
    flagged = f" ({s['flagged']} flagged)" if s["flagged"] else ""
    cells = [f"{s['fitted']}/{s['curves']}{flagged}"]
    for name in PARAMETERS:
        cells += [_pct(s.get(f"{name}_max_abs")), _pct(s.get(f"{name}_rms"))]
    cells += [_pct(s.get("within_5pct")), _pct(s.get("within_10pct"))]
    return " | ".join(cells)


_ERROR_HEADER = (
    "fitted | A max % | A rms % | beta max % | beta rms % | AB max % | AB rms % "
    "| within 5 % | within 10 %"
)


def _segment_table(title: str, by: dict) -> list[str]:
    """Markdown rows of :func:`_by_segment`: one per segment position."""
    met = "yes" if by["every_segment_meets"] else "no"
    lines = [
        f"{title} (target: rms of A and beta within {_pct(by['target'])} % per "
        f"segment; met by every segment: {met}):",
        "",
        "| segment | curves | failed | A median % | A rms % | A max % "
        "| beta median % | beta rms % | beta max % | meets |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for position, r in by["positions"].items():
        cells = [position, str(r["curves"]), str(r["failed"])]
        for name in ("A", "beta"):
            cells += [_pct(r.get(f"{name}_{k}")) for k in ("median", "rms", "max_abs")]
        cells.append("yes" if r["meets"] else "no")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(section: dict) -> str:
    """Markdown tables: true masks, predicted masks per erosion, speed."""
    true, pred, speed = (
        section["true_masks"], section["predicted_masks"], section["speed"]
    )  # fmt: skip
    targets = section["targets"]
    lines = [
        f"Targets: A and beta within {_pct(targets['true_masks'])} % for every "
        f"segment with the true masks, within {_pct(targets['predicted_masks'])} % "
        "with predicted masks.",
        "",
        "True masks (A, beta, A*beta relative errors in %; within: A and beta "
        "both; `own segments`: the phantom's segment labels on the same frames; "
        "`every frame`: the true myocardium on every frame, not only the labelled "
        "ones):",
        "",
        f"| case | view | labelling | saturated | {_ERROR_HEADER} |",
        "|---|---|---|---|" + "---|" * 9,
    ]
    for c in true["cases"]:
        lines.append(
            f"| {c['case']} | {c['view']} | {c['labelling']} | "
            f"{'yes' if c['saturated'] else 'no'} | {_error_cells(c)} |"
        )
    lines.append(f"| **all** |  |  |  | {_error_cells(true['all'])} |")
    lines.append(
        f"| own segments |  |  |  | {_error_cells(true['own_segments_all'])} |"
    )
    every = true["every_frame_all"]
    lines.append(f"| every frame |  |  |  | {_error_cells(every)} |")
    worst = true["all"]["worst"]
    lines += [
        "",
        f"Worst curve: {worst['case']} {worst['region']} flash {worst['flash']} "
        f"(A {_pct(worst['A_error'])} %, beta {_pct(worst['beta_error'])} %); "
        f"median standard error of beta from the fits "
        f"{_pct(true['all']['beta_se_median'])} %.",
        "",
        "Errors in units of the fits' own standard errors have SD "
        f"{true['all']['A_z_sd']} (A) and {true['all']['beta_z_sd']} (beta) with "
        f"the labelled frames, {every['A_z_sd']} and {every['beta_z_sd']} on every "
        "frame (1 = the errors are the noise the fit expects). The standard error "
        "of A or beta exceeds 2.5 % (so 5 % is under 2 SE) for "
        f"{_pct(true['all']['se_over_half_5pct'])} % of the curves with the "
        f"labelled frames and {_pct(every['se_over_half_5pct'])} % on every frame.",
        "",
    ]
    by = true["by_segment"]
    lines += _segment_table("True masks on every frame, per segment", by["every_frame"])
    lines += _segment_table(
        "True masks on the labelled frames, per segment", by["labelled_frames"]
    )
    t = pred["training"]
    lines += [
        f"Predicted masks: U-Net w{t['width']} d{t['depth']} at {t['size'][0]}x"
        f"{t['size'][1]}, {t['steps']} steps (best {t['best_step']}), "
        f"{t['train_cases']} training cases, test Dice {t['test_dice_myo']:.3f}; "
        f"prepare {t['prepare_s']} s, train {t['train_s']} s.",
        "",
    ]
    for setting in pred["erode"]:
        lines += [
            f"erode {setting['erode_mm']:g} mm:",
            "",
            f"| case | Dice labelled | Dice all | Dice after flash | {_ERROR_HEADER} |",
            "|---|---|---|---|" + "---|" * 9,
        ]
        for c in setting["cases"]:
            lines.append(
                f"| {c['case']} | {c['dice_labelled']:.3f} | "
                f"{c['dice_all_frames']:.3f} | {c['dice_after_flash']:.3f} | "
                f"{_error_cells(c)} |"
            )
        lines += [
            f"| **all** |  |  |  | {_error_cells(setting['all'])} |",
            f"| true masks, same cases |  |  |  | "
            f"{_error_cells(pred['true_masks_same_cases'])} |",
            "",
        ]
        lines += _segment_table(
            f"erode {setting['erode_mm']:g} mm, per segment", setting["by_segment"]
        )
    lines += [
        "| speed | value | baseline | ratio |",
        "|---|---|---|---|",
        f"| perfuse s/loop ({speed['perfuse_frames_per_loop']} frames, no figure) "
        f"| {speed['perfuse_s_per_loop']} | read {speed['read_s_per_loop']} s "
        f"| {speed['perfuse_time_vs_read']} |",
        f"| perfuse with figure, one loop s | {speed['perfuse_with_figure_s']} |  |  |",
        f"| fit_replenishment curves/s ({speed['points_per_curve']} points) "
        f"| {speed['fit_curves_per_s']} | plain curve_fit from the truth "
        f"{speed['plain_curve_fit_per_s']}/s "
        f"| {speed['fit_time_vs_plain_curve_fit']} |",
        f"| segment frames/s ({speed['segment_frames']} frames) "
        f"| {speed['segment_frames_per_s']} | read {speed['read_frames_per_s']}/s "
        f"| {speed['segment_time_vs_read']} |",
    ]
    return "\n".join(lines) + "\n"
