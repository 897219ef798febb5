"""Held-out reconstruction quality of a trained autoencoder, beside two reference codecs.

  .venv/bin/python experiments/autoencoder/evaluate.py --checkpoint runs/ae_demo \
      --data data/renders/test --out experiments/autoencoder/results_demo.json

For every held-out track (songs and chorales never used in training) it reconstructs `bass.wav`
and `mix.wav` (the first --seconds of each) and reports log-mel L1 (80 bands, dB, floor 80 dB
below the reference's maximum), multi-resolution STFT distance and SI-SDR; 8-bit mu-law and a
4 kHz low-pass are computed the same way for scale.
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np
import scipy.signal


def mu_law_8bit(x: np.ndarray) -> np.ndarray:
  mu = 255.0
  y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
  q = np.round((y + 1) / 2 * mu) / mu * 2 - 1
  return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu).astype(np.float32)


def lowpass_4k(x: np.ndarray, sr: int) -> np.ndarray:
  sos = scipy.signal.butter(8, 4000, fs=sr, output="sos")
  return scipy.signal.sosfiltfilt(sos, x).astype(np.float32)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--data", default="data/renders/test")
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--max-tracks", type=int, default=60)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()

  from bassgen.codec import Codec  # pylint: disable=g-import-not-at-top
  from bassgen.data import audio  # pylint: disable=g-import-not-at-top
  from bassgen.evaluation.reconstruction import reconstruction_metrics  # pylint: disable=g-import-not-at-top

  codec = Codec.load(args.checkpoint)
  sr = codec.sample_rate
  tracks = sorted(p for p in pathlib.Path(args.data).iterdir() if (p / "bass.wav").is_file())
  tracks = tracks[: args.max_tracks]
  systems = {"autoencoder": codec.reconstruct, "mu_law_8bit": mu_law_8bit,
             "lowpass_4khz": lambda x: lowpass_4k(x, sr)}
  scores: dict = {s: {"bass": [], "mix": []} for s in systems}
  for t in tracks:
    for stem in ("bass", "mix"):
      x, _ = audio.load_audio(t / f"{stem}.wav", sr)
      x = x[: int(args.seconds * sr)]
      if np.sqrt(np.mean(x**2)) < 1e-4:
        continue
      for name, fn in systems.items():
        scores[name][stem].append(reconstruction_metrics(x, fn(x)[: len(x)], sr))
  summary = {"checkpoint": args.checkpoint, "data": args.data, "tracks": len(tracks),
             "seconds_per_track": args.seconds, "sample_rate": sr, "results": {}}
  for name, per_stem in scores.items():
    summary["results"][name] = {
        stem: {**{k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]},
               **{f"{k}_median": float(np.nanmedian([r[k] for r in rows])) for k in rows[0]},
               "count": len(rows)}
        for stem, rows in per_stem.items() if rows}
  text = json.dumps(summary, indent=2)
  print(text)
  for name, per_stem in summary["results"].items():
    print(name, {stem: round(v["log_mel_l1_db"], 2) for stem, v in per_stem.items()})
  if args.out:
    pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
  main()
