"""``segment``: masks in the input's geometry, areas, ED/ES, clean-up, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

from echoscale import images, prepare, rundir, segment, train
from echoscale.errors import InputError
from echoscale.unet import UNet

SPACING = (0.3, 0.45)  # (row_mm, col_mm) of the test cines: not square on purpose
TRAIN = dict(
    width=4,
    depth=2,
    max_steps=150,
    batch_size=8,
    eval_every=150,
    size=(32, 32),
    lr=1e-2,
    augment=False,
)
# LV scale of each frame of the test cine: one clear largest (ED) and smallest (ES)
SCALES = (0.8, 0.9, 1.0, 0.92, 0.84, 0.76, 0.68, 0.74, 0.82)
ED, ES = int(np.argmax(SCALES)), int(np.argmin(SCALES))


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest.one_thread)."""


def heart(
    shape: tuple[int, int], scale: float = 1.0, shift: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An apical view whose LV cavity (1) and myocardium (2) grow with ``scale``.

    The LV is dark, the myocardium bright, the LA (3) dark below; returns (image
    float32 0-255 with noise, mask uint8).
    """
    h, w = shape
    r, c = np.mgrid[0:h, 0:w]
    lv = ((r - 0.4 * h - shift) / (0.25 * h * scale)) ** 2 + (
        (c - w / 2) / (0.15 * w * scale)
    ) ** 2
    la = ((r - 0.8 * h) / (0.12 * h)) ** 2 + ((c - w / 2) / (0.12 * w)) ** 2
    mask = np.zeros(shape, np.uint8)
    mask[lv < 1.6] = 2
    mask[lv < 1] = 1
    mask[la < 1] = 3
    noise = np.random.default_rng(seed).normal(0, 15, shape)
    image = np.choose(mask, [90.0, 20.0, 200.0, 20.0]) + noise
    return np.clip(image, 0, 255).astype(np.float32), mask


def heart_cine(shape=(96, 72), scales=SCALES) -> np.ndarray:
    """A (T, H, W) uint8 loop whose frame t has LV scale ``scales[t]``."""
    frames = [heart(shape, s, seed=100 + t)[0] for t, s in enumerate(scales)]
    return np.rint(np.stack(frames)).astype(np.uint8)


def write_patient(root, name: str, rng: np.random.Generator) -> None:
    """A CAMUS-layout patient: large LV at ED, small at ES, in both views."""
    folder = root / name
    folder.mkdir(parents=True)
    for view in ("2CH", "4CH"):
        for phase, scale in (
            ("ED", rng.uniform(0.9, 1.1)),
            ("ES", rng.uniform(0.6, 0.8)),
        ):
            image, mask = heart((64, 48), scale, rng.uniform(-3, 3), rng.integers(1e6))
            images.write_nifti(folder / f"{name}_{view}_{phase}.nii.gz", image, SPACING)
            images.write_nifti(
                folder / f"{name}_{view}_{phase}_gt.nii.gz", mask, SPACING
            )
        (folder / f"Info_{view}.cfg").write_text(
            "ED: 1\nES: 2\nNbFrame: 2\nSex: F\nAge: 60\nImageQuality: Good\nEF: 55\n"
            "FrameRate: 50\n"
        )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny trained networks: CAMUS classes, and myocardium only."""
    root = tmp_path_factory.mktemp("hearts")
    rng = np.random.default_rng(0)
    for k in range(1, 9):
        write_patient(root / "src", f"patient{k:04d}", rng)
    found = {}
    for kind, classes in (("camus", ("lv", "myo", "la")), ("myo", ("myo",))):
        run = root / kind
        prepare.prepare_camus(root / "src", run, size=(64, 48), classes=classes)
        config = train.TrainConfig(**TRAIN)
        train.train(run, config)
        found[kind] = rundir.model_dir(run, config.key)
    return found


@pytest.fixture(scope="module")
def cine_tif(tmp_path_factory):
    """The test cine as an ImageJ TIFF with uneven frame times."""
    path = tmp_path_factory.mktemp("inputs") / "loop.tif"
    times = np.cumsum([0, 0.04, 0.05, 0.04, 0.04, 0.06, 0.04, 0.04, 0.05])
    images.write_tiff(path, heart_cine(), SPACING, times)
    return path


def saved_model(folder, out_channels: int, config: dict):
    """Write an untrained network with ``config`` as a ``model.pt``; return its path."""
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=out_channels, width=4, depth=2)
    path = folder / "model.pt"
    torch.save(
        {"state_dict": model.state_dict(), "model": model.config(), "config": config},
        path,
    )
    return path


# --- geometry, labels and areas ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["tif", "nii.gz"])
def test_masks_keep_the_shape_spacing_and_frame_times_of_the_input(
    models, tmp_path, fmt
):
    cine = heart_cine()
    source = tmp_path / "even.nii.gz"
    images.write_nifti(source, cine, SPACING, np.arange(len(cine)) / 25)
    still = tmp_path / "still.tif"
    images.write_tiff(still, cine[0], SPACING)

    records = segment.segment_inputs(
        models["camus"], [source, still], tmp_path / "out", fmt=fmt, device="cpu"
    )

    masks = images.read_image(records[0]["masks"])
    assert records[0]["masks"].name == f"masks.{fmt}"
    assert masks.array.shape == cine.shape and masks.array.dtype == np.uint8
    assert masks.spacing == pytest.approx(SPACING, rel=1e-6)
    assert masks.frame_times == pytest.approx(np.arange(len(cine)) / 25, abs=1e-6)
    flat = images.read_image(records[1]["masks"])
    assert flat.array.shape == cine.shape[1:] and flat.frame_times is None
    assert records[1]["ed_frame"] is None and records[1]["n_frames"] == 1


def test_uneven_frame_times_survive_in_tiff(models, cine_tif, tmp_path):
    (record,) = segment.segment_inputs(models["camus"], [cine_tif], tmp_path)
    masks = images.read_image(record["masks"])
    source = images.read_image(cine_tif)
    assert np.array_equal(masks.frame_times, source.frame_times)
    summary = rundir.read_json(record["summary"])
    assert summary["shape"] == list(source.array.shape)
    assert summary["spacing_mm"] == list(SPACING)


def test_masks_hold_only_the_label_values_of_the_model(models, cine_tif, tmp_path):
    records = segment.segment_inputs(models["myo"], [cine_tif], tmp_path / "myo")
    myo = images.read_image(records[0]["masks"]).array
    assert set(np.unique(myo)) <= {0, 1} and (myo == 1).any()
    records = segment.segment_inputs(models["camus"], [cine_tif], tmp_path / "camus")
    camus = images.read_image(records[0]["masks"]).array
    assert set(np.unique(camus)) <= {0, 1, 2, 3} and (camus == 1).any()


def test_label_values_come_from_the_config_in_channel_order(tmp_path):
    classes = ["background", "lv", "myo", "la"]
    plain = {
        "size": [32, 32],
        "classes": classes,
        "labels": {c: i for i, c in enumerate(classes)},
    }
    shifted = {**plain, "labels": {"background": 0, "lv": 10, "myo": 20, "la": 30}}
    model, _ = train.load_model(saved_model(tmp_path, 4, plain))
    frames = heart_cine()[:3]

    base = segment.predict_labels(model, plain, frames)
    mapped = segment.predict_labels(model, shifted, frames)

    assert len(np.unique(base)) > 1  # else the mapping test shows nothing
    assert np.array_equal(mapped, np.array([0, 10, 20, 30], np.uint8)[base])


def test_areas_are_pixel_counts_times_the_pixel_area(models, cine_tif, tmp_path):
    (record,) = segment.segment_inputs(models["camus"], [cine_tif], tmp_path)
    masks = images.read_image(record["masks"]).array
    rows = rundir.read_csv(record["areas"])
    times = images.read_image(cine_tif).frame_times

    assert list(rows[0]) == [
        "frame",
        "time_s",
        "area_mm2_lv",
        "area_mm2_myo",
        "area_mm2_la",
    ]
    assert [int(r["frame"]) for r in rows] == list(range(len(masks)))
    assert [float(r["time_s"]) for r in rows] == pytest.approx(times, abs=1e-6)
    for name, value in (("lv", 1), ("myo", 2), ("la", 3)):
        expected = (masks == value).sum(axis=(1, 2)) * 0.3 * 0.45
        got = [float(r[f"area_mm2_{name}"]) for r in rows]
        assert got == pytest.approx(expected, rel=1e-12)


# --- ED and ES ---------------------------------------------------------------------


def test_ed_has_the_largest_and_es_the_smallest_lv_cavity(models, cine_tif, tmp_path):
    (record,) = segment.segment_inputs(models["camus"], [cine_tif], tmp_path)
    summary = rundir.read_json(record["summary"])
    lv = [float(r["area_mm2_lv"]) for r in rundir.read_csv(record["areas"])]

    assert (record["ed_frame"], record["es_frame"]) == (ED, ES)
    assert (summary["ed_frame"], summary["es_frame"]) == (ED, ES)
    assert lv[ED] == max(lv) and lv[ES] == min(lv)
    assert "LV cavity" in summary["phase_rule"]
    times = images.read_image(cine_tif).frame_times
    assert summary["ed_time_s"] == pytest.approx(times[ED])


def test_a_myocardium_only_model_times_ed_and_es_by_the_enclosed_area(
    models, cine_tif, tmp_path
):
    (record,) = segment.segment_inputs(models["myo"], [cine_tif], tmp_path)
    summary = rundir.read_json(record["summary"])
    rows = rundir.read_csv(record["areas"])

    assert list(rows[0]) == ["frame", "time_s", "area_mm2_myo"]
    assert summary["classes"] == ["background", "myo"]
    assert summary["labels"] == {"background": 0, "myo": 1}
    assert "enclosed by the myocardium" in summary["phase_rule"]
    # the cavity the drawn myocardial ring encloses grows with the LV scale
    assert (record["ed_frame"], record["es_frame"]) == (ED, ES)


def test_the_lv_curve_wins_over_the_myocardium_and_flat_curves_give_none(caplog):
    areas = {"lv": np.array([3.0, 5.0, 1.0]), "myo": np.array([9.0, 1.0, 4.0])}
    assert segment.find_ed_es(areas) == {
        "ed_frame": 1,
        "es_frame": 2,
        "phase_rule": segment.PHASE_RULES["lv"],
    }
    assert segment.find_ed_es({"enclosed": areas["myo"]})["ed_frame"] == 0
    assert segment.find_ed_es({"myo": areas["myo"]})["phase_rule"] is None
    assert segment.find_ed_es({"la": areas["lv"]})["phase_rule"] is None
    assert segment.find_ed_es({"lv": np.array([2.0])})["ed_frame"] is None
    with caplog.at_level(logging.WARNING, logger="echoscale.segment"):
        flat = segment.find_ed_es({"lv": np.zeros(4)})
    assert flat["ed_frame"] is None and "every frame" in caplog.text


def test_flashes_and_the_second_after_them_are_no_ed_or_es_candidates():
    # 20 fps, a flash at frames 40-42, then a dark myocardium refilling: the masks
    # of the dark frames give a spurious smallest cavity at frame 44
    times = np.arange(120) / 20.0
    rng = np.random.default_rng(3)
    level = np.full(120, 60.0)
    level[40:43] = 240.0
    level[43:] = 60.0 - 50.0 * np.exp(-(times[43:] - times[43]) / 1.5)
    frames = level[:, None, None] + rng.normal(0, 1, (120, 8, 8))
    cavity = 100.0 + 20.0 * np.cos(2 * np.pi * times)  # 1 beat per second
    cavity[44] = 5.0

    skip = segment.flash_frames(frames, times)
    assert skip[40:43].all() and skip[44]
    assert skip.sum() == 3 + 20  # the flash and the 20 frames of the next second
    assert not skip[:40].any() and not skip[63:].any()
    found = segment.find_ed_es({"lv": cavity}, skip)
    assert found["es_frame"] != 44 and not skip[found["es_frame"]]
    assert cavity[found["es_frame"]] == pytest.approx(80.0, abs=0.1)
    assert segment.find_ed_es({"lv": cavity})["es_frame"] == 44  # as it was
    # without times, a fixed number of frames follows the flash
    assert segment.flash_frames(frames, None).sum() == 3 + 20
    # a loop without a flash leaves every frame a candidate
    assert not segment.flash_frames(np.full((50, 4, 4), 60.0), times[:50]).any()


# --- clean-up, batches and memory --------------------------------------------------


def test_keeping_the_largest_component_removes_a_planted_blob():
    truth = np.zeros((2, 40, 40), np.uint8)
    truth[:, 5:25, 5:20] = 1  # LV
    truth[:, 5:25, 20:24] = 2  # myocardium beside it
    truth[1, 30:38, 30:38] = 1  # frame 1: a second LV piece, the larger one there
    truth[1, 5:25, 5:20] = 0
    truth[1, 8:12, 8:12] = 1
    planted = truth.copy()
    planted[0, 32:35, 32:35] = 1  # a stray LV blob
    planted[0, 36:38, 2:4] = 2  # a stray piece of myocardium

    cleaned = segment.keep_largest_components(planted)

    assert np.array_equal(cleaned[0], truth[0])
    expected = truth[1].copy()
    expected[8:12, 8:12] = 0  # the smaller LV piece of frame 1
    assert np.array_equal(cleaned[1], expected)
    assert np.array_equal(segment.keep_largest_components(truth[0]), truth[0])


def test_keep_largest_leaves_one_piece_per_structure_and_frame(
    models, cine_tif, tmp_path
):
    (record,) = segment.segment_inputs(
        models["camus"], [cine_tif], tmp_path, keep_largest=True
    )
    masks = images.read_image(record["masks"]).array
    for frame in masks:
        for value in (1, 2, 3):
            pieces = ndimage.label(frame == value, structure=np.ones((3, 3)))[1]
            assert pieces <= 1
    assert rundir.read_json(record["summary"])["keep_largest"] is True


def test_the_batch_size_does_not_change_the_labels(models):
    model, config = train.load_model(models["camus"])
    frames = heart_cine()
    one = segment.predict_labels(model, config, frames, batch_size=1)
    for batch_size in (4, 16):
        many = segment.predict_labels(model, config, frames, batch_size=batch_size)
        assert np.array_equal(many, one)


def test_a_long_loop_upsamples_one_batch_at_a_time(models, monkeypatch):
    model, config = train.load_model(models["camus"])
    frames = np.concatenate([heart_cine(scales=SCALES[::-1]), heart_cine()] * 3)
    upsampled = []
    real = segment._to_input_geometry

    def recording(probs, shape):
        upsampled.append(probs.shape[0])
        return real(probs, shape)

    monkeypatch.setattr(segment, "_to_input_geometry", recording)
    labels = segment.predict_labels(model, config, frames, batch_size=8)

    assert upsampled == [8] * 6 + [len(frames) - 48]
    alone = [segment.predict_labels(model, config, f[None])[0] for f in frames[:9]]
    assert np.array_equal(labels[:9], np.stack(alone))


def test_a_rerun_writes_identical_files(models, cine_tif, tmp_path):
    first = segment.segment_inputs(models["camus"], [cine_tif], tmp_path / "a")[0]
    second = segment.segment_inputs(models["camus"], [cine_tif], tmp_path / "b")[0]
    for role in ("masks", "areas", "summary"):
        assert first[role].read_bytes() == second[role].read_bytes(), role


# --- names and classes -------------------------------------------------------------


def test_output_names_drop_the_extension_and_cines_take_their_folder(tmp_path):
    assert segment.output_name("x/patient0001_4CH.nii.gz") == "patient0001_4CH"
    assert segment.output_name("x/a4c.v2.tif") == "a4c.v2"
    assert segment.output_name(tmp_path / "case03" / "cine.tif") == "case03"
    assert segment.output_name("case07/cine.nii.gz") == "case07"


def test_models_without_recorded_classes_are_read_by_channel_count(tmp_path, caplog):
    four = UNet(out_channels=4, width=4, depth=2)
    two = UNet(out_channels=2, width=4, depth=2)
    with caplog.at_level(logging.WARNING, logger="echoscale.segment"):
        classes, labels = segment.model_classes(four, {"size": [32, 32]})
    assert classes == ["background", "lv", "myo", "la"]
    assert labels == {"background": 0, "lv": 1, "myo": 2, "la": 3}
    assert "names no classes" in caplog.text
    assert segment.model_classes(two, {})[1] == {"background": 0, "myo": 1}
    with pytest.raises(ValueError, match="3 output channels"):
        segment.model_classes(UNet(out_channels=3, width=4, depth=2), {})
    with pytest.raises(ValueError, match="do not describe"):
        segment.model_classes(two, {"classes": ["a", "b", "c"], "labels": {}})


# --- bad input ---------------------------------------------------------------------


def _bad_inputs(folder):
    """(file, message pattern) for each kind of input that must be refused."""
    text = folder / "notes.tif"
    text.write_text("not an image")
    png = folder / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    hot = folder / "hot.tif"
    images.write_tiff(hot, np.full((2, 40, 40), 300.0, np.float32), SPACING)
    unit = folder / "unit.tif"
    images.write_tiff(unit, np.full((40, 40), 0.5, np.float32), SPACING)
    bare = folder / "bare.tif"
    tifffile.imwrite(bare, np.zeros((40, 40), np.uint8))
    rgb = folder / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((40, 40, 3), np.uint8), photometric="rgb")
    return [
        (text, "not a TIFF"),
        (png, "unsupported file type"),
        (hot, "outside 0-255"),
        (unit, "scaled to 0-1"),
        (bare, "no valid pixel spacing"),
        (rgb, "2-D"),
    ]


def test_bad_inputs_are_named_and_nothing_is_written(models, cine_tif, tmp_path):
    for path, message in _bad_inputs(tmp_path):
        out = tmp_path / f"out_{path.stem}"
        with pytest.raises(InputError, match=message) as caught:
            segment.segment_inputs(models["camus"], [cine_tif, path], out)
        assert caught.value.path == path
        assert not out.exists()


def test_inputs_sharing_an_output_name_are_listed_in_one_error(
    models, cine_tif, tmp_path
):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    images.write_tiff(tmp_path / "a" / "loop.tif", heart_cine()[:2], SPACING)
    images.write_nifti(tmp_path / "b" / "loop.nii.gz", heart_cine()[:2], SPACING)
    inputs = [tmp_path / "a" / "loop.tif", cine_tif, tmp_path / "b" / "loop.nii.gz"]
    out = tmp_path / "out"
    with pytest.raises(InputError, match="share output folders") as caught:
        segment.segment_inputs(models["camus"], inputs, out)
    message = str(caught.value)
    assert all(str(p) in message for p in inputs)
    assert not out.exists()


def test_uneven_frame_times_are_refused_for_nifti_before_writing(
    models, cine_tif, tmp_path
):
    with pytest.raises(InputError, match="unevenly spaced"):
        segment.segment_inputs(
            models["camus"], [cine_tif], tmp_path / "o", fmt="nii.gz"
        )
    assert not (tmp_path / "o").exists()


def test_a_damaged_model_is_refused_before_writing(cine_tif, tmp_path):
    broken = tmp_path / "model.pt"
    broken.write_bytes(b"garbage")
    with pytest.raises(InputError, match="not an echoscale model"):
        segment.segment_inputs(broken, [cine_tif], tmp_path / "o")
    config = {"classes": ["background", "lv"], "labels": {"background": 0, "lv": 1}}
    (tmp_path / "sizeless").mkdir()
    sizeless = saved_model(tmp_path / "sizeless", 2, config)
    with pytest.raises(InputError, match="no input size"):
        segment.segment_inputs(sizeless, [cine_tif], tmp_path / "o")
    assert not (tmp_path / "o").exists()


# --- real data ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_network_trained_on_real_camus_follows_the_lv_through_a_real_cine(
    camus_root, shared_data, tmp_path
):
    run = tmp_path / "run"
    prepare.prepare_camus(
        camus_root, run, size=(128, 128), sequences=True, skip_incomplete=True
    )
    config = train.TrainConfig(
        width=8, depth=4, max_steps=300, batch_size=4, eval_every=100, lr=2e-3
    )
    train.train(run, config)
    cine_path = shared_data / "echo_toolkit" / "a4c_sequence.nii.gz"
    cine = images.read_image(cine_path)

    (record,) = segment.segment_inputs(
        rundir.model_dir(run, config.key),
        [cine_path],
        tmp_path / "out",
        keep_largest=True,
    )

    masks = images.read_image(record["masks"])
    assert masks.array.shape == cine.array.shape == (20, 480, 560)
    assert masks.spacing == cine.spacing and masks.frame_times is None
    lv = np.array([float(r["area_mm2_lv"]) for r in rundir.read_csv(record["areas"])])
    assert (lv > 0).all()
    assert (masks.array == 1).sum(axis=(1, 2)) * 0.4 * 0.4 == pytest.approx(lv)
    assert record["ed_frame"] == lv.argmax() != lv.argmin() == record["es_frame"]
