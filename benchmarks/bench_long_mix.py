"""Long inputs: a whole song in one pass with the CLI's path (chunked codec + bucketed sampler).

  .venv/bin/python benchmarks/bench_long_mix.py --minutes 10

Tiles the bundled demo mix to the requested length, runs `BassGenerator.generate` (what `bassgen
sample` runs) with the demo bundle, and reports wall time, x real time and the process's peak RSS.
Run it at two lengths to see how memory grows with length. `--wave-to-wave` times the single
jitted function instead (after its compilation).
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
  parser.add_argument("--wave-to-wave", action="store_true",
                      help="time BassGenerator.wave_to_wave (one jitted function, one-pass codec; "
                           "the second call, after compilation) instead of generate")
  args = parser.parse_args()

  from bassgen.data import audio  # pylint: disable=g-import-not-at-top
  from bassgen.generation import BassGenerator  # pylint: disable=g-import-not-at-top

  gen = BassGenerator.load(args.checkpoint)
  wav, sr = audio.load_audio(args.mix)
  n = int(args.minutes * 60 * sr)
  mix = np.tile(wav, -(-n // len(wav)))[:n]
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  first = None
  if args.wave_to_wave:
    t0 = time.perf_counter()
    gen.wave_to_wave(mix, sr)
    first = time.perf_counter() - t0
  t0 = time.perf_counter()
  bass = gen.wave_to_wave(mix, sr)[0] if args.wave_to_wave else gen.generate(mix, sr)[0]
  wall = time.perf_counter() - t0
  assert len(bass) == n and np.all(np.isfinite(bass))
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(json.dumps({"minutes": args.minutes, "path": "wave_to_wave" if args.wave_to_wave
                    else "generate", "sample_rate": sr, "wall_s": round(wall, 2),
                    "first_call_s": None if first is None else round(first, 1),
                    "x_real_time": round(args.minutes * 60 / wall, 1),
                    "peak_rss_gib": round(peak, 2),
                    "rss_after_loading_gib": round(rss_before, 2)}))


if __name__ == "__main__":
  main()
