"""How fast can this CPU train the road model? One optimizer step of each candidate network.

For DDRNet-23-slim and D-LinkNet-34 (the two road-model candidates of issue 14), batch 8 of
256² crops, one sigmoid road output, BCE + Dice, Adam:

* MindSpore PyNative (what ``roadseg train`` runs by default);
* MindSpore graph mode (the same step under ``ms.jit``, as ``mode: graph`` / ``jit: true``);
* PyTorch eager, the same architecture from ``tests/torch_reference.py`` (peer figure);
* crop size: the PyNative step at 384² as well (pixels per second is the comparable figure);
* the data pipeline: seconds to draw one augmented batch from a chips corpus with 1, 2 (and 4
  where there are 4 cores) loader threads (needs ``--data``, e.g. the corpus
  ``roadseg dataset assemble`` builds).

Run: ``.venv/bin/python bench/bench_train_step.py [--data ~/.cache/roadseg/corpus_05m]
[--steps 6] [--networks ddrnet23_slim,dlinknet34] [--launch-blocking]``. Markdown goes to
stdout, progress to stderr.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from _table import machine, table, today  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _median_step(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _batch(batch: int, crop: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, crop, crop)).astype(np.float32)
    y = (rng.random((batch, crop, crop)) < 0.1).astype(np.int32)
    return x, y


def mindspore_step(name: str, batch: int, crop: int, graph: bool, steps: int) -> float:
    """Seconds per step of the trainer's step function (loss, grads, Adam update)."""
    import mindspore as ms

    from segcore import create_model
    from segcore.config import TrainConfig
    from segcore.builders import build_loss, build_optimizer

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_seed(0)
    cfg = TrainConfig(model=name, num_classes=1, loss="bce_dice", ignore_index=255)
    net = create_model(name, num_classes=1)
    net.set_train(True)
    loss_fn = build_loss(cfg, "segmentation", None)
    opt = build_optimizer(cfg, net.trainable_params(), 1e-4)

    def forward(x, y):
        out = net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return loss_fn(out, y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    def step(x, y):
        loss, grads = grad_fn(x, y)
        opt(grads)
        return loss

    fn = ms.jit(step) if graph else step
    xn, yn = _batch(batch, crop)
    x, y = ms.Tensor(xn), ms.Tensor(yn)

    def run():
        float(fn(x, y).asnumpy())

    return _median_step(run, steps, warmup=2)


def torch_step(name: str, batch: int, crop: int, steps: int) -> float:
    """The same step in PyTorch eager with the reference architecture."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import torch_reference as tr

    torch.manual_seed(0)
    if name == "ddrnet23_slim":
        model = tr.DualResNet(num_classes=1, planes=32, spp_planes=128, head_planes=64)
    elif name == "dlinknet34":
        model = tr.DinkNet34(num_classes=1)
    else:
        raise ValueError(f"no PyTorch reference for {name}")
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xn, yn = _batch(batch, crop)
    x = torch.from_numpy(xn)
    y = torch.from_numpy(yn.astype(np.float32))[:, None]

    def run():
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        p = torch.sigmoid(logits)
        inter = (p * y).sum()
        dice = 1 - (2 * inter + 1) / (p.sum() + y.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + dice
        loss.backward()
        opt.step()

    return _median_step(run, steps, warmup=2)


def pipeline_rows(data: Path, batch: int, crop: int, batches: int):
    """Seconds to draw one augmented training batch with 1, 2, 4 loader threads."""
    from segcore.builders import batches as epoch_batches
    from segcore.builders import build_datasets
    from segcore.config import load_config

    recipe = Path(__file__).resolve().parents[1] / "resources/configs/road_model_train.yaml"
    rows = []
    for workers in sorted({1, 2, min(4, os.cpu_count() or 1)}):  # MindSpore caps at the cores
        cfg = load_config(recipe, [f"data_root={data}", f"num_workers={workers}",
                                   f"batch_size={batch}", f"crop_size={crop}"])
        train_ds, _ = build_datasets(cfg, cfg.seed)
        idx = np.random.default_rng(0).permutation(len(train_ds))[:batch * (batches + 1)]
        it = iter(epoch_batches(train_ds, idx, batch, workers))
        next(it)  # start-up (worker pool) not counted
        t0 = time.perf_counter()
        n = sum(1 for _ in it)
        dt = (time.perf_counter() - t0) / max(n, 1)
        rows.append([workers, f"{batch}x{crop}²", dt])
        log(f"  pipeline workers={workers}: {dt:.3f} s/batch")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", default="ddrnet23_slim,dlinknet34")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per case (median)")
    ap.add_argument("--data", type=Path, default=None, help="chips corpus for the pipeline rows")
    ap.add_argument("--launch-blocking", action="store_true",
                    help="MindSpore CPU operators synchronous for this whole process (the road "
                    "recipes' launch_blocking: true); run once with and once without")
    args = ap.parse_args(argv)
    mode = "MindSpore PyNative"
    if args.launch_blocking:
        from segcore.device import set_device

        set_device("cpu", "pynative", launch_blocking=True)
        mode = "MindSpore PyNative, launch_blocking"
    nets = [n.strip() for n in args.networks.split(",") if n.strip()]
    rows = []
    for name in nets:
        # (name is bound as a default argument: each case runs in this iteration anyway)
        cases = [(mode, args.crop,
                  lambda c, name=name: mindspore_step(name, args.batch, c, False, args.steps)),
                 ("MindSpore graph (ms.jit)", args.crop,
                  lambda c, name=name: mindspore_step(name, args.batch, c, True, args.steps)),
                 ("PyTorch eager", args.crop,
                  lambda c, name=name: torch_step(name, args.batch, c, args.steps))]
        if name == nets[0]:
            cases.append((mode, 384,
                          lambda c, name=name: mindspore_step(name, args.batch, c, False,
                                                              args.steps)))
        for label, crop, fn in cases:
            log(f"{name}: {label} crop {crop}")
            try:
                t = fn(crop)
            except Exception as exc:  # noqa: BLE001 - a failing case is a row, not the end
                rows.append([name, label, f"{args.batch}x{crop}²", "failed", str(exc)[:60], ""])
                log(f"  failed: {exc}")
                continue
            px = args.batch * crop * crop / t / 1e6
            rows.append([name, label, f"{args.batch}x{crop}²", t, args.batch / t, px])
            log(f"  {t:.3f} s/step")
    out = [f"### Training step, {today()}: {machine()}", "",
           "Median of the timed steps after two warm-up steps; random inputs, one road output, "
           "BCE + Dice, Adam, training mode (auxiliary heads as each network builds them).", "",
           table(["network", "framework / mode", "batch", "s/step", "images/s", "Mpx/s"], rows),
           ""]
    if args.data is not None:
        if not (args.data / "manifest.json").exists():
            log(f"{args.data}: no chips corpus (manifest.json) here; pipeline rows skipped")
        else:
            pr = pipeline_rows(args.data, args.batch, args.crop, batches=6)
            out += ["Data pipeline (chips corpus, `roads` augmentation, one batch drawn):", "",
                    table(["loader workers", "batch", "s/batch"], pr), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
