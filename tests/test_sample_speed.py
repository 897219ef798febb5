"""What makes the whole `bassgen sample` process fast: models built from their saved structure (no
initialiser runs on load), the persistent compilation cache (a second process compiles nothing it
compiled before), and the pieces that keep one compiled shape at any length (chunked chroma, the
variants decoded as one batch)."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.extend.core
import numpy as np
import pytest
import soundfile as sf
from flax import nnx

from bassgen import generation, spectral
from bassgen.config_loading import load_config
from bassgen.models import unet
from fixtures import make_random_bundle

ROOT = pathlib.Path(__file__).parents[1]
DEMO = ROOT / "experiments" / "demo"
# The primitives that draw random numbers: what every random initialiser ends in.
DRAWS = ("random_bits", "random_fold_in", "random_split", "threefry2x32")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  return make_random_bundle(tmp_path_factory.mktemp("bundle"))   # runlocal: harmony head on


@pytest.fixture
def concrete_draws(monkeypatch):
  """The names of random-drawing primitives applied to concrete values (not traced for shapes)
  while the fixture is active; jit is disabled, so jitted initialisers show their primitives."""
  drawn = []
  real = jax.extend.core.Primitive.bind

  def bind(self, *args, **params):
    if self.name in DRAWS and not any(isinstance(a, jax.core.Tracer) for a in args):
      drawn.append(self.name)
    return real(self, *args, **params)

  monkeypatch.setattr(jax.extend.core.Primitive, "bind", bind)
  with jax.disable_jit():
    yield drawn


@pytest.fixture(scope="module")
def bundle_without_harmony(tmp_path_factory):
  harmony = load_config(f"{ROOT / 'configs' / 'ldm.py'}:runlocal").model.harmony
  harmony.enabled = harmony.onsets = False
  return make_random_bundle(tmp_path_factory.mktemp("plain"), harmony=harmony)


@pytest.mark.parametrize("which", ["demo", "with harmony head", "without harmony head"])
def test_a_bundle_loads_without_running_any_initialiser(which, bundle, bundle_without_harmony,
                                                        concrete_draws):
  path = {"demo": DEMO, "with harmony head": bundle,
          "without harmony head": bundle_without_harmony}[which]
  gen = generation.BassGenerator.load(path)
  assert concrete_draws == [], f"{len(concrete_draws)} random draws on load: {concrete_draws[:5]}"
  if which != "demo":
    assert unet.harmony_enabled(gen.cfg.model) == (which == "with harmony head")
  assert float(np.abs(np.asarray(gen.params["conv_in"]["kernel"])).max()) > 0


def test_the_draw_counter_sees_a_random_initialisation(concrete_draws):
  """The check above would catch the old load path: building a concrete U-Net draws."""
  cfg = load_config(f"{ROOT / 'configs' / 'ldm.py'}:runlocal")
  unet.UNet1D(unet.UNetConfig.from_config(cfg.model), rngs=nnx.Rngs(0))
  assert len(concrete_draws) > 10


def test_a_loaded_bundle_generates_after_the_shape_only_build(bundle):
  """The structure from the shape-only build (dropout streams filled with fixed keys) holds the
  saved weights and runs."""
  from bassgen.trainers import ldm as ldm_trainer
  gen = generation.BassGenerator.load(bundle)
  saved = nnx.to_pure_dict(nnx.state(ldm_trainer.build_model(gen.cfg, jax.random.key(1)),
                                     nnx.Param))   # what fixtures.make_random_bundle exported
  assert jax.tree.structure(saved) == jax.tree.structure(gen.params)
  for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(gen.params)):
    np.testing.assert_allclose(np.asarray(b, np.float32), np.asarray(a, np.float32), rtol=1e-3,
                               atol=1e-4)
  mix = (0.2 * np.sin(2 * np.pi * 110 * np.arange(gen.sample_rate) / gen.sample_rate)
         ).astype(np.float32)
  bass = gen.generate(mix, gen.sample_rate, options=generation.SampleOptions(steps=2))[0]
  assert bass.shape == mix.shape and np.all(np.isfinite(bass)) and np.std(bass) > 0


def test_chunked_chroma_equals_one_pass(bundle):
  codec = generation.BassGenerator.load(bundle).codec
  rng = np.random.default_rng(0)
  n = 3 * codec.chunk_frames * codec.samples_per_latent + 777   # several chunks and a ragged end
  t = np.arange(n) / codec.sample_rate
  wav = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
         + 0.01 * rng.standard_normal(n)).astype(np.float32)
  frames = codec.num_latent_frames(n)
  one = np.asarray(spectral.chroma_frames(jax.numpy.asarray(wav[None]), codec.sample_rate,
                                          codec.samples_per_latent, frames))[0]
  chunked = codec.chroma(wav)
  assert chunked.shape == one.shape == (frames, 12)
  np.testing.assert_allclose(chunked, one, atol=2e-5)


def test_variants_decode_as_one_batch_like_one_at_a_time(bundle):
  codec = generation.BassGenerator.load(bundle).codec
  z = np.random.default_rng(1).standard_normal((3, codec.chunk_frames + 9, codec.latent_channels))
  batch = codec.decode(z.astype(np.float32), 5000)
  assert batch.shape == (3, 5000)
  for k in range(3):
    np.testing.assert_allclose(batch[k], codec.decode(z[k].astype(np.float32), 5000), atol=1e-5)


# Heavy, optional libraries the sample path must not import (each costs seconds to load).
HEAVY = ("librosa", "numba", "matplotlib", "pretty_midi", "mido", "grain", "tensorflow")
# What only building or tracing a model needs: a process whose weights and compiled programs all
# come from the program cache imports none of it (about 0.7 s).
MODEL_CODE = ("flax", "orbax.checkpoint", "optax", "bassgen.models.unet",
              "bassgen.models.autoencoder", "bassgen.checkpointing")
_COUNTING_RUN = f"HEAVY = {HEAVY!r}\nMODEL_CODE = {MODEL_CODE!r}\n" + """
import json, sys
from jax import monitoring
counts = {"compile_requests": 0, "cache_hits": 0, "traced": []}
def on_duration(event, duration, **kw):
  if event == "/jax/core/compile/backend_compile_duration":  # also timed when the cache answers
    counts["compile_requests"] += 1
  if event == "/jax/core/compile/jaxpr_trace_duration":   # a function traced for jit
    counts["traced"].append(kw.get("fun_name"))
def on_event(event, **kw):
  if event == "/jax/compilation_cache/cache_hits":
    counts["cache_hits"] += 1
monitoring.register_event_duration_secs_listener(on_duration)
monitoring.register_event_listener(on_event)
from bassgen import cli
counts["code"] = cli.main(sys.argv[1:])
counts["heavy_imports"] = sorted(m for m in HEAVY if m in sys.modules)
counts["model_code"] = sorted(m for m in MODEL_CODE if m in sys.modules)
print("COUNTS " + json.dumps(counts))
"""


def _sample_in_a_new_process(args, cache):
  env = dict(os.environ, BASSGEN_JAX_CACHE_DIR=str(cache), JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-c", _COUNTING_RUN, "sample"] + [str(a) for a in args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=False)
  lines = [l for l in run.stdout.splitlines() if l.startswith("COUNTS ")]
  assert run.returncode == 0 and lines, run.stderr[-3000:]
  counts = json.loads(lines[-1][len("COUNTS "):])
  assert counts["code"] == 0, run.stderr[-3000:]
  counts["compiled"] = counts["compile_requests"] - counts["cache_hits"]
  return counts


# What a process traces to sample: the sampler, the codec's chunk programs and the shape-only
# construction of the two models (bassgen.models.shapes.abstract_model's `make`).
MODEL_PROGRAMS = {"run", "_encode", "_decode", "_chroma_energy", "make"}


def test_a_second_process_sampling_the_same_bucket_compiles_nothing(bundle, tmp_path):
  sr = 8000
  t = np.arange(2 * sr) / sr
  sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
  # A different song of another length that falls in the same length bucket.
  sf.write(tmp_path / "b.wav", (0.2 * np.sin(2 * np.pi * 110 * t[: int(1.8 * sr)])
                                ).astype(np.float32), sr)
  cache = tmp_path / "jax-cache"
  common = ["--checkpoint", bundle, "--steps", 3]
  first = _sample_in_a_new_process([tmp_path / "a.wav", "--out", tmp_path / "o1"] + common, cache)
  assert first["compiled"] > 0 and any(cache.iterdir())
  assert first["heavy_imports"] == [], first   # librosa, matplotlib, pretty_midi stay unloaded
  second = _sample_in_a_new_process([tmp_path / "a.wav", "--out", tmp_path / "o2"] + common, cache)
  assert second["compiled"] == 0, second
  # Nor does it trace them again or build the models: the sampler, the codec's chunk programs
  # and the weights come from the program cache (bassgen.aot), so Flax and Orbax stay unloaded.
  assert MODEL_PROGRAMS & set(first["traced"]) == MODEL_PROGRAMS, first["traced"]
  assert not MODEL_PROGRAMS & set(second["traced"]), second["traced"]
  assert set(first["model_code"]) == set(MODEL_CODE), first["model_code"]
  assert second["model_code"] == [], second["model_code"]
  other = _sample_in_a_new_process([tmp_path / "b.wav", "--out", tmp_path / "o3"] + common, cache)
  assert other["compiled"] == 0, other
  np.testing.assert_array_equal(sf.read(tmp_path / "o1" / "a.bass.wav")[0],
                                sf.read(tmp_path / "o2" / "a.bass.wav")[0])


def test_the_cache_can_be_turned_off_or_moved(tmp_path, monkeypatch):
  from bassgen import compile_cache
  monkeypatch.setenv("BASSGEN_JAX_CACHE_DIR", "off")
  assert compile_cache.cache_dir() is None and compile_cache.enable() is None
  monkeypatch.setenv("BASSGEN_JAX_CACHE_DIR", str(tmp_path / "c"))
  assert compile_cache.cache_dir() == tmp_path / "c"
  monkeypatch.delenv("BASSGEN_JAX_CACHE_DIR")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.cache_dir() == tmp_path / "xdg" / "bassgen" / "jax"
