"""``report``: the short account of a whole study, read from its run directory.

A study directory holds the stages in fixed places (``make demo`` and ``make study``
write them so)::

    STUDY/camus/                  prepared CAMUS run: sweep, law, selection, models
    STUDY/compare/camus/          the chosen network on the test patients
    STUDY/ceus/                   prepared contrast run and its network
    STUDY/compare/contrast/       contrast masks: predicted against manual
    STUDY/compare/perfusion/      perfusion from predicted against manual masks

The report says which network size the law chose and how it compares with the
largest, the predicted against the measured full-data loss, the law's backtest, Dice
per structure, and the perfusion agreement with its equivalence decision. Parts that
a study did not run are named as missing, never filled in. ``STUDY/report.md`` and
``STUDY/report.json`` hold what is printed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from echoscale import laws, rundir
from echoscale.errors import InputError

CAMUS_RUN = "camus"
CEUS_RUN = "ceus"
COMPARE_CAMUS = Path("compare") / "camus"
COMPARE_CONTRAST = Path("compare") / "contrast"
COMPARE_PERFUSION = Path("compare") / "perfusion"
REPORT_MD = "report.md"
REPORT_JSON = "report.json"
PARAMETERS = {"A": "A (blood volume)", "beta": "beta (1/s)", "A_beta": "A*beta (flow)"}


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return rundir.read_json(path)
    except ValueError as err:
        raise InputError(f"not a JSON file ({err})", path) from err


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def law_part(run: Path) -> dict[str, Any] | None:
    """The chosen size, its predicted and measured loss, and the law's backtest."""
    selection = _read(run / rundir.SELECTION)
    law = _read(run / rundir.LAW)
    if selection is None or law is None or selection.get("choice") is None:
        return None
    choice = selection["choice"]
    ranking = {row["size"]: row for row in selection["ranking"]}
    largest = max(ranking.values(), key=lambda row: row["N"])
    chosen = ranking[choice]
    basis = selection.get("basis", "law")
    # the laws the choice rested on: the transferred ones replace the run's own,
    # which a contrast sweep of two fractions was never meant to fit
    fits = laws.transferred(law) if basis == "transfer" else law.get("sizes", {})
    part: dict[str, Any] = {
        "choice": choice,
        "parameters": chosen["N"],
        "largest": largest["size"],
        "largest_parameters": largest["N"],
        "parameter_ratio": largest["N"] / chosen["N"],
        "target_D": selection["target_D"],
        "data_unit": selection["data_unit"],
        "metric": selection["metric"],
        "predicted": chosen["loss"],
        "predicted_interval": [chosen.get("lower"), chosen.get("upper")],
        "key": selection.get("key"),
        "reason": selection.get("reason"),
        "basis": basis,
        "measured_D": selection.get("measured_D"),
        "law_failures": {
            size: fit.get("message")
            for size, fit in fits.items()
            if not fit.get("success")
        },
    }
    moved = ((law.get("transfer") or {}).get("sizes") or {}).get(choice)
    if moved:
        part["transfer"] = {
            "source": law.get("transfer_from"),
            "fixed": moved.get("fixed"),
            "level_shift": moved.get("level_shift"),
            "bias": (moved.get("bias") or {}).get("mean"),
        }
    backtest = law.get("backtest", {}).get("sizes", {}).get(choice, {})
    if backtest:
        keep = ("held_out_D", "predicted", "measured", "rel_error", "inside")
        part["backtest"] = {
            "success": bool(backtest.get("success")) and "measured" in backtest,
            "message": backtest.get("message"),
            **{k: backtest.get(k) for k in keep},
        }
    metrics = (
        _read(rundir.model_paths(run, part["key"])["metrics"]) if part["key"] else None
    )
    if metrics is not None:
        part["measured"] = metrics.get(selection["metric"])
        part["dice"] = {k: v.get("all") for k, v in metrics.get("dice", {}).items()}
    return part


def dice_part(folder: Path) -> dict[str, Any] | None:
    """Dice per structure and phase from a masks comparison's summary."""
    summary = _read(folder / "summary.json")
    if summary is None or summary.get("kind") != "masks":
        return None
    table = {}
    for structure, phases in summary.get("structures", {}).items():
        table[structure] = {
            phase: {k: v["dice"].get(k) for k in ("mean", "sd", "n")}
            for phase, v in phases.items()
        }
    return {"matched": summary.get("matched"), "dice": table}


def perfusion_part(folder: Path) -> dict[str, Any] | None:
    """Agreement of the segments' A, beta and A*beta, and the TOST decisions."""
    summary = _read(folder / "summary.json")
    if summary is None or summary.get("kind") != "perfusion":
        return None
    groups = summary.get("groups", {})
    group = "segments" if "segments" in groups else "overall"
    part: dict[str, Any] = {
        "group": group,
        "used": summary.get("used"),
        "matched": summary.get("matched"),
        "excluded": summary.get("n_excluded"),
        "rows": {},
    }
    for name, result in groups.get(group, {}).items():
        ba, icc, tost = result["bland_altman"], result["icc_agreement"], result["tost"]
        mean = result.get("mean_b")
        part["rows"][name] = {
            "n": result["n"],
            "bias": ba.get("bias"),
            "bias_percent": 100 * ba["bias"] / mean
            if _finite(ba.get("bias")) and _finite(mean) and mean
            else None,
            "icc_agreement": icc.get("icc"),
            "decision": tost.get("decision"),
            "tost_p": tost.get("p"),
            "margin": tost.get("margin"),
        }
    return part


def build(study: str | Path) -> dict[str, Any]:
    """Gather the report of ``study`` (see the module docstring for its layout)."""
    study = Path(study)
    if not study.is_dir():
        raise InputError("no such study directory", study)
    parts = (CAMUS_RUN, CEUS_RUN, "compare")
    if not any((study / part).is_dir() for part in parts):
        raise InputError(
            "not a study directory: none of camus/, ceus/ or compare/ is there "
            "(make demo and make study write them)",
            study,
        )
    return {
        "study": str(study),
        "law": law_part(study / CAMUS_RUN),
        "contrast_law": law_part(study / CEUS_RUN),
        "segmentation": dice_part(study / COMPARE_CAMUS),
        "contrast_segmentation": dice_part(study / COMPARE_CONTRAST),
        "perfusion": perfusion_part(study / COMPARE_PERFUSION),
    }


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}g}" if _finite(value) else "n/a"


def _law_lines(
    law: dict[str, Any] | None, title: str = "Network size", run: str = CAMUS_RUN
) -> list[str]:
    if law is None:
        return [f"{title}: not chosen (no {run}/selection.json)."]
    lo, hi = law["predicted_interval"]
    band = f" [{_num(lo)}, {_num(hi)}]" if _finite(lo) and _finite(hi) else ""
    size = f"  {law['choice']}: {law['parameters']:,.0f} parameters, " + (
        "the largest size swept"
        if law["choice"] == law["largest"]
        else f"{law['parameter_ratio']:.3g}x fewer than the largest "
        f"({law['largest']}, {law['largest_parameters']:,.0f})"
    )
    if law.get("basis") == "measured":
        lines = [
            f"{title}: no law could be fitted, so chosen on the losses measured "
            f"at D = {law['measured_D']:g} {law['data_unit']}:",
            size,
            f"  {law['metric']} there {_num(law['predicted'])}{band}; on all the "
            f"data {_num(law.get('measured'))} ({law['key']})",
        ]
        lines += [f"  {s}: {m}" for s, m in law["law_failures"].items()]
        return lines
    how = "the law"
    if law.get("basis") == "transfer":
        how = "the transferred law (the source's exponents, this dataset's levels)"
    lines = [
        f"{title}, chosen by {how} for D = {law['target_D']:g} {law['data_unit']}:",
        size,
        f"  {law['metric']} on all the data: predicted {_num(law['predicted'])}{band}, "
        f"measured {_num(law.get('measured'))} ({law['key']})",
    ]
    moved = law.get("transfer")
    if moved and moved.get("bias") is not None:
        lines.append(
            f"  against the source law ({moved['source']}): measured minus "
            f"predicted {moved['bias']:+.3g} on average"
        )
    bt = law.get("backtest")
    if bt and law.get("basis") != "transfer":
        held = f"  backtest (refit without D = {_num(bt['held_out_D'])}): "
        if bt["success"]:
            lines.append(
                f"{held}predicted {_num(bt['predicted'])}, measured "
                f"{_num(bt['measured'])}, error {100 * bt['rel_error']:+.1f}%"
            )
        else:
            lines.append(f"{held}no fit ({bt['message']})")
    lines += [
        f"  {s}: not ranked, no law ({m})" for s, m in law["law_failures"].items()
    ]
    return lines


def _dice_lines(title: str, part: dict[str, Any] | None) -> list[str]:
    if part is None:
        return [f"{title}: not run."]
    lines = [f"{title} ({part['matched']} matched), Dice mean (SD):"]
    for structure, phases in part["dice"].items():
        shown = [
            f"{phase} {_num(v['mean'])} ({_num(v['sd'], 2)})"
            for phase, v in phases.items()
            if v["n"]
        ]
        lines.append(f"  {structure:<8} " + ", ".join(shown))
    return lines


def _perfusion_lines(part: dict[str, Any] | None) -> list[str]:
    if part is None:
        return ["Perfusion agreement: not run."]
    used = f"{part['used']} fits matched"
    if part.get("excluded"):
        used = (
            f"{part['used']} of {part['matched']} matched fits used, "
            f"{part['excluded']} failed on one side or both"
        )
    lines = [f"Perfusion, predicted against manual masks ({part['group']}; {used}):"]
    for name, row in part["rows"].items():
        bias = (
            f"{row['bias_percent']:+.1f}%"
            if row["bias_percent"] is not None
            else _num(row["bias"])
        )
        lines.append(
            f"  {PARAMETERS.get(name, name):<18} n {row['n']}, bias {bias}, "
            f"ICC(2,1) {_num(row['icc_agreement'])}, equivalence: {row['decision']}"
            + (f" (TOST p {_num(row['tost_p'], 2)})" if _finite(row["tost_p"]) else "")
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as the lines ``echoscale report`` prints."""
    lines = [f"echoscale study: {report['study']}", ""]
    lines += _law_lines(report["law"]) + [""]
    lines += _dice_lines("Test patients, chosen network", report["segmentation"])
    lines += [""]
    if report.get("contrast_law") is not None:
        lines += _law_lines(report["contrast_law"], "Contrast network size", CEUS_RUN)
        lines += [""]
    lines += _dice_lines(
        "Contrast loops, predicted masks", report["contrast_segmentation"]
    )
    lines += [""] + _perfusion_lines(report["perfusion"])
    return "\n".join(lines)


def write_report(study: str | Path) -> tuple[dict[str, Any], str]:
    """Build the report, write ``report.md`` and ``report.json``; return both."""
    report = build(study)
    text = format_report(report)
    rundir.write_text(Path(study) / REPORT_MD, text + "\n")
    rundir.write_json(Path(study) / REPORT_JSON, report)
    return report, text
