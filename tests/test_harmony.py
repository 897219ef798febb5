"""The harmony pathway: a key-equivariant pitch-class head, its Viterbi path, and labels that line
up with the audio."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bassgen.data import labels as L
from bassgen.data import latents, prepare, render
from bassgen.evaluation import pitch as P
from bassgen.models import harmony as H


def _head():
  head = H.HarmonyHead(16, 5, rngs=nnx.Rngs(0))
  # The output layer starts at zero (uniform prediction); give it weights so the test can fail.
  head.out.kernel[...] = jax.random.normal(jax.random.key(1), head.out.kernel[...].shape)
  return head


@pytest.mark.parametrize("k", [1, 5, 11])
def test_transposing_the_mix_rotates_the_predicted_distribution(k):
  head = _head()
  chroma = jax.random.uniform(jax.random.key(0), (2, 24, 12))
  probs = jax.nn.softmax(head(chroma), -1)
  shifted = jax.nn.softmax(head(jnp.roll(chroma, k, axis=-1)), -1)   # pitch class j -> j + k
  np.testing.assert_allclose(shifted, jnp.roll(probs, k, axis=-1), atol=1e-5)
  assert float(jnp.abs(shifted - probs).max()) > 1e-3   # the prediction depends on the key


def test_viterbi_path_is_the_best_path_under_the_switch_cost():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((1, 6, 12)).astype(np.float32)
  logits[..., 3:] -= 20.0            # 3 live states keep the brute force small
  logp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), -1))[0]
  for penalty in (0.0, 0.7, 3.0):
    best = max(itertools.product(range(3), repeat=6),
               key=lambda p: sum(logp[t, s] for t, s in enumerate(p))
               - penalty * sum(a != b for a, b in zip(p, p[1:])))
    path = np.asarray(H.decode_path(jnp.asarray(logits), penalty))[0]
    assert tuple(path) == best, penalty
  assert len(set(np.asarray(H.decode_path(jnp.asarray(logits), 1e6))[0])) == 1


def test_aux_loss_ignores_frames_without_bass():
  logits = jnp.zeros((1, 4, 12)).at[0, :, 3].set(10.0)
  ce, acc = H.aux_loss(logits, jnp.array([[3, 3, 12, 12]]))
  assert float(acc) == 1.0 and float(ce) < 1e-3
  ce2, acc2 = H.aux_loss(logits, jnp.array([[3, 5, 12, 12]]))
  assert float(acc2) == 0.5 and float(ce2) > 4.0


def test_hold_labels_carries_the_pitch_class_through_rests():
  np.testing.assert_array_equal(H.hold_labels(np.array([12, 12, 3, 12, 5, 5, 12])),
                                [3, 3, 3, 3, 5, 5, 5])
  np.testing.assert_array_equal(H.hold_labels(np.array([12, 12])), [12, 12])


def test_labels_of_a_render_are_the_sounding_bass_notes_and_match_its_audio(tmp_path):
  sr = 16000
  (song,) = render.render_songs(tmp_path / "renders", 1, seed=5, sample_rate=sr, workers=1)
  prepare.prepare("folder", tmp_path / "renders", tmp_path / "prepared", sample_rate=sr,
                  split="train", workers=1)
  from bassgen.data import pipeline, records
  entry = pipeline.read_index(tmp_path / "prepared")["tracks"][0]
  bass = np.concatenate(records.read_track(tmp_path / "prepared" / entry["file"]), 1)[0]
  fps, spl = 15.625, 1024
  n = len(bass) // spl
  labels, origin = latents.track_labels(entry, bass, sr, n, fps)
  assert origin == "score"
  notes = L.read_bass_notes(tmp_path / "renders" / entry["name"] / "song.json")
  # Frame by frame, the label is the note that song.json says is sounding at the frame's centre.
  for t in range(0, n, 7):
    centre = (t + 0.5) / fps
    sounding = [x for x in notes if x["start"] <= centre < x["end"]]
    expect = sounding[-1]["pitch"] % 12 if sounding else L.NO_BASS
    assert labels[t] == expect, t
  # And the audio agrees: where a label says a note sounds, the bass stem's tracked pitch class
  # is that label (away from note edges).
  track = P.track_pitch(bass, sr, tracker="pyin")
  times = (np.arange(n) + 0.5) / fps
  idx = np.clip(np.searchsorted(track.times, times), 0, len(track.times) - 1)
  ok = (labels < 12) & track.voiced[idx]
  pc = np.mod(np.round(track.midi[idx][ok]), 12).astype(int)
  assert ok.sum() > 50 and np.mean(pc == labels[ok]) > 0.9
  # Shifting the labels by one 64-ms frame against the audio would break the agreement.
  shifted = np.roll(labels, 3)
  ok2 = (shifted < 12) & track.voiced[idx]
  assert np.mean(np.mod(np.round(track.midi[idx][ok2]), 12).astype(int) == shifted[ok2]) < 0.9


def test_labels_from_a_tracked_stem_without_a_score():
  fps = 10.0
  times = np.arange(0, 2, 0.01)
  f0 = np.where(times < 1.0, P.midi_to_hz(40), np.nan)     # E for a second, then silence
  lab = L.labels_from_f0(times, f0, 20, fps)
  assert list(lab[:10]) == [4] * 10 and list(lab[10:]) == [12] * 10


def test_the_sampler_conditions_on_the_heads_path():
  import ml_collections
  from bassgen import samplers
  from bassgen.config_loading import load_config
  from bassgen.models import unet
  import pathlib
  cfg = load_config(f"{pathlib.Path(__file__).parents[1] / 'configs' / 'ldm.py'}:runlocal")
  assert unet.harmony_enabled(cfg.model)
  model = unet.UNet1D(unet.UNetConfig.from_config(cfg.model), rngs=nnx.Rngs(0))
  model.conv_out.kernel[...] = 0.1 * jnp.ones_like(model.conv_out.kernel[...])   # F != 0
  model.harmony.out.kernel[...] = jax.random.normal(jax.random.key(3),
                                                    model.harmony.out.kernel[...].shape)
  graphdef, state = nnx.split(model)
  c = unet.sampling_cond_channels(cfg.model)
  extra = 1 if unet.onsets_enabled(cfg.model) else 0       # the onset channel, after the path
  assert c == unet.cond_channels(cfg.model) - 12 - extra
  cond = jax.random.uniform(jax.random.key(0), (1, 32, c))
  full = model.complete_condition(cond, 0.0)
  path = np.asarray(jnp.argmax(full[..., c: c + 12], -1))[0]
  np.testing.assert_array_equal(path, np.asarray(jnp.argmax(model.harmony_logits(cond), -1))[0])
  held = model.complete_condition(cond, 1e6)[..., c: c + 12]
  assert len(set(np.asarray(jnp.argmax(held, -1))[0])) == 1
  fn = samplers.make_sampler(graphdef, sigma_data=1.0, sampler="euler", steps=2)
  run = lambda penalty, c=cond: samplers.generate(
      fn, state, c, cfg=ml_collections.ConfigDict(dict(
          cfg.sample.to_dict(), harmony_switch_penalty=penalty, seed=0, guidance_w=1.0)),
      length_multiple=unet.length_multiple(cfg.model))
  # A different pitch-class path (frame-wise argmax vs one held pitch class) changes the bass.
  assert float(jnp.abs(run(0.0) - run(1e6)).max()) > 1e-3
  # A condition that brings its own path (the oracle control) is used as it is: the head's
  # switch penalty no longer matters, the given pitch class does.
  given = lambda pc: jnp.concatenate([cond, jax.nn.one_hot(jnp.full((1, 32), pc), 12)]
                                     + [jnp.zeros((1, 32, extra))], -1)
  assert float(jnp.abs(run(0.0, given(3)) - run(1e6, given(3))).max()) < 1e-6
  assert float(jnp.abs(run(0.0, given(3)) - run(0.0, given(8))).max()) > 1e-3


def test_training_condition_swaps_in_the_heads_path_for_a_share_of_examples():
  import ml_collections
  from bassgen.trainers import ldm as T
  cfg = ml_collections.ConfigDict({
      "model": {"harmony": {"predicted_path_prob": 0.5, "predicted_path_warmup": 100}},
      "sample": {"harmony_switch_penalty": 3.0}})
  b, t, c = 256, 10, 5
  teacher = jax.nn.one_hot(jnp.full((b, t), 2), 12)
  cond = jnp.concatenate([jax.random.normal(jax.random.key(0), (b, t, c)), teacher], -1)
  logits = jnp.zeros((b, t, 12)).at[..., 7].set(5.0)          # the head says pitch class 7
  key = jax.random.key(3)
  # During the ramp's first step nothing is swapped; the other channels are never touched.
  np.testing.assert_array_equal(T.training_condition(cfg, cond, logits, key, jnp.int32(0)), cond)
  out = T.training_condition(cfg, cond, logits, key, jnp.int32(100))
  np.testing.assert_array_equal(out[..., :c], cond[..., :c])
  pcs = np.asarray(jnp.argmax(out[..., c:], -1))
  swapped = pcs[:, 0] == 7
  assert np.all(pcs == np.where(swapped, 7, 2)[:, None])       # whole examples, the path or the teacher
  assert 0.35 < swapped.mean() < 0.65
  np.testing.assert_allclose(out[..., c:].sum(-1), 1.0)        # still a one-hot
  cfg.model.harmony.predicted_path_prob = 0.0
  np.testing.assert_array_equal(T.training_condition(cfg, cond, logits, key, jnp.int32(100)), cond)
  # With the onset channel last, the pitch-class channels before it are the ones swapped.
  cfg.model.harmony.predicted_path_prob, cfg.model.harmony.onsets = 1.0, True
  starts = (jax.random.uniform(jax.random.key(5), (b, t, 1)) > 0.5).astype(jnp.float32)
  out = T.training_condition(cfg, jnp.concatenate([cond, starts], -1), logits, key, jnp.int32(100))
  np.testing.assert_array_equal(out[..., -1:], starts)
  assert np.all(np.asarray(jnp.argmax(out[..., c: c + 12], -1)) == 7)
