"""The diffusion trainer: sharded step equals single device, compiles once; the latent cache and its
pipeline; a tiny end-to-end run that learns to use the mix."""
import pathlib

import jax
import numpy as np
import pytest

import fixtures
from bassgen import sharding
from bassgen.codec import Codec
from bassgen.config_loading import load_config
from bassgen.data import latents
from bassgen.models import unet
from bassgen.trainers import ldm as trainer

ROOT = pathlib.Path(__file__).parents[1]


def _cfg(**overrides):
  cfg = load_config(f"{ROOT / 'configs' / 'ldm.py'}:runlocal")
  for k, v in overrides.items():
    node = cfg
    *parents, leaf = k.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = v
  return cfg


def _batch(cfg, n=8, seed=0):
  rng = np.random.default_rng(seed)
  shape = (n, cfg.train.crop_frames, cfg.model.latent_channels)
  mix = rng.standard_normal(shape).astype(np.float32)
  chroma = rng.uniform(0, 1, shape[:2] + (unet.cond_channels(cfg.model) - shape[2],))
  batch = {"mix": np.concatenate([mix, chroma.astype(np.float32)], -1),
           "target": (0.8 * mix + 0.2 * rng.standard_normal(shape)).astype(np.float32)}
  if unet.harmony_enabled(cfg.model):
    batch["labels"] = rng.integers(0, 13, shape[:2]).astype(np.int32)
  if unet.onsets_enabled(cfg.model):
    batch["onsets"] = (rng.uniform(size=shape[:2]) < 0.25).astype(np.int32)
    batch["mix"][..., -1] = batch["onsets"]
  return batch


# (data, fsdp) on the 8 fake CPU devices; 4 x 2 (both axes > 1) in the default run, the others
# with `make test-slow`.
MESHES = (pytest.param((8, 1), marks=pytest.mark.slow), (4, 2),
          pytest.param((2, 4), marks=pytest.mark.slow))
# Biases added to every logit of a softmax alike (the attention's position-bias output, the
# key-equivariant harmony head's output): the loss does not depend on them, so their gradient is
# rounding noise, which Adam scales up to learning-rate-sized steps that differ from mesh to mesh.
SOFTMAX_INVARIANT = ("['dpb']['out']['bias']", "['harmony']['out']['bias']")


@pytest.fixture(scope="module")
def one_device_run():
  """Four steps on one device, the last three at a non-zero learning rate (warm-up starts at 0):
  the reference every mesh must equal."""
  # A long schedule keeps the learning rate near its peak for these steps. The U-Net's residual
  # branches and output start at zero, so the gradient reaches one more layer per step: the
  # branches' first layers move only at the third step with a non-zero learning rate.
  cfg = _cfg(**{"train.num_steps": 1000})
  batches = [_batch(cfg, seed=i) for i in range(4)]
  one = sharding.make_mesh((1, 1), devices=jax.devices()[:1])
  init, want, m1, _, _ = fixtures.train_steps(trainer, cfg, one, batches)
  lrs = [float(m["train/lr"]) for m in m1]
  assert lrs[0] == 0.0 and min(lrs[1:]) >= 0.9 * cfg.optim.lr, lrs
  # Not vacuous: nearly all parameters moved by far more than the tolerance below.
  size, still = 0, {}
  for (k, a), b in zip(jax.tree.leaves_with_path(want["params"]), jax.tree.leaves(init)):
    size += b.size
    if np.max(np.abs(a - b)) <= 1e-4:
      still[jax.tree_util.keystr(k)] = b.size
  assert sum(still.values()) <= 0.02 * size, (sum(still.values()) / size, still)
  return cfg, batches, want, m1


@pytest.mark.parametrize("shape", MESHES)
def test_sharded_step_equals_single_device_and_compiles_once(one_device_run, shape):
  """On every mesh the losses, parameters, EMA and Adam state after four steps equal one
  device's; the arrays are laid out as the config's rules say; the step compiles once for four
  batches."""
  cfg, batches, want, m1 = one_device_run
  mesh = sharding.make_mesh(shape)
  _, got, m, step, live = fixtures.train_steps(trainer, cfg, mesh, batches)
  np.testing.assert_allclose([x["train/loss"] for x in m], [x["train/loss"] for x in m1],
                             rtol=1e-5, err_msg=f"mesh {shape}")
  fixtures.assert_states_close(got, want, 1e-5, f"mesh {shape}:", ignore=SOFTMAX_INVARIANT)
  split = fixtures.assert_shardings_follow_rules(trainer, cfg, mesh, live)
  assert split == 0 if shape[1] == 1 else split >= 10, (shape, split)
  assert step._cache_size() == 1  # one compilation for four batches


@pytest.fixture(scope="module")
def autoencoder_export(tmp_path_factory):
  """A runlocal autoencoder with random weights, exported like a trained one, and 4 tracks."""
  return fixtures.make_ldm_data(tmp_path_factory.mktemp("ldm"))


def test_latent_cache_matches_codec_and_pipeline_resumes(autoencoder_export, tmp_path):
  """An interrupted cache build continues where it stopped; the cache holds the codec's latents;
  a finished cache is reused; the latent pipeline resumes exactly."""
  base = autoencoder_export
  codec = Codec.load(base / "ae")
  asked = []
  stop_at_third = lambda: asked.append(1) or len(asked) > 2
  assert latents.cache_latents(codec, base / "prepared", tmp_path / "lat", mixes_per_track=2,
                               log=lambda m: None, should_stop=stop_at_third) is None
  done = sorted((tmp_path / "lat" / "tracks").glob("*.array_record"))
  assert len(done) == 2 and not (tmp_path / "lat" / latents.INDEX_NAME).exists()
  stamps = [p.stat().st_mtime_ns for p in done]
  encoded = []
  index = latents.cache_latents(codec, base / "prepared", tmp_path / "lat", mixes_per_track=2,
                                log=encoded.append, should_stop=lambda: False)
  assert len(index["tracks"]) == 4
  assert [p.stat().st_mtime_ns for p in done] == stamps and len(encoded) == 2  # not started over
  # The cached bass latent is the codec's encoding of the prepared bass (float16 storage).
  from bassgen.data import pipeline, records
  prep = pipeline.read_index(base / "prepared")
  bass = np.concatenate(records.read_track(base / "prepared" / prep["tracks"][0]["file"]), 1)[0]
  rec = latents.LatentCrop(tmp_path / "lat", crop_frames=8, silence_threshold_db=None).record(0)
  np.testing.assert_allclose(rec["target"], codec.encode(bass), atol=2e-2, rtol=1e-2)
  # A second run reuses the cache (nothing is re-encoded).
  mtime = (tmp_path / "lat" / index["tracks"][0]["file"]).stat().st_mtime_ns
  latents.cache_latents(codec, base / "prepared", tmp_path / "lat", mixes_per_track=2,
                        log=lambda m: None)
  assert (tmp_path / "lat" / index["tracks"][0]["file"]).stat().st_mtime_ns == mtime
  # Exact resume of the latent iterator.
  ds = latents.make_latent_train_dataset(tmp_path / "lat", crop_frames=8, batch_size=2, seed=3,
                                         shard_index=0, shard_count=1)
  it = iter(ds)
  next(it)
  saved = it.get_state()
  want = [next(it) for _ in range(3)]
  it2 = iter(ds)
  it2.set_state(saved)
  got = [next(it2) for _ in range(3)]
  for w, g in zip(want, got):
    np.testing.assert_array_equal(w["mix"], g["mix"])
    np.testing.assert_array_equal(w["target"], g["target"])
  assert want[0]["mix"].shape == (2, 8, codec.latent_channels)
  # With the chroma condition, 'mix' carries the mix's pitch-class profile after its latent.
  crop = latents.LatentCrop(tmp_path / "lat", crop_frames=8, silence_threshold_db=None,
                            with_chroma=True)
  rec_c = crop.record(0)
  assert rec_c["mix"].shape[-1] == codec.latent_channels + 12
  np.testing.assert_array_equal(rec_c["mix"][:, :codec.latent_channels], rec["mix"])
  assert np.all(rec_c["mix"][:, codec.latent_channels:] >= 0)
  assert np.all(rec_c["mix"][:, codec.latent_channels:].sum(-1) <= 1.0 + 1e-2)


def test_end_to_end_tiny_run(autoencoder_export, tmp_path):
  base = autoencoder_export
  cfg = _cfg(**{"autoencoder_checkpoint": str(base / "ae"),
                "data.train_dir": str(base / "prepared"), "data.val_dir": str(base / "prepared"),
                "train.num_steps": 4, "train.eval_every": 2, "train.ckpt_every": 2})
  cfg.sample.mix, cfg.sample.out = "song.wav", "my_outputs"   # one run's I/O, not the model's
  metrics = trainer.train_and_evaluate(cfg, tmp_path / "run")
  assert {"sigma0.5_cond", "sigma0.5_uncond", "val_loss"} <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert (tmp_path / "run" / "export").is_dir()
  from bassgen import checkpointing
  exported = checkpointing.load_meta(tmp_path / "run" / "export")["config"]["sample"]
  assert not set(checkpointing.RUN_IO_FIELDS) & set(exported), exported
  assert exported["steps"] == cfg.sample.steps
  assert (tmp_path / "run" / "latents" / "train" / "latents.json").is_file()
