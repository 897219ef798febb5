"""The diffusion trainer: sharded step equals single device, compiles once; the latent cache and its
pipeline; a tiny end-to-end run that learns to use the mix."""
import pathlib

import jax
import numpy as np
import pytest

from bassgen import sharding
from bassgen.codec import Codec
from bassgen.config_loading import load_config
from bassgen.data import latents, prepare
from bassgen.models import unet
from bassgen.trainers import ldm as trainer
from fixtures import export_random_autoencoder
from test_sources import write_folder_tree

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
  return batch


def _one_step(cfg, mesh):
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  state, metrics = step(state, sharding.global_batch(_batch(cfg), mesh), jax.random.key(1))
  return jax.device_get(state["params"]), jax.device_get(metrics), step


def test_sharded_step_equals_single_device_and_compiles_once():
  cfg = _cfg()
  p8, m8, step8 = _one_step(cfg, sharding.make_mesh((4, 2)))
  p1, m1, _ = _one_step(cfg, sharding.make_mesh((1, 1), devices=jax.devices()[:1]))
  np.testing.assert_allclose(m8["train/loss"], m1["train/loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p8), jax.tree.leaves(p1)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  mesh = sharding.make_mesh((4, 2))
  s = trainer.setup(cfg, mesh)
  state = trainer.create_state(cfg, s, jax.random.key(0))
  step = trainer.make_train_step(cfg, s)
  for i in range(5):
    state, m = step(state, sharding.global_batch(_batch(cfg, seed=i), mesh), jax.random.key(1))
  assert step._cache_size() == 1
  assert np.isfinite(float(m["train/loss"]))


@pytest.fixture(scope="module")
def autoencoder_export(tmp_path_factory):
  """A runlocal autoencoder with random weights, exported like a trained one."""
  base = tmp_path_factory.mktemp("ldm")
  export_random_autoencoder(base / "ae")
  write_folder_tree(base / "renders", stems_per_track=(("drums", "keys"), ("keys", "pad"),
                                                       ("drums", "guitar"), ("pad", "keys")),
                    seconds=3.0)
  prepare.prepare("folder", base / "renders", base / "prepared", sample_rate=8000, split="train",
                  workers=1)
  return base


def test_latent_cache_matches_codec_and_pipeline_resumes(autoencoder_export, tmp_path):
  base = autoencoder_export
  codec = Codec.load(base / "ae")
  index = latents.cache_latents(codec, base / "prepared", tmp_path / "lat", mixes_per_track=2,
                                log=lambda m: None)
  assert len(index["tracks"]) == 4
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
  metrics = trainer.train_and_evaluate(cfg, tmp_path / "run")
  assert {"sigma0.5_cond", "sigma0.5_uncond", "val_loss"} <= set(metrics)
  assert all(np.isfinite(v) for v in metrics.values())
  assert (tmp_path / "run" / "export").is_dir()
  assert (tmp_path / "run" / "latents" / "train" / "latents.json").is_file()
