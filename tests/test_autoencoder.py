"""The autoencoder: sharded train step equals single-device, compiles once; codec is seamless."""
import pathlib

import jax
import numpy as np
import pytest

from bassgen import sharding
from bassgen.codec import Codec
from bassgen.config_loading import load_config
from bassgen.trainers import autoencoder as trainer

CONFIG = str(pathlib.Path(__file__).parents[1] / "configs" / "autoencoder.py")


def _cfg():
  return load_config(f"{CONFIG}:runlocal")


def _batch(cfg, n=4, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(cfg.data.crop_samples) / cfg.sample_rate
  f = rng.uniform(50, 400, size=(n, 1))
  target = (0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32)
  mix = (0.1 * rng.standard_normal((n, cfg.data.crop_samples))).astype(np.float32)
  return {"mix": mix, "target": target}


def _one_step(cfg, mesh):
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  state, metrics = step(state, sharding.global_batch(_batch(cfg), mesh), jax.random.key(1))
  return jax.device_get(state["params"]), jax.device_get(metrics)


def test_sharded_step_equals_single_device():
  cfg = _cfg()
  mesh8 = sharding.make_mesh((4, 2))
  mesh1 = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  p8, m8 = _one_step(cfg, mesh8)
  p1, m1 = _one_step(cfg, mesh1)
  np.testing.assert_allclose(m8["train/loss"], m1["train/loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  # The step did something: parameters moved from their initial values.
  assert m1["train/grad_norm"] > 0


def test_parameters_are_sharded_over_model_axis():
  cfg = _cfg()
  mesh = sharding.make_mesh((4, 2))
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  kernel = state["params"]["encoder"]["conv_in"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "model")
  assert len(kernel.addressable_shards) == 8
  assert kernel.addressable_shards[0].data.shape[-1] == kernel.shape[-1] // 2


def test_train_step_compiles_once():
  cfg = _cfg()
  mesh = sharding.make_mesh((4, 2))
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  losses = []
  for i in range(5):
    state, m = step(state, sharding.global_batch(_batch(cfg, seed=i), mesh), jax.random.key(1))
    losses.append(float(m["train/loss"]))
  assert step._cache_size() == 1  # one compilation for five steps
  assert np.all(np.isfinite(losses))


def test_training_reduces_loss():
  cfg = _cfg()
  cfg.optim.lr = 3e-3
  mesh = sharding.make_mesh((8, 1))
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  batch = sharding.global_batch(_batch(cfg, n=8), mesh)
  first = None
  for _ in range(30):
    state, m = step(state, batch, jax.random.key(1))
    first = first if first is not None else float(m["train/loss"])
  assert float(m["train/loss"]) < 0.7 * first


@pytest.fixture(scope="module")
def codec():
  cfg = _cfg()
  model = trainer.build_model(cfg, jax.random.key(3))
  from flax import nnx
  params = nnx.to_pure_dict(nnx.state(model))
  c = cfg.model.latent_channels
  return Codec(cfg, params, np.zeros(c), np.ones(c), chunk_batch=2)


def test_chunked_equals_one_pass(codec):
  rng = np.random.default_rng(0)
  n = codec.chunk_frames * codec.samples_per_latent * 3 + 777  # several chunks, ragged end
  t = np.arange(n) / codec.sample_rate
  wav = (0.4 * np.sin(2 * np.pi * 110 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
  chunked = codec.reconstruct(wav)
  reference = codec.one_pass(wav)
  assert chunked.shape == wav.shape
  rel = np.linalg.norm(chunked - reference) / np.linalg.norm(reference)
  assert rel <= 1e-3
  # No seam: the largest sample error is tiny everywhere, including at chunk borders.
  assert np.max(np.abs(chunked - reference)) <= 1e-3 * np.max(np.abs(reference))


def test_encode_length_and_normalisation(codec):
  wav = np.zeros(codec.samples_per_latent * 5 + 3, np.float32)
  z = codec.encode(wav)
  assert z.shape == (6, codec.latent_channels)
  y = codec.decode(z, len(wav))
  assert y.shape == wav.shape


def test_latents_are_clipped_and_edges_faded(codec):
  from bassgen import codec as codec_lib
  rng = np.random.default_rng(1)
  wav = rng.standard_normal(codec.samples_per_latent * 4).astype(np.float32)
  z_raw = codec.encode(wav, normalize=False)
  narrow = Codec(codec.cfg, codec.params, z_raw.mean(0), np.full(z_raw.shape[1], 1e-3, np.float32))
  z = narrow.encode(wav)  # normalised by a tiny std: far outside the clip without it
  assert np.abs(z).max() <= codec_lib.LATENT_CLIP + 1e-3
  faded = codec_lib.fade_edges(np.ones(1000, np.float32), 100)
  assert faded[0] < 0.01 and faded[-1] < 0.01 and np.all(faded[100:900] == 1.0)
