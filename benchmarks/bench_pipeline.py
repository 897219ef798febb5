"""Throughput of the training pipeline (examples per second), against what the demo trainer needs.

  .venv/bin/python benchmarks/bench_pipeline.py                      # synthetic data, demo settings
  .venv/bin/python benchmarks/bench_pipeline.py --data data/prepared/train --crop-samples 16000

Without --data it writes a synthetic dataset in the renderer's layout (bass + 6 stems per track,
16 kHz) to a temporary folder, prepares it, and times `make_train_dataset` with the demo
autoencoder's settings (batch 16 x 1 s crops). The demo trainer consumes about 1-2 steps/s, i.e.
16-32 examples/s; the pipeline should deliver at least 5x that.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time

import numpy as np

STEMS = ("bass", "drums", "keys", "guitar", "pad", "strings", "organ")


def write_synthetic(root: pathlib.Path, tracks: int, seconds: float, sr: int) -> None:
  """Renderer-layout tracks with noise stems; every 4th second of bass is silent."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  n = int(seconds * sr)
  for t in range(tracks):
    d = root / f"track{t:03d}"
    d.mkdir(parents=True)
    for s in STEMS:
      wav = (0.1 * rng.standard_normal((n, 2))).astype(np.float32)
      if s == "bass":
        wav[(np.arange(n) // sr) % 4 == 3] = 0.0
      sf.write(d / f"{s}.wav", wav, sr, subtype="PCM_16")


def measure(data_dir, *, crop_samples: int, batch_size: int, batches: int, warmup: int,
            workers: int, threads: int) -> dict:
  from bassgen.data import pipeline  # pylint: disable=g-import-not-at-top

  ds = pipeline.make_train_dataset(data_dir, crop_samples=crop_samples, batch_size=batch_size,
                                   seed=0, shard_index=0, shard_count=1, worker_count=workers,
                                   num_threads=threads)
  it = iter(ds)
  t0 = time.perf_counter()
  for _ in range(warmup):
    next(it)
  t1 = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  t2 = time.perf_counter()
  assert batch["mix"].shape == (batch_size, crop_samples)
  return {"examples_per_s": round(batches * batch_size / (t2 - t1), 1),
          "batches_per_s": round(batches / (t2 - t1), 2), "first_batches_s": round(t1 - t0, 2),
          "workers": workers, "threads": threads, "batch_size": batch_size,
          "crop_samples": crop_samples}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", help="a prepared folder; default: synthetic data in a temp folder")
  p.add_argument("--tracks", type=int, default=8)
  p.add_argument("--seconds", type=float, default=60.0)
  p.add_argument("--sample-rate", type=int, default=16000)
  p.add_argument("--crop-samples", type=int, default=16000)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--batches", type=int, default=100)
  p.add_argument("--warmup", type=int, default=5)
  p.add_argument("--workers", type=int, nargs="+", default=[0])
  p.add_argument("--threads", type=int, nargs="+", default=[1, 4])
  args = p.parse_args()
  if any(w > 0 for w in args.workers):
    # Grain's worker processes read absl flags; this script is not run under absl.app.
    from absl import flags  # pylint: disable=g-import-not-at-top
    flags.FLAGS.mark_as_parsed()

  with tempfile.TemporaryDirectory() as tmp:
    data_dir = args.data
    if data_dir is None:
      from bassgen.data import prepare  # pylint: disable=g-import-not-at-top
      root = pathlib.Path(tmp) / "root"
      write_synthetic(root, args.tracks, args.seconds, args.sample_rate)
      t0 = time.perf_counter()
      prepare.prepare("folder", root, pathlib.Path(tmp) / "prepared",
                      sample_rate=args.sample_rate, workers=2, log=lambda _: None)
      print(json.dumps({"prepare_s": round(time.perf_counter() - t0, 2), "tracks": args.tracks,
                        "seconds_per_track": args.seconds, "stems": len(STEMS)}))
      data_dir = pathlib.Path(tmp) / "prepared"
    for workers in args.workers:
      for threads in args.threads:
        print(json.dumps(measure(data_dir, crop_samples=args.crop_samples,
                                 batch_size=args.batch_size, batches=args.batches,
                                 warmup=args.warmup, workers=workers, threads=threads)))


if __name__ == "__main__":
  main()
