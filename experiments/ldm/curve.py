"""Validation curve of a diffusion run (WORKDIR/metrics.jsonl) as a Markdown table: the weighted
denoising loss on held-out latents at fixed sigma, with the mix and with the null condition.

  .venv/bin/python experiments/ldm/curve.py runs/ldm_demo
"""
import json
import pathlib
import sys

ALL_SIGMAS = ("0.2", "0.5", "1", "2", "5")  # runs before σ = 2 and 5 were logged have only 3


def main() -> None:
  workdir = pathlib.Path(sys.argv[1])
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  t0 = min(r["time"] for r in rows)
  SIGMAS = [s for s in ALL_SIGMAS if any(f"val/sigma{s}_cond" in r for r in rows)]
  head = " | ".join(f"σ={s}: cond / null (ratio)" for s in SIGMAS)
  print(f"| step | minutes | {head} |")
  print("|---:|---:|" + "---:|" * len(SIGMAS))
  for r in rows:
    if "val/val_loss" in r:
      cells = " | ".join(f"{r[f'val/sigma{s}_cond']:.3f} / {r[f'val/sigma{s}_uncond']:.3f} "
                         f"({r[f'val/sigma{s}_ratio']:.2f})" for s in SIGMAS)
      print(f"| {r['step']} | {(r['time'] - t0) / 60:.1f} | {cells} |")


if __name__ == "__main__":
  main()
