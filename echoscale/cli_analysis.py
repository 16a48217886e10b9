"""The analysis commands: ``segment``, ``perfuse``, ``compare`` and ``report``.

They take files a study already holds (a trained model, contrast loops, masks,
perfusion tables) and are registered on the ``echoscale`` group by
:mod:`echoscale.cli`, which also turns their errors into one-line messages.
"""

from __future__ import annotations

from pathlib import Path

import click


def _frames(ctx: click.Context, param: click.Parameter, value: str):
    """``auto`` or comma-separated 0-based frame numbers."""
    if value == "auto":
        return value
    try:
        frames = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        frames = []
    if not frames or min(frames) < 0:
        raise click.BadParameter(
            f"expected 'auto' or frame numbers like 12,13 (from 0); got {value!r}"
        )
    return frames


def _is_model(path: Path) -> bool:
    return path.suffix == ".pt" or (path / "model.pt").is_file()


def _is_run(path: Path) -> bool:
    return (path / "dataset" / "manifest.json").is_file()


@click.command("segment")
@click.argument("model", type=click.Path(exists=True))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--format",
    "fmt",
    default="tif",
    show_default=True,
    type=click.Choice(["tif", "nii.gz"]),
    help="Format of the masks.",
)
@click.option(
    "--keep-largest",
    is_flag=True,
    help="Keep the largest connected component of each structure per frame.",
)
@click.option("--batch-size", default=16, show_default=True)
@click.option(
    "--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:i."
)
@click.option(
    "--precision",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "fp32", "bf16"]),
    help="auto: bf16 where the hardware has it, else fp32.",
)
@click.option(
    "--fps", type=float, default=None, help="Frame rate of cines that hold no timing."
)
def segment_cmd(model, inputs, out, fmt, keep_largest, batch_size, device, **kw):
    """Segment images and cine loops with MODEL (models/<key>/ or its model.pt).

    Writes OUT/<name>/masks.tif (or .nii.gz) in each input's geometry, areas.csv
    (area per structure per frame, mm^2) and segment.json (ED and ES frames).
    """
    from echoscale.segment import segment_inputs

    records = segment_inputs(
        model,
        inputs,
        out,
        fmt=fmt,
        keep_largest=keep_largest,
        batch_size=batch_size,
        device=device,
        **kw,
    )
    for r in records:
        phases = ""
        if r["ed_frame"] is not None:
            phases = f", ED frame {r['ed_frame']}, ES frame {r['es_frame']}"
        frames = "1 frame" if r["n_frames"] == 1 else f"{r['n_frames']} frames"
        click.echo(f"{r['name']}: {frames}{phases} -> {r['masks']}")


@click.command("perfuse")
@click.argument("loop", type=click.Path())
@click.argument("masks", type=click.Path())
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--fps", type=float, default=None, help="Frame rate (else case.json or the file)."
)
@click.option(
    "--dynamic-range",
    "dynamic_range_db",
    type=float,
    default=None,
    help="Display dynamic range in dB (else case.json's dynamic_range_db).",
)
@click.option("--linear", is_flag=True, help="The video is linear power already.")
@click.option(
    "--flash",
    default="auto",
    show_default=True,
    callback=_frames,
    help="auto, or the flash frames (0-based, comma-separated).",
)
@click.option(
    "--phase",
    default="all",
    show_default=True,
    type=click.Choice(["all", "es", "ed"]),
    help="Use every labelled frame, or one frame per cycle at ES or ED.",
)
@click.option(
    "--segments",
    default="6",
    show_default=True,
    type=click.Choice(["6", "none"]),
    help="Six segments and the whole myocardium, or the myocardium only.",
)
@click.option(
    "--septum-side",
    type=click.Choice(["left", "right"]),
    default=None,
    help="Image side of the first wall (septal in A4C, inferior in A2C).",
)
@click.option(
    "--exclude-saturated",
    is_flag=True,
    help="Leave the pixels at the video's ceiling out of the means.",
)
@click.option(
    "--erode",
    "erode_mm",
    type=float,
    default=0.0,
    show_default=True,
    help="Shrink each region by this many mm before averaging.",
)
def perfuse_cmd(loop, masks, out, segments, **kw):
    """Fit A(1 - exp(-beta t)) + C per myocardial region of a contrast LOOP.

    MASKS: a mask file matching the loop, a segment output folder, or a folder of
    per-frame masks. Writes tic.csv, perfusion.csv, perfusion.json and perfusion.png.
    """
    from echoscale.perfuse import perfuse

    summary = perfuse(
        loop, masks, out, segments=None if segments == "none" else 6, **kw
    )
    _echo_perfusion(summary, Path(out))


def _echo_perfusion(summary: dict, out: Path) -> None:
    from echoscale import rundir

    rows = rundir.read_csv(out / "perfusion.csv")
    click.echo(f"{summary.get('case')}: {len(rows)} fits -> {out}")
    click.echo(f"  {'region':<16} {'flash':>5} {'A':>10} {'beta':>7} {'A*beta':>10}")
    for row in rows:
        if row["success"].lower() != "true":
            click.echo(
                f"  {row['region']:<16} {row['flash']:>5}  failed: {row['message']}"
            )
            continue
        click.echo(
            f"  {row['region']:<16} {row['flash']:>5} {float(row['A']):>10.4g} "
            f"{float(row['beta']):>7.3f} {float(row['A_beta']):>10.4g}"
        )


@click.command("compare")
@click.argument("auto", type=click.Path(exists=True))
@click.argument("reference", type=click.Path(exists=True))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Output folder."
)
@click.option(
    "--kind",
    type=click.Choice(["masks", "perfusion"]),
    default=None,
    help="What the inputs are, where it cannot be told from them.",
)
@click.option(
    "--margin",
    default=None,
    help="TOST equivalence margin: absolute, or N% of the reference mean.",
)
@click.option(
    "--ratio", is_flag=True, help="Also Bland-Altman on a log scale, in percent."
)
@click.option(
    "--alpha",
    type=float,
    default=0.05,
    show_default=True,
    help="1 - confidence of the intervals; the TOST level.",
)
@click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(["train", "val", "test"]),
    help="With a model against a run: the split to predict.",
)
@click.option(
    "--device", default="auto", show_default=True, help="Where a model predicts."
)
def compare_cmd(auto, reference, out, kind, margin, ratio, alpha, split, device):
    """Compare AUTO with a REFERENCE reader: masks or perfusion tables.

    AUTO and REFERENCE are mask files or folders (matched by name), perfusion.csv
    files or folders of them, or a model (models/<key>/) against a run directory,
    whose split is then predicted and scored. Writes metrics.csv and summary.json.
    """
    from echoscale.compare import compare, format_report

    auto, reference = Path(auto), Path(reference)
    if _is_model(auto) and _is_run(reference):
        from echoscale.segment import segment_dataset

        auto, reference = segment_dataset(
            auto, reference, out, split=split, device=device
        )
        kind = "masks"
    elif _is_model(auto) or _is_run(reference):
        raise click.UsageError(
            "a model is compared against a run directory (RUN with RUN/dataset): "
            "echoscale compare RUN/models/KEY RUN --out DIR"
        )
    margin = _margin(margin)
    summary = compare(auto, reference, out, kind=kind, margin=margin, ratio=ratio,
                      alpha=alpha)  # fmt: skip
    click.echo(format_report(summary))


def _margin(text: str | None):
    if text is None or text.strip().endswith("%"):
        return text
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(
            f"expected a number or N%; got {text!r}", param_hint="--margin"
        ) from None


@click.command("report")
@click.argument("study", type=click.Path(file_okay=False))
def report_cmd(study):
    """Print the short report of a STUDY; writes STUDY/report.md and report.json.

    STUDY holds camus/ (sweep, law, selection), compare/camus, compare/contrast and
    compare/perfusion as make demo and make study write them.
    """
    from echoscale.report import write_report

    click.echo(write_report(study)[1])


@click.command("cases")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--split",
    default="test",
    show_default=True,
    type=click.Choice(["train", "val", "test"]),
)
def cases_cmd(run, split):
    """Print the source folders of a split's patients or cases, one per line.

    For shell loops over a prepared run's test cases, e.g. to segment and perfuse
    each contrast loop that the network never saw.
    """
    from echoscale.dataset import source_folders

    for folder in source_folders(run, split):
        click.echo(folder)
