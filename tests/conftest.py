"""Shared fixtures: the real data folder, a run directory, and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from echoscale.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real files in ``../shared/data`` (read, never copied into the project)."""
    path = ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present")
    return path


@pytest.fixture(scope="session")
def camus_root(shared_data: Path) -> Path:
    """The 13 real CAMUS patients (NIfTI release; patient0016 incomplete upstream)."""
    return shared_data / "camus"


@pytest.fixture(scope="module")
def one_thread():
    """Train and predict on one thread: two threads on shared cores crawl."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty run directory."""
    path = tmp_path / "run"
    path.mkdir()
    return path


@pytest.fixture
def invoke():
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)

    return run


def draw_heart(shape: tuple[int, int], shift: int = 0):
    """A tiny apical view: LV cavity (1) above the LA (3), myocardium (2) around.

    Returns (image float32 0-255, mask uint8), both of ``shape``.
    """
    import numpy as np

    h, w = shape
    r, c = np.mgrid[0:h, 0:w]
    cy, cx = 0.4 * h + shift, w / 2
    lv = ((r - cy) / (0.25 * h)) ** 2 + ((c - cx) / (0.15 * w)) ** 2
    la = ((r - 0.8 * h) / (0.12 * h)) ** 2 + ((c - cx) / (0.12 * w)) ** 2
    mask = np.zeros(shape, np.uint8)
    mask[lv < 1.6] = 2
    mask[lv < 1] = 1
    mask[la < 1] = 3
    image = np.where(mask == 2, 200.0, np.where(mask == 0, 90.0, 20.0)).astype(
        np.float32
    )
    return image, mask


def make_camus_patient(
    root: Path,
    name: str,
    *,
    release: str = "nifti",
    shape: tuple[int, int] = (48, 40),
    spacing: tuple[float, float] = (0.3, 0.5),
    quality: str = "Good",
    n_frames: int = 4,
    sequence: bool = False,
) -> Path:
    """Write a small synthetic CAMUS patient folder of either release; return it."""
    import numpy as np

    from echoscale import images

    folder = root / name
    folder.mkdir(parents=True)
    suffix = ".nii.gz" if release == "nifti" else ".mhd"
    write = images.write_nifti if release == "nifti" else images.write_metaimage
    for view in ("2CH", "4CH"):
        frames = [draw_heart(shape, shift=-t) for t in range(n_frames)]
        for phase, t in (("ED", 0), ("ES", n_frames - 1)):
            write(folder / f"{name}_{view}_{phase}{suffix}", frames[t][0], spacing)
            write(folder / f"{name}_{view}_{phase}_gt{suffix}", frames[t][1], spacing)
        if sequence:
            stem = (
                f"{name}_{view}_{'half_sequence' if release == 'nifti' else 'sequence'}"
            )
            write(folder / f"{stem}{suffix}", np.stack([f[0] for f in frames]), spacing)
            write(
                folder / f"{stem}_gt{suffix}", np.stack([f[1] for f in frames]), spacing
            )
        ef_key = "EF" if release == "nifti" else "LVef"
        (folder / f"Info_{view}.cfg").write_text(
            f"ED: 1\nES: {n_frames}\nNbFrame: {n_frames}\nSex: F\nAge: 60\n"
            f"ImageQuality: {quality}\n{ef_key}: 55\nFrameRate: 50\n"
        )
    return folder
