"""The whole `bassgen sample` process, as a user runs it, against the machine's matmul ceiling.

  .venv/bin/python benchmarks/bench_sample_cli.py            # what `make bench` runs
  .venv/bin/python benchmarks/bench_sample_cli.py --cases 60s --repeats 1   # a quick look

Cases (the bundled demo model and the bundled demo mix, tiled to length):
- `60s`, `10min`: one mix; `folder`: a folder of 24 mixes of 20 s (different slices of the tiling).
For each case the command runs in a fresh process twice over: "first" with an empty compilation
cache (a new user's first run; JAX compiles everything), then "second" with the cache the first
left (every later run). Each is measured `--repeats` times (the median is reported; "first" gets a
new empty cache each time) after one untimed warm-up run that fills the operating system's file
cache. Wall time is the child's, × real time is audio seconds / wall, and peak RSS is the child's
own (`os.wait4`), so this process's memory is not counted.

The matmul ceiling is float32 `jnp.dot` of two 4096 x 4096 matrices on the default device, the
median of 5 calls after a warm-up: the GFLOP/s any program on this machine can hope for.

Prints one JSON object per measurement and, at the end, markdown rows for BENCHMARKS.md. Run it on
a quiet machine: the numbers mean nothing while other jobs share the CPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = ("60s", "10min", "folder")


def _inputs(case: str, mix_path: pathlib.Path, folder: pathlib.Path) -> tuple[list[str], float]:
  """Writes the case's input(s) into `folder`; returns (the command's input arguments, seconds of
  audio in all)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top

  wav, sr = sf.read(str(mix_path), dtype="float32", always_2d=True)
  wav = wav.mean(axis=1)

  def tiled(seconds: float, offset_s: float = 0.0) -> np.ndarray:
    n, start = int(seconds * sr), int(offset_s * sr) % len(wav)
    return np.tile(wav, -(-(n + start) // len(wav)) + 1)[start: start + n]

  folder.mkdir(parents=True, exist_ok=True)
  if case == "folder":
    songs = folder / "songs"
    songs.mkdir(exist_ok=True)
    for i in range(24):
      sf.write(str(songs / f"song_{i:02d}.wav"), tiled(20.0, offset_s=1.7 * i), sr)
    return [str(songs)], 24 * 20.0
  seconds = {"60s": 60.0, "10min": 600.0}[case]
  path = folder / f"mix_{case}.wav"
  sf.write(str(path), tiled(seconds), sr)
  return [str(path)], seconds


def _run(args: list[str], env: dict) -> tuple[float, float]:
  """(wall seconds, peak RSS in GiB) of one child process; raises if it fails."""
  t0 = time.perf_counter()
  proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
  _, status, usage = os.wait4(proc.pid, 0)
  wall = time.perf_counter() - t0
  err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f"{' '.join(args)} failed:\n{err[-3000:]}")
  scale = 1 if sys.platform == "darwin" else 1024   # ru_maxrss: bytes on macOS, KiB on Linux
  return wall, usage.ru_maxrss * scale / 2**30


def _sample_case(case: str, args: argparse.Namespace, work: pathlib.Path) -> list[dict]:
  inputs, seconds = _inputs(case, pathlib.Path(args.mix), work / case)
  script = pathlib.Path(sys.executable).parent / "bassgen"   # the console script a user runs
  command = [str(script)] if script.exists() else [sys.executable, "-m", "bassgen.cli"]
  bassgen = command + ["sample", *inputs, "--checkpoint", args.checkpoint, "--out",
                       str(work / case / "out"), "--overwrite"]
  rows = []
  for process in ("first", "second"):
    walls, peaks = [], []
    cache = work / case / "jax-cache"
    for rep in range(args.repeats + 1):   # repetition 0: the untimed warm-up
      if process == "first":   # every "first" run starts from an empty compilation cache
        shutil.rmtree(cache, ignore_errors=True)
      env = dict(os.environ, BASSGEN_JAX_CACHE_DIR=str(cache))
      wall, peak = _run(bassgen, env)
      if rep > 0:
        walls.append(wall)
        peaks.append(peak)
    wall = statistics.median(walls)
    row = {"case": case, "process": process, "audio_s": seconds, "wall_s": round(wall, 2),
           "x_real_time": round(seconds / wall, 1), "peak_rss_gib": round(max(peaks), 2),
           "walls_s": [round(w, 2) for w in walls],
           "command": " ".join(["bassgen", "sample", *[pathlib.Path(i).name for i in inputs],
                                "--checkpoint", args.checkpoint])}
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def _machine() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  return (f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}, JAX {jax.__version__} on "
          f"{jax.default_backend()}, {datetime.date.today().isoformat()}")


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint", default="experiments/demo")
  parser.add_argument("--mix", default=str(ROOT / "experiments/demo/inputs/song_mix.flac"))
  parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {CASES}")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per (case, process)")
  parser.add_argument("--work", help="folder for inputs, outputs and caches (default: a temporary one)")
  args = parser.parse_args()
  cases = [c for c in args.cases.split(",") if c]
  unknown = [c for c in cases if c not in CASES]
  if unknown:
    parser.error(f"unknown case(s) {unknown}; choose from {CASES}")
  work = pathlib.Path(args.work) if args.work else pathlib.Path(tempfile.mkdtemp(prefix="bench-sample-"))
  rows = []
  for case in cases:
    rows += _sample_case(case, args, work)
  sys.path.insert(0, str(ROOT / "benchmarks"))
  from flops import matmul_ceiling  # pylint: disable=g-import-not-at-top
  ceiling = matmul_ceiling()
  print(json.dumps(ceiling), flush=True)
  print(f"\nmachine: {_machine()}")
  print("\n| case | audio | process | wall (median) | × real time | peak RSS | command |")
  print("|---|---:|---|---:|---:|---:|---|")
  for r in rows:
    print(f"| {r['case']} | {r['audio_s']:.0f} s | {r['process']} | {r['wall_s']:.2f} s | "
          f"{r['x_real_time']:.1f}× | {r['peak_rss_gib']:.2f} GiB | `{r['command']}` |")
  print(f"\nfloat32 matmul ceiling ({ceiling['n']}², `jnp.dot`, {ceiling['device']}): "
        f"{ceiling['gflops']} GFLOP/s")
  if not args.work:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
