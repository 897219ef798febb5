"""Prints the validation curve of a training run (from WORKDIR/metrics.jsonl) as a Markdown table.

  .venv/bin/python experiments/autoencoder/curve.py runs/ae_demo
"""
import json
import pathlib
import sys


def main() -> None:
  workdir = pathlib.Path(sys.argv[1])
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  t0 = min(r["time"] for r in rows)
  print("| step | minutes | val log-mel L1 mix (dB) | val log-mel L1 bass (dB) | val MR-STFT log-mag mix | bass |")
  print("|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    if "val/mix/log_mel_db" in r:
      print(f"| {r['step']} | {(r['time'] - t0) / 60:.1f} | {r['val/mix/log_mel_db']:.2f} | "
            f"{r['val/target/log_mel_db']:.2f} | {r['val/mix/mrstft_logmag']:.3f} | "
            f"{r['val/target/mrstft_logmag']:.3f} |")


if __name__ == "__main__":
  main()
