"""The bass onset channel (`model.harmony.onsets`): note starts from the score that line up with
the audio, a latent cache upgraded without encoding again, the head's picked onsets, and a
sampler whose condition carries them."""
import pathlib

import jax
import jax.numpy as jnp
import librosa
import ml_collections
import numpy as np
import pytest
from flax import nnx

import fixtures
from bassgen import samplers
from bassgen.config_loading import load_config
from bassgen.data import labels as L
from bassgen.data import latents, pipeline, prepare, records, render
from bassgen.errors import BassgenError
from bassgen.models import harmony as H
from bassgen.models import unet

ROOT = pathlib.Path(__file__).parents[1]


def test_onsets_from_notes_mark_the_frame_each_note_starts_in():
  notes = [{"start": 0.0, "end": 0.3, "pitch": 40}, {"start": 0.31, "end": 0.5, "pitch": 40},
           {"start": 0.95, "end": 2.0, "pitch": 43}, {"start": 5.0, "end": 6.0, "pitch": 45}]
  # 10 frames per second: frames 0, 3 (0.31 s) and 9 (0.95 s); the last note is past the end.
  np.testing.assert_array_equal(np.nonzero(L.onsets_from_notes(notes, 20, 10.0))[0], [0, 3, 9])
  # A note starting exactly on a frame boundary opens that frame.
  assert L.onsets_from_notes([{"start": 0.2, "end": 1, "pitch": 1}], 5, 10.0)[2] == 1


def test_onsets_from_tracked_labels_are_starts_and_pitch_class_changes():
  np.testing.assert_array_equal(L.onsets_from_labels(np.array([12, 3, 3, 12, 3, 5, 5, 12])),
                                [0, 1, 0, 0, 1, 1, 0, 0])


def test_onsets_of_a_render_are_its_score_note_starts_and_the_bass_attacks_there(tmp_path):
  sr, fps, spl = 16000, 15.625, 1024
  render.render_songs(tmp_path / "renders", 1, seed=7, sample_rate=sr, workers=1)
  prepare.prepare("folder", tmp_path / "renders", tmp_path / "prepared", sample_rate=sr,
                  split="train", workers=1)
  entry = pipeline.read_index(tmp_path / "prepared")["tracks"][0]
  bass = np.concatenate(records.read_track(tmp_path / "prepared" / entry["file"]), 1)[0]
  n = len(bass) // spl
  lab, origin = latents.track_labels(entry, bass, sr, n, fps)
  assert origin == "score"
  onsets = latents.track_onsets(entry, lab, fps)
  notes = L.read_bass_notes(tmp_path / "renders" / entry["name"] / "song.json")
  starts = sorted({int(np.floor(x["start"] * fps + 1e-6)) for x in notes if x["start"] * fps < n})
  np.testing.assert_array_equal(np.nonzero(onsets)[0], starts)
  # The audio agrees: the bass stem's energy rises in the onset frames (or the next one), far more
  # than in the others; shifted by 3 frames (0.19 s), the agreement is gone.
  rms = librosa.feature.rms(y=bass, frame_length=spl, hop_length=spl, center=False)[0][:n]
  rise = np.maximum(np.diff(np.log(rms + 1e-5), prepend=np.log(rms[0] + 1e-5)), 0.0)
  rise = np.maximum(rise, np.r_[rise[1:], 0.0])
  at = lambda o: rise[o == 1].mean() / max(rise[o == 0].mean(), 1e-9)
  assert onsets.sum() > 10 and at(onsets) > 3.0, at(onsets)
  assert at(np.roll(onsets, 3)) < 0.5 * at(onsets)


@pytest.fixture(scope="module")
def ldm_data(tmp_path_factory):
  return fixtures.make_ldm_data(tmp_path_factory.mktemp("onsets"))


def _strip_onsets(lat):
  """Rewrites a cache as it was written before the onset channel existed."""
  import io
  import json
  import grain
  index = json.loads((lat / latents.INDEX_NAME).read_text())
  for t in index["tracks"]:
    src = grain.sources.ArrayRecordDataSource([str(lat / t["file"])])
    raw = [dict(np.load(io.BytesIO(src[j]))) for j in range(len(src))]
    del src
    latents._write_track(lat / t["file"], [latents._encode_arrays(
        {k: v for k, v in r.items() if k != "onsets"}) for r in raw])
  index.pop("onsets")
  (lat / latents.INDEX_NAME).write_text(json.dumps(index))


def test_an_old_cache_gets_the_onsets_a_new_build_writes(ldm_data, tmp_path):
  from bassgen.codec import Codec
  codec = Codec.load(ldm_data / "ae")
  lat = tmp_path / "lat"
  index = latents.cache_latents(codec, ldm_data / "prepared", lat, mixes_per_track=2,
                                log=lambda m: None)
  assert index["onsets"]
  crop = lambda d, **kw: latents.LatentCrop(d, crop_frames=8, silence_threshold_db=None,
                                            with_chroma=True, with_harmony=True, **kw)
  fresh = [crop(lat, with_onsets=True).record(i) for i in range(8)]
  _strip_onsets(lat)
  with pytest.raises(BassgenError, match="no bass onsets"):
    crop(lat, with_onsets=True)
  before = [crop(lat).record(i) for i in range(8)]
  assert all("onsets" not in r for r in before)
  latents.add_onsets(ldm_data / "prepared", lat, log=lambda m: None)
  after = [crop(lat, with_onsets=True).record(i) for i in range(8)]
  for f, b, a in zip(fresh, before, after):
    np.testing.assert_array_equal(a["onsets"], f["onsets"])       # what a new build writes
    np.testing.assert_array_equal(a["target"], b["target"])       # nothing else changed
    np.testing.assert_array_equal(a["mix"][:, :-1], b["mix"])
    np.testing.assert_array_equal(a["mix"][:, -1], a["onsets"])   # the last condition channel
  assert sum(int(r["onsets"].sum()) for r in after) > 0


def test_picked_onsets_are_peaks_above_the_threshold_and_f1_counts_hits_within_a_frame():
  p = np.array([[0.1, 0.9, 0.8, 0.2, 0.6, 0.6, 0.1, 0.4, 0.95]])
  logits = jnp.log(p / (1 - p))
  np.testing.assert_array_equal(H.pick_onsets(logits, 0.5), [[0, 1, 0, 0, 0, 1, 0, 0, 1]])
  np.testing.assert_array_equal(H.pick_onsets(logits, 0.92), [[0, 0, 0, 0, 0, 0, 0, 0, 1]])
  true = jnp.array([[0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]], jnp.float32)
  assert float(H.onset_f1(true, true)) == 1.0
  assert float(H.onset_f1(jnp.roll(true, 1, -1), true)) == 1.0          # one frame late: a hit
  assert float(H.onset_f1(jnp.roll(true, 3, -1), true)) == 0.0
  both = true.at[0, 5].set(1.0)                                             # one false alarm
  np.testing.assert_allclose(float(H.onset_f1(both, true)), 2 * (2 / 3) / (2 / 3 + 1), rtol=1e-6)
  np.testing.assert_array_equal(H.path_changes(jnp.array([[12, 3, 3, 5, 5, 12, 5]])),
                                [[0, 1, 0, 1, 0, 0, 1]])


def _onset_model():
  cfg = load_config(f"{ROOT / 'configs' / 'ldm.py'}:runlocal")
  cfg.model.harmony.onsets = True
  model = unet.UNet1D(unet.UNetConfig.from_config(cfg.model), rngs=nnx.Rngs(0))
  model.conv_out.kernel[...] = 0.1 * jnp.ones_like(model.conv_out.kernel[...])   # F != 0
  for head in (model.harmony, model.onsets):
    head.out.kernel[...] = jax.random.normal(jax.random.key(3), head.out.kernel[...].shape)
  return cfg, model


def test_the_sampler_condition_carries_the_heads_onsets_and_the_path_changes():
  cfg, model = _onset_model()
  c = unet.sampling_cond_channels(cfg.model)
  assert unet.cond_channels(cfg.model) == c + 13
  cond = jax.random.uniform(jax.random.key(0), (1, 32, c))
  full = model.complete_condition(cond, 0.0, 0.5)
  assert full.shape == (1, 32, c + 13)
  path = jnp.argmax(full[..., c: c + 12], -1)
  want = jnp.maximum(H.pick_onsets(model.onset_logits(cond), 0.5), H.path_changes(path))
  np.testing.assert_array_equal(full[..., -1], want)
  # With one held pitch class and a threshold no frame reaches, only the first frame starts a note.
  np.testing.assert_array_equal(model.complete_condition(cond, 1e6, 1.1)[0, :, -1],
                                np.eye(32)[0])
  graphdef, state = nnx.split(model)
  fn = samplers.make_sampler(graphdef, sigma_data=1.0, sampler="euler", steps=2)
  run = lambda threshold, c=cond: samplers.generate(
      fn, state, c, cfg=ml_collections.ConfigDict(dict(
          cfg.sample.to_dict(), onset_threshold=threshold, harmony_switch_penalty=1e6, seed=0,
          guidance_w=1.0)),
      length_multiple=unet.length_multiple(cfg.model))
  # Other onsets (every peak vs none) change the bass; a given full condition is used as it is.
  assert float(jnp.abs(run(0.0) - run(1.1)).max()) > 1e-3
  np.testing.assert_array_equal(run(0.0, full), run(1.1, full))


def test_a_tiny_run_trains_and_scores_the_onset_head(ldm_data, tmp_path):
  from bassgen.trainers import ldm as trainer
  cfg = load_config(f"{ROOT / 'configs' / 'ldm.py'}:runlocal")
  cfg.autoencoder_checkpoint = str(ldm_data / "ae")
  cfg.data.train_dir = cfg.data.val_dir = str(ldm_data / "prepared")
  cfg.model.harmony.onsets = True
  cfg.train.num_steps, cfg.train.eval_every, cfg.train.ckpt_every = 4, 2, 2
  metrics = trainer.train_and_evaluate(cfg, tmp_path / "run")
  assert {"onset_bce", "onset_f"} <= set(metrics)
  assert np.isfinite(metrics["onset_bce"]) and 0.0 <= metrics["onset_f"] <= 1.0
  # The exported model samples with the onset channel.
  from bassgen.generation import BassGenerator
  gen = BassGenerator.load(tmp_path / "run")
  assert gen.pitch_class_channels(np.array([3, 3, 12, 5]), 4).shape == (4, 13)
