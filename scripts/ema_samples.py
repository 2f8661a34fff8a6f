"""Where a run's G and its moving average (ema.decay) put their samples, on a toy dataset: one markdown row per
run of a sweep (docs/results/ema.md).

    ganlab train -m seed=0,1,2,3,4 ema.decay=0.999 hydra.sweep.dir=SWEEP
    python scripts/ema_samples.py SWEEP

Each run's checkpoint holds G and G_ema; 2,500 samples of each (the same codes, seed 1) are measured by the
median distance to the nearest mode centre, the median distance to the origin, and their spread (the norm of the
per-coordinate standard deviations). summary.json gives both's final metrics and the evaluations at which each was
fully collapsed (reverse KL >= 0.9 log K).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ganlab.gan import build


def measure(run: Path) -> str:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    if "G_ema" not in state:
        raise SystemExit(f"ema_samples: error: {run} holds no moving average of G; train with ema.decay=0.999")
    cfg = OmegaConf.create(json.loads(state["config"]))
    exp = build(cfg, torch.device("cpu"))
    centres = exp.data.centers.float()
    z = torch.randn(2500, int(cfg.model.latent_dim), generator=torch.Generator().manual_seed(1))
    cells = []
    for weights in (state["G"], state["G_ema"]):
        exp.G.load_state_dict(weights)
        exp.G.eval()
        with torch.no_grad():
            x = exp.G(z)
        nearest = torch.cdist(x, centres).min(1).values.median().item()
        cells.append(f"{nearest:.2f} / {x.norm(dim=1).median().item():.2f} / {x.std(0).norm().item():.3f}")
    summary = json.loads((run / "summary.json").read_text())
    m, e, h = summary["metrics"], summary["metrics_ema"], summary["history"]["metrics"]
    full = 0.9 * math.log(summary["n_modes"])
    collapsed = [sum(v >= full for v in h[k]) for k in ("reverse_kl", "ema/reverse_kl")]
    evals = len(h["reverse_kl"])
    return (f"| {summary['seed']} | {m['modes_captured']} / {e['modes_captured']} | {m['high_quality_pct']:.1f} / "
            f"{e['high_quality_pct']:.1f} | {m['reverse_kl']:.3f} / {e['reverse_kl']:.3f} | {collapsed[0]} / "
            f"{collapsed[1]} of {evals} | {cells[0]} | {cells[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path)
    runs = sorted(p.parent for p in parser.parse_args().sweep.glob("*/summary.json"))
    print("| seed | modes G / EMA | HQ % G / EMA | reverse KL G / EMA | fully collapsed evaluations G / EMA "
          "| G: to nearest mode / radius / spread | EMA: to nearest mode / radius / spread |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        print(measure(run))


if __name__ == "__main__":
    main()
