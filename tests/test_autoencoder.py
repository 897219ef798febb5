"""The autoencoder: sharded training equals one device on three meshes, compiles once; codec is
seamless."""
import pathlib

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import fixtures
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


# (data, fsdp) on the 8 fake CPU devices; 4 x 2 (both axes > 1) in the default run, the others
# with `make test-slow`.
MESHES = (pytest.param((8, 1), marks=pytest.mark.slow), (4, 2),
          pytest.param((2, 4), marks=pytest.mark.slow))


@pytest.fixture(scope="module")
def one_device_run():
  """Four steps on one device, the last three at a non-zero learning rate (warm-up starts at 0):
  the reference every mesh must equal."""
  cfg = _cfg()
  batches = [_batch(cfg, n=8, seed=i) for i in range(4)]
  one = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  init, want, m1, _, _ = fixtures.train_steps(trainer, cfg, one, batches)
  lrs = [float(m["train/lr"]) for m in m1]
  assert lrs[0] == 0.0 and min(lrs[1:]) >= 0.4 * cfg.optim.lr, lrs
  # Not vacuous: every parameter moved by far more than the tolerance below (~2e-3 here).
  moved = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(want["params"]),
                                                      jax.tree.leaves(init))]
  assert min(moved) > 5e-4, min(moved)
  return cfg, batches, want, m1


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_step_equals_single_device(one_device_run, shape):
  """After four steps the losses, parameters, EMA and Adam state on the mesh equal one device's,
  and the arrays are laid out as the config's rules say."""
  cfg, batches, want, m1 = one_device_run
  mesh = sharding.make_mesh(shape)
  _, got, m, _, live = fixtures.train_steps(trainer, cfg, mesh, batches)
  np.testing.assert_allclose([x["train/loss"] for x in m], [x["train/loss"] for x in m1],
                             rtol=1e-5, err_msg=f"mesh {shape}")
  fixtures.assert_states_close(got, want, 1e-5, f"mesh {shape}:")
  split = fixtures.assert_shardings_follow_rules(trainer, cfg, mesh, live)
  assert split == 0 if shape[1] == 1 else split >= 10, (shape, split)
  kernel = live["params"]["encoder"]["conv_in"]["kernel"]
  assert kernel.sharding.spec == P(None, None, "fsdp")
  assert kernel.addressable_shards[0].data.shape[-1] == kernel.shape[-1] // shape[1]
  # The decoder's last layer has 2 x 129 outputs (n_fft 256): split two ways, but not four.
  out = live["params"]["decoder"]["conv_out"]["kernel"]
  assert out.shape[-1] == 258
  assert out.addressable_shards[0].data.shape[-1] == (129 if shape[1] == 2 else 258)
  # Small weights stay whole on every device (mesh.min_shard_size), though their rule names fsdp.
  bias = live["params"]["encoder"]["conv_in"]["bias"]
  assert bias.size < cfg.mesh.min_shard_size and bias.sharding.is_fully_replicated
  # The batch is split over every device, data x fsdp: one row each.
  b = sharding.global_batch(batches[0], mesh)["mix"]
  assert {s.data.shape[0] for s in b.addressable_shards} == {1}


def test_train_step_compiles_once():
  cfg = _cfg()
  mesh = sharding.make_mesh((4, 2))
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  losses = []
  for i in range(5):
    state, m = step(state, sharding.global_batch(_batch(cfg, n=8, seed=i), mesh), jax.random.key(1))
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
