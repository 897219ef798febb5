r"""How often XLA compiles: inside training, across song lengths, and in a second process.

  .venv/bin/python benchmarks/bench_compiles.py

1. Training: the `runlocal` autoencoder and diffusion trainers on a few synthetic tracks, run for
   50 and for 100 steps with evaluation and a checkpoint every 10 steps. If anything recompiled
   inside the loop (a new shape, a Python value baked into a trace, a host-side op per step), the
   100-step run would compile more than the 50-step one. Both must compile the same number.
2. Sampling: the bundled demo model on 5 song lengths (6 to 40 s). Each call compiles at most the
   sampler for a new length bucket; a length whose bucket was seen before compiles nothing.
3. A second process sampling the lengths the first saw, with the persistent compilation cache the
   first left: 0 compiles.

Counts are XLA backend compilations (`/jax/core/compile/backend_compile_duration` events, which the
persistent cache also fires on a hit, minus the cache hits). Prints one JSON object per row.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
LENGTHS_S = (6.0, 9.5, 13.0, 20.0, 40.0)

_COUNTER = """
from jax import monitoring
counts = {"requests": 0, "cache_hits": 0}
def _duration(event, *_a, **_k):
  if event == "/jax/core/compile/backend_compile_duration":
    counts["requests"] += 1
def _event(event, *_a, **_k):
  if event == "/jax/compilation_cache/cache_hits":
    counts["cache_hits"] += 1
monitoring.register_event_duration_secs_listener(_duration)
monitoring.register_event_listener(_event)
def compiled():
  return counts["requests"] - counts["cache_hits"]
"""


def _train(kind: str, steps: int, data: pathlib.Path, work: pathlib.Path) -> int:
  """Backend compiles of one `runlocal` training run of `steps` steps (in a fresh process)."""
  config = "autoencoder" if kind == "autoencoder" else "ldm"
  extra = (f", 'config.autoencoder_checkpoint={data / 'ae'}'" if kind == "ldm" else "")
  code = _COUNTER + f"""
import json
from bassgen.config_loading import load_config
from bassgen.trainers import autoencoder, ldm
overrides = ['train.num_steps={steps}', 'train.eval_every=10', 'train.ckpt_every=10',
             'train.log_every=5', 'train.keep_checkpoints=2',
             'data.train_dir={data / 'prepared'}', 'data.val_dir={data / 'prepared'}'{extra}]
cfg = load_config('{ROOT / 'configs' / (config + '.py')}:runlocal', overrides)
({config}).train_and_evaluate(cfg, '{work}')
print(json.dumps({{"compiled": compiled()}}))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu", BASSGEN_JAX_CACHE_DIR="off")
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])["compiled"]


def _sample(checkpoint: str, cache: pathlib.Path) -> list[dict]:
  """Per length: backend compiles of `generate` in one process that samples every length."""
  code = _COUNTER + f"""
import json
import numpy as np
from bassgen import compile_cache, samplers
from bassgen.data import audio
from bassgen.generation import BassGenerator, SampleOptions
compile_cache.enable()
gen = BassGenerator.load('{checkpoint}')
mix, sr = audio.load_audio('{ROOT / 'experiments/demo/inputs/song_mix.flac'}')
rows = []
for seconds in {LENGTHS_S!r}:
  n = int(seconds * sr)
  clip = np.tile(mix, -(-n // len(mix)))[:n]
  before = compiled()
  gen.generate(clip, sr, options=SampleOptions(seed=0))
  frames = gen.codec.num_latent_frames(int(seconds * gen.sample_rate))
  bucket = samplers.bucket_length(frames, gen.cfg.sample.bucket_multiple, gen.cfg.sample.buckets)
  rows.append({{"seconds": seconds, "bucket": bucket, "compiled": compiled() - before}})
print(json.dumps(rows))
"""
  env = dict(os.environ, JAX_PLATFORMS="cpu", BASSGEN_JAX_CACHE_DIR=str(cache))
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                       text=True, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--checkpoint", default=str(ROOT / "experiments/demo"))
  parser.add_argument("--steps", default="50,100")
  args = parser.parse_args()
  sys.path.insert(0, str(ROOT / "tests"))
  import fixtures  # pylint: disable=g-import-not-at-top  (the tests' tiny data and random AE)

  with tempfile.TemporaryDirectory(prefix="bench-compiles-") as tmp:
    tmp = pathlib.Path(tmp)
    data = fixtures.make_ldm_data(tmp / "data")
    for kind in ("autoencoder", "ldm"):
      counts = {int(s): _train(kind, int(s), data, tmp / f"{kind}_{s}")
                for s in args.steps.split(",")}
      print(json.dumps({"case": f"train {kind} (runlocal, eval + checkpoint every 10 steps)",
                        "compiles_by_steps": counts,
                        "recompiles_inside_training": max(counts.values()) - min(counts.values())}),
            flush=True)
    cache = tmp / "jax-cache"
    for process in ("first", "second"):
      rows = _sample(args.checkpoint, cache)
      print(json.dumps({"case": f"sample 5 lengths, {process} process", "rows": rows,
                        "compiles": sum(r["compiled"] for r in rows),
                        "buckets": len({r["bucket"] for r in rows})}), flush=True)


if __name__ == "__main__":
  main()
