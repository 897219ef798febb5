"""Long inputs: a whole song in one pass with the CLI's path (chunked codec + bucketed sampler).

  .venv/bin/python benchmarks/bench_long_mix.py --minutes 10

Tiles the bundled demo mix to the requested length, runs `BassGenerator.generate` (what `bassgen
sample` runs) with the demo bundle, and reports wall time, x real time and the process's peak RSS.
Run it at two lengths to see how memory grows with length.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint", default="experiments/demo")
  parser.add_argument("--mix", default="experiments/demo/inputs/song_mix.flac")
  parser.add_argument("--minutes", type=float, default=10.0)
  args = parser.parse_args()

  from bassgen.data import audio  # pylint: disable=g-import-not-at-top
  from bassgen.generation import BassGenerator  # pylint: disable=g-import-not-at-top

  gen = BassGenerator.load(args.checkpoint)
  wav, sr = audio.load_audio(args.mix)
  n = int(args.minutes * 60 * sr)
  mix = np.tile(wav, -(-n // len(wav)))[:n]
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  t0 = time.perf_counter()
  bass = gen.generate(mix, sr)[0]
  wall = time.perf_counter() - t0
  assert len(bass) == n and np.all(np.isfinite(bass))
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(json.dumps({"minutes": args.minutes, "sample_rate": sr, "wall_s": round(wall, 1),
                    "x_real_time": round(args.minutes * 60 / wall, 1),
                    "peak_rss_gib": round(peak, 2),
                    "rss_after_loading_gib": round(rss_before, 2)}))


if __name__ == "__main__":
  main()
