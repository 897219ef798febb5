"""The harmony pathway of the diffusion model (DESIGN.md §2, beyond the paper).

The denoising loss barely rewards the right notes, and nothing in a plain U-Net ties the 12 keys
together. The pathway makes the bass's pitch class an explicit, supervised quantity:

1. `HarmonyHead` predicts, per latent frame, a distribution over the 12 pitch classes of the bass
   from the mix's pitch-class profile (chroma). It is transposition-equivariant by construction:
   the logit of pitch class k is one shared temporal conv net applied to the chroma rotated so
   that k sits at index 0 (a circular convolution over pitch class with a full 12-bin kernel).
   Shifting the mix by s semitones rotates the predicted distribution by s; every pattern is
   learned once for all keys. It is trained with cross-entropy against the bass pitch class of
   each frame (labels from the score for renders, from the tracked bass stem otherwise).
2. The U-Net receives the pitch class as 12 more condition channels: a one-hot "which pitch class
   the bass is on" per frame (held through rests). In training it is the true one (teacher
   forcing); when sampling it is the head's most likely path (`decode_path`: Viterbi with a cost
   per change, so the path changes at chord changes and not at every frame).
3. With `onsets`, an `OnsetHead` predicts per latent frame whether a bass note starts, from the
   mix latent and chroma (binary cross-entropy against the score's note starts), and the U-Net
   receives one more channel: 1 where a note starts (the score's in training; the head's picked
   peaks, plus every change of the pitch-class path, when sampling). The path says *which* note
   and the onset channel says *when*: a U-Net trained on the teacher's path alone puts its
   onsets where the path changes, i.e. only at chord changes when sampling
   (experiments/ldm/README.md, "Where the onsets come from").
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bassgen.models.unet_config import NUM_PC   # 12 bass pitch classes


def rotations(chroma_BxTx12: jax.Array) -> jax.Array:
  """[B, T, 12 (k), 12]: row k is the chroma rotated so that pitch class k is at index 0."""
  idx = (np.arange(NUM_PC)[:, None] + np.arange(NUM_PC)[None, :]) % NUM_PC   # [k, j] -> k + j
  return chroma_BxTx12[..., idx]


class HarmonyHead(nnx.Module):
  """Mix chroma [B, T, 12] -> bass pitch-class logits [B, T, 12].

  With `equivariant` (the default) one shared net scores every pitch class on the chroma rotated
  to it, so the head is equivariant to transposition. Without it (the ablation), the same conv
  stack reads the 12 chroma channels as they are and outputs 12 logits: every key is learned on
  its own.
  """

  def __init__(self, hidden: int, kernel_size: int, *, rngs: nnx.Rngs, equivariant: bool = True):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    conv = lambda c_in, c_out, k, d: nnx.Conv(c_in, c_out, kernel_size=(k,),
                                             kernel_dilation=(d,), padding="SAME",
                                             kernel_init=init, rngs=rngs)
    self.equivariant = equivariant
    self.conv1 = conv(NUM_PC + 1, hidden, kernel_size, 1)
    self.conv2 = conv(hidden, hidden, kernel_size, 2)
    self.conv3 = conv(hidden, hidden, kernel_size, 4)
    self.out = nnx.Conv(hidden, 1 if equivariant else NUM_PC, kernel_size=(1,),
                        kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def _stack(self, x: jax.Array) -> jax.Array:
    h = jax.nn.silu(self.conv1(x))
    h = h + jax.nn.silu(self.conv2(h))
    h = h + jax.nn.silu(self.conv3(h))
    return self.out(h)

  def __call__(self, chroma_BxTx12: jax.Array) -> jax.Array:
    b, t, _ = chroma_BxTx12.shape
    chroma = chroma_BxTx12.astype(jnp.float32)
    loud_BxTx1 = jnp.sum(chroma, axis=-1, keepdims=True)          # how much pitched energy
    if not self.equivariant:
      return self._stack(jnp.concatenate([chroma, loud_BxTx1], axis=-1))
    rot = rotations(chroma)                                        # [B, T, K, 12]
    x = jnp.concatenate([rot, jnp.broadcast_to(loud_BxTx1[:, :, None], (b, t, NUM_PC, 1))], -1)
    x = jnp.transpose(x, (0, 2, 1, 3)).reshape(b * NUM_PC, t, NUM_PC + 1)   # k joins the batch
    logits = self._stack(x).reshape(b, NUM_PC, t)
    return jnp.transpose(logits, (0, 2, 1))


def aux_loss(logits_BxTx12: jax.Array, labels_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean cross-entropy, accuracy) over frames where the bass sounds (labels 0..11; 12 = none)."""
  valid = (labels_BxT < NUM_PC).astype(jnp.float32)
  safe = jnp.where(labels_BxT < NUM_PC, labels_BxT, 0)
  logp = jax.nn.log_softmax(logits_BxTx12.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  n = jnp.maximum(jnp.sum(valid), 1.0)
  acc = jnp.sum((jnp.argmax(logp, -1) == safe) * valid) / n
  return jnp.sum(nll * valid) / n, acc


def path_accuracy(path_BxT: jax.Array, labels_BxT: jax.Array) -> jax.Array:
  """Share of frames where the bass sounds (labels 0..11) on which a pitch-class path is right."""
  valid = (labels_BxT < NUM_PC).astype(jnp.float32)
  return jnp.sum((path_BxT == labels_BxT) * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def decode_path(logits_BxTx12: jax.Array, switch_penalty: float) -> jax.Array:
  """Most likely pitch-class path [B, T] (int32) under a cost of `switch_penalty` nats per change
  (Viterbi; 0 gives the frame-wise argmax). Runs inside jit."""
  logp = jax.nn.log_softmax(logits_BxTx12.astype(jnp.float32), axis=-1)

  def forward(delta_Bx12, lp_Bx12):
    best_B = jnp.max(delta_Bx12, axis=-1, keepdims=True)
    arg_B = jnp.argmax(delta_Bx12, axis=-1)
    stay = delta_Bx12 >= best_B - switch_penalty
    back_Bx12 = jnp.where(stay, jnp.arange(NUM_PC)[None, :], arg_B[:, None])
    new = jnp.maximum(delta_Bx12, best_B - switch_penalty) + lp_Bx12
    return new, back_Bx12

  lp_TxBx12 = jnp.transpose(logp, (1, 0, 2))
  delta, backs_TxBx12 = jax.lax.scan(forward, lp_TxBx12[0], lp_TxBx12[1:])
  last_B = jnp.argmax(delta, axis=-1)

  def backward(state_B, back_Bx12):
    prev = jnp.take_along_axis(back_Bx12, state_B[:, None], axis=-1)[:, 0]
    return prev, state_B

  first, path_TxB = jax.lax.scan(backward, last_B, backs_TxBx12, reverse=True)
  path = jnp.concatenate([first[None], path_TxB], axis=0)
  return jnp.transpose(path, (1, 0)).astype(jnp.int32)


def one_hot_path(path_BxT: jax.Array, dtype=jnp.float32) -> jax.Array:
  """[B, T, 12] one-hot of a pitch-class path; entries >= 12 (no bass anywhere) give zeros."""
  return jax.nn.one_hot(path_BxT, NUM_PC, dtype=dtype)


def hold_labels(labels_T: np.ndarray) -> np.ndarray:
  """Bass pitch class held through rests: each no-bass frame (12) takes the last sounding pitch
  class (the next one before the first note; 12 stays where nothing sounds at all). NumPy, for
  the data pipeline's teacher-forcing condition."""
  labels = np.asarray(labels_T, np.int32).copy()
  sounding = np.nonzero(labels < NUM_PC)[0]
  if sounding.size == 0:
    return labels
  idx = np.maximum.accumulate(np.where(labels < NUM_PC, np.arange(len(labels)), -1))
  idx = np.where(idx < 0, sounding[0], idx)
  return labels[idx]


def teacher_channels(labels_T: np.ndarray) -> np.ndarray:
  """[T, 12] float32: the one-hot of the held bass pitch class per frame (`hold_labels`), the
  teacher-forcing condition of training and of the oracle control; zeros where no bass sounds at
  all. NumPy."""
  held = hold_labels(labels_T)
  out = np.zeros((len(held), NUM_PC), np.float32)
  ok = held < NUM_PC
  out[np.nonzero(ok)[0], held[ok]] = 1.0
  return out


class OnsetHead(nnx.Module):
  """Mix condition (latent and chroma) [B, T, C] -> logit [B, T] that a bass note starts in the
  frame: a residual stack of dilated convolutions (dilations 1, 2, 4, 8: about 4 s of context
  at the demo's 15.6 frames per second, enough to see the beat)."""

  def __init__(self, in_channels: int, hidden: int, kernel_size: int, *, rngs: nnx.Rngs):
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
    conv = lambda c_in, d: nnx.Conv(c_in, hidden, kernel_size=(kernel_size,),
                                    kernel_dilation=(d,), padding="SAME", kernel_init=init,
                                    rngs=rngs)
    self.convs = nnx.List([conv(in_channels, 1)] + [conv(hidden, d) for d in (2, 4, 8)])
    self.out = nnx.Conv(hidden, 1, kernel_size=(1,), kernel_init=nnx.initializers.zeros_init(),
                        rngs=rngs)

  def __call__(self, cond_BxTxC: jax.Array) -> jax.Array:
    h = jax.nn.silu(self.convs[0](cond_BxTxC.astype(jnp.float32)))
    for conv in self.convs[1:]:
      h = h + jax.nn.silu(conv(h))
    return self.out(h)[..., 0]


def onset_loss(logits_BxT: jax.Array, onsets_BxT: jax.Array) -> jax.Array:
  """Mean binary cross-entropy of the onset head against 0/1 note starts."""
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits_BxT.astype(jnp.float32),
                                                     onsets_BxT.astype(jnp.float32)))


def pick_onsets(logits_BxT: jax.Array, threshold: float) -> jax.Array:
  """[B, T] float 0/1: frames whose onset probability is above `threshold` and a local peak
  (not below the previous frame, above the next), so one note start gives one onset."""
  p = jax.nn.sigmoid(logits_BxT.astype(jnp.float32))
  prev = jnp.pad(p, ((0, 0), (1, 0)))[:, :-1]
  nxt = jnp.pad(p, ((0, 0), (0, 1)))[:, 1:]
  return ((p > threshold) & (p >= prev) & (p > nxt)).astype(jnp.float32)


def path_changes(path_BxT: jax.Array) -> jax.Array:
  """[B, T] float 0/1: frames where a pitch-class path starts or changes (a new note there)."""
  prev = jnp.pad(path_BxT, ((0, 0), (1, 0)), constant_values=NUM_PC)[:, :-1]
  return ((path_BxT != prev) & (path_BxT < NUM_PC)).astype(jnp.float32)


def onset_f1(pred_BxT: jax.Array, true_BxT: jax.Array, tolerance: int = 1) -> jax.Array:
  """F-measure of predicted against true 0/1 onset frames, a prediction counting as a hit when a
  true onset lies within `tolerance` frames (and vice versa for recall). Runs inside jit."""
  def widen(x):
    out = x
    for d in range(1, tolerance + 1):
      out = jnp.maximum(out, jnp.pad(x, ((0, 0), (d, 0)))[:, :-d])
      out = jnp.maximum(out, jnp.pad(x, ((0, 0), (0, d)))[:, d:])
    return out
  pred, true = pred_BxT.astype(jnp.float32), true_BxT.astype(jnp.float32)
  precision = jnp.sum(pred * widen(true)) / jnp.maximum(jnp.sum(pred), 1.0)
  recall = jnp.sum(true * widen(pred)) / jnp.maximum(jnp.sum(true), 1.0)
  return 2 * precision * recall / jnp.maximum(precision + recall, 1e-9)
