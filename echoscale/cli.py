"""The ``echoscale`` command line: it parses options, calls a stage and reports.

Errors that a user can fix come out as one ``Error:`` line naming the file and the
problem, with a non-zero exit code; the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback

import click

from echoscale import __version__
from echoscale.errors import EchoscaleError

EXIT_INPUT = 1
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {text}"
        return text


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("echoscale")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter("%(message)s"))
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    # tifffile logs what it finds wrong in a damaged file before echoscale's own
    # one-line error says it again; keep its lines for --verbose
    logging.getLogger("tifffile").setLevel(
        logging.DEBUG if verbose else logging.CRITICAL
    )


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def _hoist_global_flags(args: list[str]) -> list[str]:
    """Move -v / -q given after the command to the front, where click expects them."""
    if "--" in args:
        cut = args.index("--")
        head, tail = args[:cut], args[cut:]
    else:
        head, tail = args, []
    flags = [a for a in head if a in GLOBAL_FLAGS]
    return flags + [a for a in head if a not in GLOBAL_FLAGS] + tail


class _Group(click.Group):
    """A group that turns every error into one clean line and an exit code."""

    def main(
        self,
        args=None,
        prog_name=None,
        complete_var=None,
        standalone_mode=True,
        **extra,
    ):
        args = _hoist_global_flags(list(sys.argv[1:] if args is None else args))
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as err:
            where = f" (see '{err.ctx.command_path} --help')" if err.ctx else ""
            click.echo(f"Error: {err.format_message()}{where}", err=True)
            sys.exit(err.exit_code)
        except click.ClickException as err:
            click.echo(f"Error: {err.format_message()}", err=True)
            sys.exit(err.exit_code)
        except click.Abort:
            click.echo("Error: interrupted; nothing half-written was kept", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:  # noqa: BLE001 - every error is reported, once
            verbose = bool((ctx.obj or {}).get("verbose"))
            if verbose:
                traceback.print_exc()
            if isinstance(err, (EchoscaleError, ValueError, OSError)):
                click.echo(f"Error: {_describe(err)}", err=True)
                ctx.exit(EXIT_INPUT)
            hint = "" if verbose else "; rerun with --verbose to see the traceback"
            click.echo(
                f"Error: internal error ({type(err).__name__}: {err}){hint}", err=True
            )
            ctx.exit(EXIT_INTERNAL)


def _describe(err: Exception) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


@click.group(
    name="echoscale",
    cls=_Group,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="echoscale")
@click.option(
    "-v", "--verbose", is_flag=True, help="Debug messages, and tracebacks on errors."
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors on stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """echoscale: size segmentation networks by scaling laws, then measure perfusion.

    Every command reads and writes plain files in a run directory; see README.md.
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose, quiet)


@cli.group()
def prepare() -> None:
    """Prepare a source dataset into RUN/dataset (resized stacks, table, manifest)."""


def _size(ctx: click.Context, param: click.Parameter, value: str):
    from echoscale.prepare import parse_size

    try:
        return parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


def _split_options(what: str):
    """The options that every ``prepare`` command shares (size, split, skipping)."""
    options = [
        click.argument("src", type=click.Path(file_okay=False)),
        click.argument("run", type=click.Path(file_okay=False)),
        click.option(
            "--size",
            default="256",
            show_default=True,
            callback=_size,
            help="Stored size, N or HxW.",
        ),
        click.option(
            "--split",
            default="auto",
            show_default=True,
            type=click.Choice(["auto", "official", "folds", "random"]),
            help="auto: database_split lists if present, else random.",
        ),
        click.option("--fold", type=int, help="With --split folds: the test fold."),
        click.option(
            "--fold-lists",
            type=click.Path(file_okay=False),
            help=f"With --split folds: folder of foldN.txt {what} lists.",
        ),
        click.option(
            "--val",
            default=0.1,
            show_default=True,
            help=f"With --split random: fraction of {what}s for validation.",
        ),
        click.option(
            "--test",
            default=0.1,
            show_default=True,
            help=f"With --split random: fraction of {what}s for testing.",
        ),
        click.option(
            "--seed",
            default=0,
            show_default=True,
            help=f"Seed of the random split and the training-{what} order.",
        ),
        click.option(
            "--skip-incomplete",
            is_flag=True,
            help=f"Skip incomplete or damaged {what}s (reported).",
        ),
    ]

    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


def _classes(text: str, allow_auto: bool = False):
    from echoscale.prepare import parse_classes

    if allow_auto and text == "auto":
        return text
    try:
        return parse_classes(text)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--classes") from None


@prepare.command("camus")
@_split_options("patient")
@click.option(
    "--classes",
    default="lv,myo,la",
    show_default=True,
    help="Classes kept (the others become background): lv, myo, la.",
)
@click.option(
    "--sequences",
    is_flag=True,
    help="Also add the half-sequence frames that have masks.",
)
def prepare_camus_cmd(src, run, classes, sequences, **split) -> None:
    """Prepare CAMUS (2019 MetaImage or 2023 NIfTI release) from SRC into RUN."""
    from echoscale.prepare import prepare_camus

    classes = _classes(classes)
    report = prepare_camus(src, run, classes=classes, sequences=sequences, **split)
    _echo_report(report, "patient")


@prepare.command("ceus")
@_split_options("case")
@click.option(
    "--classes",
    default="auto",
    show_default=True,
    help="auto: myo for 0/1 masks, else the CAMUS classes present.",
)
@click.option(
    "--fps",
    type=float,
    help="Frame rate for cines whose file and case.json give no times.",
)
def prepare_ceus_cmd(src, run, classes, fps, **split) -> None:
    """Prepare contrast-echo loops with per-frame masks from SRC into RUN.

    SRC holds one folder per case with cine.{tif,nii.gz,dcm}, masks.{tif,nii.gz} (or
    a masks/ folder of per-frame files) and an optional case.json; see data/README.md.
    """
    from echoscale.ceus import prepare_ceus

    classes = _classes(classes, allow_auto=True)
    report = prepare_ceus(src, run, classes=classes, fps=fps, **split)
    _echo_report(report, "case")


@cli.command()
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--patients", default=40, show_default=True, help="CAMUS-layout patients to write."
)
@click.option(
    "--ceus-cases", default=6, show_default=True, help="Contrast-loop cases to write."
)
@click.option(
    "--seed", default=0, show_default=True, help="Seed; same seed, same files."
)
@click.option(
    "--size",
    default=None,
    callback=lambda c, p, v: v and _size(c, p, v),
    help="Image size of the CAMUS-layout data, N or HxW.",
)
def phantom(out, patients, ceus_cases, seed, size) -> None:
    """Write synthetic CAMUS-layout data and contrast loops with known truth to OUT."""
    from echoscale.phantom import make_phantom

    kwargs = {"size": size} if size else {}
    report = make_phantom(
        out, patients=patients, ceus_cases=ceus_cases, seed=seed, **kwargs
    )
    click.echo(
        f"wrote {_count(len(report.patients), 'CAMUS-layout patient')} to "
        f"{report.camus}"
    )
    click.echo(
        f"wrote {_count(len(report.cases), 'contrast-loop case')} to {report.ceus}"
    )


def _training_options(fn):
    """The options of one training run, shared by ``train`` and ``sweep``."""
    options = [
        click.option("--max-steps", default=2000, show_default=True),
        click.option("--batch-size", default=8, show_default=True),
        click.option(
            "--lr", default=2e-3, show_default=True, help="Peak AdamW learning rate."
        ),
        click.option(
            "--eval-every",
            default=100,
            show_default=True,
            help="Steps between validation passes (and checkpoints).",
        ),
        click.option(
            "--patience",
            default=5,
            show_default=True,
            help="Validation passes without improvement before stopping.",
        ),
        click.option(
            "--size",
            default=None,
            callback=lambda c, p, v: v and _size(c, p, v),
            help="Train at this size (N or HxW) instead of the dataset's.",
        ),
        click.option(
            "--device",
            default="auto",
            show_default=True,
            help="auto, cpu, cuda or cuda:i.",
        ),
        click.option(
            "--precision",
            default="auto",
            show_default=True,
            type=click.Choice(["auto", "fp32", "bf16"]),
            help="auto: bf16 where the hardware has it, else fp32.",
        ),
        click.option("--no-augment", is_flag=True, help="Train without augmentation."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.command("train")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--width", default=16, show_default=True, help="Channels at the top level."
)
@click.option("--depth", default=4, show_default=True, help="Down-sampling levels.")
@click.option(
    "--fraction",
    default=1.0,
    show_default=True,
    help="Fraction of the training patients (a prefix of the fixed shuffle).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of init and batches.")
@_training_options
@click.option("--force", is_flag=True, help="Retrain a finished key.")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint.")
@click.option(
    "--from-selection",
    "selection",
    type=click.Path(dir_okay=False),
    default=None,
    help="A selection.json (this run's or another's): train its chosen size on all "
    "the data with the sweep's settings; options given as well override them.",
)
@click.pass_context
def train_cmd(ctx, run, no_augment, force, resume, selection, **settings) -> None:
    """Train a U-Net on RUN/dataset; writes RUN/models/<key>/."""
    from echoscale.train import TrainConfig, train

    config = TrainConfig(augment=not no_augment, **settings)
    if selection:
        config = _selected_config(ctx, selection, config)
    result = train(run, config, force=force, resume=resume)
    dice = {k: v.get("all") for k, v in result["dice"].items()}
    shown = ", ".join(f"{k} {v:.3f}" for k, v in dice.items() if v is not None)
    click.echo(
        f"{result['key']}: {result['parameters']} parameters, test loss "
        f"{result['test_loss']:.4f}, Dice {shown} ({result['steps']} steps, "
        f"{result['wall_seconds']:.0f} s, {result['device']} {result['precision']})"
    )


def _selected_config(ctx: click.Context, selection, given):
    """The selection's config, with the options typed on the command line on top."""
    from click.core import ParameterSource

    from echoscale.select import selected_config

    typed = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    }
    if typed & {"width", "depth", "fraction"}:
        raise click.UsageError(
            "--from-selection takes the width and depth from the selection and "
            "trains on all the data; drop --width, --depth and --fraction"
        )
    config = selected_config(selection)
    for name in typed & set(vars(given)):
        setattr(config, name, getattr(given, name))
    if "no_augment" in typed:
        config.augment = False
    return config


def _numbers(kind: type):
    def parse(ctx: click.Context, param: click.Parameter, value: str):
        try:
            values = [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            msg = f"expected comma-separated numbers, got {value!r}"
            raise click.BadParameter(msg) from None
        if not values:
            raise click.BadParameter("needs at least one value")
        return values

    return parse


@cli.command("sweep")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--widths",
    default="4,8,16,32",
    show_default=True,
    callback=_numbers(int),
    help="Comma-separated widths.",
)
@click.option(
    "--depths",
    default="4",
    show_default=True,
    callback=_numbers(int),
    help="Comma-separated depths.",
)
@click.option(
    "--fractions",
    default="0.125,0.25,0.5,1",
    show_default=True,
    callback=_numbers(float),
    help="Comma-separated training fractions.",
)
@click.option(
    "--seeds",
    default="0,1,2",
    show_default=True,
    callback=_numbers(int),
    help="Comma-separated seeds.",
)
@_training_options
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    help="Runs at once, each in its own process.",
)
@click.option(
    "--devices",
    default=None,
    help="Comma-separated devices handed to the runs in turn (cuda:0,cuda:1).",
)
@click.option(
    "--print-commands",
    is_flag=True,
    help="Print one 'echoscale train' line per missing run; train nothing.",
)
@click.option(
    "--collect", is_flag=True, help="Only rebuild RUN/sweep.csv from the finished runs."
)
def sweep_cmd(
    run,
    widths,
    depths,
    fractions,
    seeds,
    no_augment,
    jobs,
    devices,
    print_commands,
    collect,
    **settings,
) -> None:
    """Train every missing width x depth x fraction x seed; rebuild RUN/sweep.csv."""
    from echoscale import sweep
    from echoscale.train import TrainConfig

    if collect:
        rows = sweep.collect(run)
        click.echo(f"{run}/sweep.csv: {len(rows)} models")
        return
    base = TrainConfig(augment=not no_augment, **settings)
    configs = sweep.plan(widths, depths, fractions, seeds, base)
    device_list = [d.strip() for d in devices.split(",")] if devices else None
    if print_commands:
        sweep.write_plan(run, configs)
        for number, config in enumerate(configs):
            if not sweep.is_finished(run, config):
                device = device_list[number % len(device_list)] if device_list else None
                click.echo(sweep.train_command(run, config, device))
        return
    rows = sweep.run_sweep(run, configs, jobs=jobs, devices=device_list)
    failed = [r for r in rows if r["status"] == "failed"]
    click.echo(
        f"{run}/sweep.csv: {len(rows) - len(failed)} models done, {len(failed)} failed"
    )
    for row in failed:
        click.echo(f"  {row['key']}: {row['error']}")
    if len(failed) == len(rows):
        raise EchoscaleError("no run of the sweep finished (errors above)", run)


@cli.command("fit-law")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--metric",
    default="test_loss",
    show_default=True,
    help="The sweep.csv column the laws model.",
)
@click.option(
    "--data-unit",
    default="patients",
    show_default=True,
    type=click.Choice(["patients", "images"]),
    help="What D counts.",
)
@click.option(
    "--bootstrap",
    "n_boot",
    default=1000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Bootstrap draws over seeds within each (N, D) cell (0: no intervals).",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--target-size",
    type=float,
    default=None,
    help="D to extrapolate to; default: the whole training set.",
)
@click.option(
    "--transfer-from",
    type=click.Path(dir_okay=False, exists=True),
    help="Another run's law.json: keep its exponents, fit the levels.",
)
def fit_law_cmd(run, metric, data_unit, n_boot, seed, target_size, transfer_from):
    """Fit scaling laws to RUN/sweep.csv; writes law.json, law.csv and law.png."""
    from echoscale.select import fit_run

    law = fit_run(
        run,
        metric=metric,
        data_unit=data_unit,
        n_boot=n_boot,
        seed=seed,
        target_D=target_size,
        transfer_from=transfer_from,
    )
    click.echo(
        f"{metric} at D = {law['target_D']:g} {data_unit}, per size "
        "(data law; 95% bootstrap interval):"
    )
    for key, fit in law["sizes"].items():
        pred = law["predicted"]["sizes"][key]
        if not fit["success"]:
            click.echo(f"  {key:<8} no fit: {fit['message']}")
            continue
        band = ""
        if pred.get("lower") is not None:
            band = f" [{pred['lower']:.4f}, {pred['upper']:.4f}]"
        beta = fit["params"].get("beta")
        click.echo(
            f"  {key:<8} N {pred['N']:>10.0f}  beta {beta:.3f}  "
            f"predicted {pred['loss']:.4f}{band}"
        )
    for key, row in (law.get("backtest") or {}).get("sizes", {}).items():
        if row.get("rel_error") is not None:
            click.echo(
                f"  backtest {key}: predicted {row['predicted']:.4f}, measured "
                f"{row['measured']:.4f} ({100 * row['rel_error']:+.1f}%)"
            )
        elif law["sizes"].get(key, {}).get("success"):
            click.echo(f"  backtest {key}: no fit ({row.get('message')})")
    if law.get("transfer"):
        _echo_transfer(law)
    click.echo(f"wrote {run}/law.json, law.csv and law.png")


def _echo_transfer(law: dict) -> None:
    """The laws refitted with the source's exponents, as fit-law prints them."""
    from echoscale.laws import transferred

    click.echo(
        f"with the exponents of {law['transfer_from']} (only the levels fitted here):"
    )
    moved = law["transfer"].get("sizes") or {}
    for key, pred in transferred(law).items():
        if not pred["success"]:
            click.echo(f"  {key:<8} no fit: {pred['message']}")
            continue
        fixed = ", ".join(f"{k} {v:.3f}" for k, v in moved[key]["fixed"].items())
        bias = (moved[key].get("bias") or {}).get("mean")
        shift = "" if bias is None else f"; measured minus source law {bias:+.4f}"
        click.echo(f"  {key:<8} {fixed} (fixed)  predicted {pred['loss']:.4f}{shift}")


@cli.command("select")
@click.argument("run", type=click.Path(file_okay=False))
@click.option(
    "--target-size",
    type=float,
    default=None,
    help="D to choose for; default: the whole training set.",
)
@click.option(
    "--tolerance",
    default=0.01,
    show_default=True,
    help="Relative loss margin over the best that still counts as optimal.",
)
@click.option(
    "--budget-flops",
    type=float,
    default=None,
    help="Choose the best size whose training fits this many FLOPs.",
)
@click.option("--top", type=int, default=None, help="Show only the K best sizes.")
@click.option(
    "--fallback-measured",
    is_flag=True,
    help="When no law can be fitted, rank by the losses measured at the largest D "
    "instead of choosing nothing.",
)
@click.option(
    "--transfer",
    is_flag=True,
    help="Rank by the laws 'fit-law --transfer-from' refitted with the other "
    "dataset's exponents, not by this run's own laws.",
)
def select_cmd(
    run, target_size, tolerance, budget_flops, top, fallback_measured, transfer
):
    """Rank network sizes by predicted loss; write RUN/selection.json."""
    from echoscale.select import select

    result = select(
        run,
        target_D=target_size,
        tolerance=tolerance,
        budget_flops=budget_flops,
        top=top,
        fallback=fallback_measured,
        transfer=transfer,
    )
    if result["basis"] == "measured":
        click.echo(
            f"measured {result['metric']} at D = {result['measured_D']:g} "
            f"{result['data_unit']} (no law could be fitted; mean [range] of seeds):"
        )
    else:
        how = " (transferred law)" if result["basis"] == "transfer" else ""
        click.echo(
            f"predicted {result['metric']} at D = {result['target_D']:g} "
            f"{result['data_unit']}{how}:"
        )
    for row in result["ranking"]:
        band = ""
        if row.get("lower") is not None:
            band = f" [{row['lower']:.4f}, {row['upper']:.4f}]"
        mark = "*" if row["size"] == result["choice"] else " "
        click.echo(
            f" {mark}{row['size']:<8} {row['N']:>10.0f} parameters "
            f"({row['parameter_ratio']:.3g} of the largest)  "
            f"{row['loss']:.4f}{band}"
        )
    if result["choice"] is None:
        raise EchoscaleError(f"no size can be chosen: {result['reason']}")
    click.echo(f"choice: {result['choice']} ({result['reason']})")
    click.echo(f"train it on all the data: {result['command']}")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _echo_report(report, what: str) -> None:
    per = report.samples_per_split
    pats = report.patients_per_split
    click.echo(
        f"prepared {_count(report.n_patients, what)}, "
        f"{_count(report.n_samples, 'sample')} into {report.dataset}"
    )
    for split in ("train", "val", "test"):
        click.echo(
            f"  {split:<5} {_count(pats[split], what):>14} "
            f"{_count(per[split], 'sample'):>14}"
        )
    if report.skipped:
        click.echo(f"skipped {_count(len(report.skipped), what)}:")
        for item in report.skipped:
            click.echo(f"  {item['reason']}")


def _terminate(signum, frame) -> None:
    # SIGTERM (a scheduler's kill) unwinds like Ctrl-C, so temporaries are removed
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run the command line (the ``echoscale`` console script)."""
    signal.signal(signal.SIGTERM, _terminate)
    cli.main(args=argv, prog_name="echoscale")


def _register_analysis() -> None:
    from echoscale import cli_analysis

    for command in (
        cli_analysis.segment_cmd,
        cli_analysis.perfuse_cmd,
        cli_analysis.compare_cmd,
        cli_analysis.report_cmd,
        cli_analysis.cases_cmd,
    ):
        cli.add_command(command)


_register_analysis()
