"""The ``echoscale`` command line: it parses options, calls a stage and reports.

Errors that a user can fix come out as one ``Error:`` line naming the file and the
problem, with a non-zero exit code; the traceback is shown only with ``--verbose``.
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from echoscale import __version__
from echoscale.errors import EchoscaleError

EXIT_INPUT = 1
EXIT_INTERNAL = 3


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
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


class _Group(click.Group):
    """A group that turns exceptions into one clean line and an exit code."""

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
            hint = "" if verbose else "; rerun with --verbose for the traceback"
            click.echo(
                f"Error: internal error ({type(err).__name__}: {err}){hint}", err=True
            )
            ctx.exit(EXIT_INTERNAL)


def _describe(err: Exception) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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


@prepare.command("camus")
@click.argument("src", type=click.Path(file_okay=False, path_type=str))
@click.argument("run", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--size",
    default="256",
    show_default=True,
    callback=_size,
    help="Stored size, N or HxW.",
)
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
@click.option(
    "--split",
    "split",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "official", "folds", "random"]),
    help="auto: the release's database_split lists if present, else random.",
)
@click.option("--fold", type=int, help="With --split folds: the test fold number.")
@click.option(
    "--fold-lists",
    type=click.Path(file_okay=False),
    help="With --split folds: folder of foldN.txt patient lists.",
)
@click.option(
    "--val",
    default=0.1,
    show_default=True,
    help="With --split random: fraction of patients for validation.",
)
@click.option(
    "--test",
    default=0.1,
    show_default=True,
    help="With --split random: fraction of patients for testing.",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    help="Seed of the random split and the training-patient order.",
)
@click.option(
    "--skip-incomplete",
    is_flag=True,
    help="Skip incomplete or damaged patients (reported) instead of stopping.",
)
def prepare_camus_cmd(
    src,
    run,
    size,
    classes,
    sequences,
    split,
    fold,
    fold_lists,
    val,
    test,
    seed,
    skip_incomplete,
) -> None:
    """Prepare CAMUS (2019 MetaImage or 2023 NIfTI release) from SRC into RUN."""
    from echoscale.prepare import parse_classes, prepare_camus

    try:
        classes = parse_classes(classes)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--classes") from None
    report = prepare_camus(
        src,
        run,
        size=size,
        classes=classes,
        sequences=sequences,
        split=split,
        fold=fold,
        fold_lists=fold_lists,
        val=val,
        test=test,
        seed=seed,
        skip_incomplete=skip_incomplete,
    )
    _echo_report(report)


def _echo_report(report) -> None:
    per = report.samples_per_split
    pats = report.patients_per_split
    click.echo(
        f"prepared {report.n_patients} patients, {report.n_samples} samples into "
        f"{report.dataset}"
    )
    for split in ("train", "val", "test"):
        click.echo(f"  {split:<5} {pats[split]:>4} patients {per[split]:>6} samples")
    if report.skipped:
        n = len(report.skipped)
        click.echo(f"skipped {n} patient{'s' if n != 1 else ''}:")
        for item in report.skipped:
            click.echo(f"  {item['reason']}")


def main(argv: list[str] | None = None) -> None:
    """Run the command line (the ``echoscale`` console script)."""
    cli.main(args=argv, prog_name="echoscale")
