"""The simplest thing that works: a linear, key-shared predictor of the bass pitch class from the
mix's chroma, held beside the model in `bassgen eval`.

Features: librosa's CQT chroma of the mix (hop 1024 at 16 kHz: 64 ms frames), each frame scaled
to sum 1, over a window of ±`context` frames. The logit of pitch class k is
`sum_{d, j} W[d, j] · chroma[t + d, (j + k) mod 12] + b`: one (2·context + 1) × 12 weight matrix
shared by the 12 transpositions, so a pattern learned in one key holds in all. Trained with
softmax cross-entropy on frames where the score's bass sounds (training renders only). Predicts
either the most likely pitch class ("argmax") or one drawn from the softmax ("sampled").
"""
from __future__ import annotations

import dataclasses
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

from bassgen.data import audio
from bassgen.errors import BassgenError
from bassgen.evaluation.pitch import PitchTrack, as_notes, midi_to_hz, notes_to_track
from bassgen.evaluation.score import read_score

SR = 16000
HOP = 1024
CONTEXT = 8
_FMIN_HZ = 32.70


def chroma(mix_S: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """(times [T] s, chroma [T, 12] with rows summing to 1, zeros where silent) of a mix."""
  import librosa  # pylint: disable=g-import-not-at-top

  x = audio.resample(np.asarray(mix_S, np.float32), sample_rate, SR)
  if len(x) < HOP or not np.any(x):
    n = max(1, len(x) // HOP + 1)
    return np.arange(n) * HOP / SR, np.zeros((n, 12), np.float32)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
    c = librosa.feature.chroma_cqt(y=x, sr=SR, hop_length=HOP, fmin=_FMIN_HZ, n_octaves=7,
                                   norm=None).T
  c = np.maximum(c, 0.0)
  c = c / np.maximum(c.sum(axis=1, keepdims=True), 1e-8)
  return np.arange(len(c)) * HOP / SR, c.astype(np.float32)


def features(chroma_Tx12: np.ndarray, context: int = CONTEXT) -> np.ndarray:
  """[T, 12 (k), 2·context + 1, 12]: the window around each frame, rotated for each k."""
  t = len(chroma_Tx12)
  padded = np.pad(chroma_Tx12, ((context, context), (0, 0)))
  win = np.stack([padded[d: d + t] for d in range(2 * context + 1)], axis=1)   # [T, D, 12]
  idx = (np.arange(12)[:, None] + np.arange(12)[None, :]) % 12                  # [k, j]
  return np.transpose(win[:, :, idx], (0, 2, 1, 3))                            # [T, k, D, j]


def _labels(times: np.ndarray, notes) -> np.ndarray:
  """Written bass pitch class at each time, -1 where no note sounds."""
  ref = notes_to_track(as_notes(notes), times)
  lab = np.full(len(times), -1, np.int64)
  lab[ref.voiced] = np.mod(np.round(ref.midi[ref.voiced]).astype(np.int64), 12)
  return lab


@dataclasses.dataclass
class LinearChromaBaseline:
  weights: np.ndarray        # [2·context + 1, 12]
  bias: float = 0.0
  context: int = CONTEXT

  def logits(self, chroma_Tx12: np.ndarray) -> np.ndarray:
    return np.einsum("tkdj,dj->tk", features(chroma_Tx12, self.context), self.weights) + self.bias

  def predict(self, mix_S: np.ndarray, sample_rate: int, times: np.ndarray, *,
              mode: str = "argmax", seed: int = 0, octave_midi: int = 36) -> PitchTrack:
    """A pitch track at `times` (all frames voiced) on the predicted pitch classes."""
    if mode not in ("argmax", "sampled"):
      raise BassgenError(f"mode={mode!r}: use 'argmax' or 'sampled'.")
    ct, c = chroma(mix_S, sample_rate)
    lg = self.logits(c)
    if mode == "argmax":
      pc = np.argmax(lg, axis=1)
    else:
      p = np.exp(lg - lg.max(axis=1, keepdims=True))
      p /= p.sum(axis=1, keepdims=True)
      rng = np.random.default_rng(seed)
      pc = np.array([rng.choice(12, p=row) for row in p])
    idx = np.clip(np.searchsorted(ct, times), 0, len(ct) - 1)
    f0 = midi_to_hz(octave_midi + pc[idx])
    voiced = np.ones(len(times), bool)
    return PitchTrack(np.asarray(times, np.float64), f0, voiced, voiced.astype(np.float64))


def fit(examples: Sequence[tuple[np.ndarray, int, Sequence[dict]]], *, context: int = CONTEXT,
        steps: int = 300, lr: float = 0.05) -> LinearChromaBaseline:
  """Fits the predictor on (mix, sample_rate, score bass notes) examples (full-batch Adam)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top

  feats, labs = [], []
  for mix, sr, notes in examples:
    times, c = chroma(mix, sr)
    lab = _labels(times + 0.5 * HOP / SR, notes)
    keep = lab >= 0
    feats.append(features(c, context)[keep])
    labs.append(lab[keep])
  if not feats or not sum(len(l) for l in labs):
    raise BassgenError("the chroma baseline found no frames with a written bass note to learn "
                       "from; give training renders (bassgen render) with their song.json.")
  x = jnp.asarray(np.concatenate(feats))
  y = jnp.asarray(np.concatenate(labs))
  params = {"w": jnp.zeros((2 * context + 1, 12)), "b": jnp.zeros(())}
  opt = optax.adam(lr)
  state = opt.init(params)

  def loss_fn(p):
    lg = jnp.einsum("tkdj,dj->tk", x, p["w"]) + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(lg, y).mean()

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    upd, s = opt.update(g, s)
    return optax.apply_updates(p, upd), s, loss

  for _ in range(steps):
    params, state, _ = step(params, state)
  return LinearChromaBaseline(np.asarray(params["w"]), float(params["b"]), context)


def fit_on_renders(folder: str | pathlib.Path, *, max_tracks: int = 150, seconds: float = 30.0,
                   seed: int = 0) -> LinearChromaBaseline:
  """Fits on rendered training tracks: each mix a random non-empty subset of the non-bass stems
  (as the training pipeline mixes them), first `seconds`."""

  folder = pathlib.Path(folder)
  tracks = sorted(p for p in folder.iterdir() if (p / "song.json").is_file()) if folder.is_dir() \
      else []
  if not tracks:
    raise BassgenError(f"{folder}: no rendered tracks (folders with song.json) to fit the chroma "
                       "baseline on. Give training renders (make data writes data/renders/train).")
  tracks = tracks[:: max(1, len(tracks) // max_tracks)][:max_tracks]
  rng = np.random.default_rng(seed)
  examples = []
  n = int(seconds * SR)
  for p in tracks:
    stems = [f for f in sorted(p.glob("*.wav")) if f.stem not in ("bass", "mix")]
    if not stems:
      continue
    pick = rng.permutation(len(stems))[: rng.integers(1, len(stems) + 1)]
    parts = [audio.load_audio(stems[i], SR)[0][:n] for i in pick]
    m = max(len(x) for x in parts)
    mix = sum(np.pad(x, (0, m - len(x))) for x in parts)
    examples.append((mix, SR, read_score(p)["bass_notes"]))
  return fit(examples)
