"""Training and inference speed of the U-Net at 256 x 256, against a plain fp32 run.

For widths 8, 16 and 32 (depth 4) it times, in one process: the baseline (fp32, NCHW
memory layout), channels-last fp32, and channels-last bf16 autocast. bf16 is labelled
native or emulated: CPUs without AMX or AVX-512 BF16 run it in software, slowly. When
MONAI is installed (the ``bench`` extra), MONAI's BasicUNet at about the same parameter
count is timed the same way. Each figure is images per second after warm-up steps;
GFLOP/s counts 3 forward passes per trained image and one per inferred image.
"""

from __future__ import annotations

import time

import torch

from echoscale.train import cpu_supports_bf16, segmentation_loss
from echoscale.unet import UNet, count_parameters, forward_flops

SIZE = (256, 256)
WIDTHS = (8, 16, 32)


def _time(fn, steps: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def _measure(model, device, channels_last: bool, bf16: bool, batch: int, steps: int):
    model = model.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.rand(batch, 1, *SIZE, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 4, (batch, *SIZE), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def train_step():
        with cast:
            loss = segmentation_loss(model(x), y).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer_step():
        with cast:
            model(x)

    return batch / _time(train_step, steps), batch / _time(infer_step, steps)


def _monai_like(width: int, target: int):
    """MONAI's BasicUNet with features scaled to about ``target`` parameters."""
    try:
        from monai.networks.nets import BasicUNet
    except ImportError:
        return None
    best = None
    for base in range(2, 129, 2):
        feats = (base, base, 2 * base, 4 * base, 8 * base, base)
        net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=4, features=feats)
        n = count_parameters(net)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (net, n)
        if n > target:
            break
    return best[0]


def run() -> dict:
    """Time every variant; return the report section."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    native_bf16 = device.type == "cuda" or cpu_supports_bf16()
    batch = 8 if device.type == "cuda" else 4
    steps = 10 if device.type == "cuda" else 2
    rows = []
    for width in WIDTHS:
        torch.manual_seed(0)
        net = UNet(1, 4, width=width, depth=4)
        params, flops = count_parameters(net), forward_flops(net, SIZE)
        variants = {
            "fp32_nchw": (False, False),
            "fp32_channels_last": (True, False),
            "bf16_channels_last": (True, True),
        }
        row = {"width": width, "parameters": params, "gflops_forward": flops / 1e9}
        for name, (cl, bf16) in variants.items():
            emulated = bf16 and not native_bf16
            if emulated and width > 16:
                row[name] = {
                    "skipped": "bf16 is emulated here; width 32 would take minutes"
                }
                continue
            torch.manual_seed(0)
            model = UNet(1, 4, width=width, depth=4)
            # emulated bf16 is tens of times slower: one image, one step says enough
            n, b = (1, 1) if emulated else (steps, batch)
            train_ips, infer_ips = _measure(model, device, cl, bf16, b, n)
            row[name] = {
                "train_images_per_s": round(train_ips, 3),
                "infer_images_per_s": round(infer_ips, 3),
                "train_gflop_per_s": round(3 * flops * train_ips / 1e9, 2),
                "infer_gflop_per_s": round(flops * infer_ips / 1e9, 2),
            }
        base = row["fp32_nchw"]
        for name in ("fp32_channels_last", "bf16_channels_last"):
            if "skipped" in row[name]:
                continue
            row[name]["train_speedup_vs_fp32_nchw"] = round(
                row[name]["train_images_per_s"] / base["train_images_per_s"], 3
            )
            row[name]["infer_speedup_vs_fp32_nchw"] = round(
                row[name]["infer_images_per_s"] / base["infer_images_per_s"], 3
            )
        monai = _monai_like(width, params)
        if monai is not None:
            ips = _measure(monai, device, False, False, batch, steps)
            row["monai_basicunet_fp32"] = {
                "parameters": count_parameters(monai),
                "train_images_per_s": round(ips[0], 3),
                "infer_images_per_s": round(ips[1], 3),
            }
        rows.append(row)
    return {
        "what": f"U-Net depth 4 at 256x256, batch {batch}, images/s after warm-up",
        "device": str(device),
        "cuda": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "cuda_note": None
        if device.type == "cuda"
        else "no CUDA device on this machine",
        "bf16": "native" if native_bf16 else "emulated (no AMX or AVX-512 BF16)",
        "monai": "measured"
        if rows and "monai_basicunet_fp32" in rows[0]
        else "not installed (pip install 'echoscale[bench]')",
        "threads": torch.get_num_threads(),
        "runs": rows,
    }


def markdown(section: dict) -> str:
    """A Markdown table: images/s and speed-up against fp32 NCHW per variant."""
    lines = [
        f"device {section['device']}, bf16 {section['bf16']}, MONAI {section['monai']}",
        "",
        "| width | parameters | variant | train img/s | infer img/s | train GFLOP/s "
        "| train speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in section["runs"]:
        for name in ("fp32_nchw", "fp32_channels_last", "bf16_channels_last"):
            v = r[name]
            if "skipped" in v:
                lines.append(
                    f"| {r['width']} | {r['parameters']} | {name} | skipped |||"
                )
                continue
            lines.append(
                f"| {r['width']} | {r['parameters']} | {name} "
                f"| {v['train_images_per_s']} | {v['infer_images_per_s']} "
                f"| {v['train_gflop_per_s']} "
                f"| {v.get('train_speedup_vs_fp32_nchw', 1.0)} |"
            )
    return "\n".join(lines) + "\n"
