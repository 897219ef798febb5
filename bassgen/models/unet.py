"""The conditional 1-D U-Net of DESIGN.md §2 (the raw network F of EDM, before preconditioning).

Input: the noisy target latent, the condition (the mix latent, followed by the mix's 12-bin
pitch-class profile per latent frame when `model.mix_chroma` is on) and a one-channel "condition
present" mask, concatenated along channels. The null condition of classifier-free guidance is the mix latent
replaced by zeros with the mask channel at 0 (`cond_mask_B = 0`), so the network always knows
which of the two it sees, and no learned null vector is needed.

Levels: `len(model.channels)` resolutions; between two levels time is down- (up-)sampled by 2, so
a length must be a multiple of `length_multiple(cfg)`. Self-attention (with a Dynamic Positional
Bias) runs at the levels listed in `model.attn_levels` and in the middle block. With
`model.position = 'dpb'` there is no absolute position anywhere in the network.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from flax import nnx

from bassgen.errors import BassgenError
from bassgen.models import harmony, layers
from bassgen.models.layers import count_params  # noqa: F401  (unet.count_params, as benchmarks use it)
# The config and its helpers live in unet_config (no Flax); re-exported here.
from bassgen.models.unet_config import (POSITIONS, HarmonyConfig, UNetConfig,  # noqa: F401
                                        cond_channels, harmony_channels, harmony_enabled,
                                        length_multiple, onsets_enabled, sampling_cond_channels)


def _downsample_mask(frame_mask_BxT: jax.Array | None) -> jax.Array | None:
  if frame_mask_BxT is None:
    return None
  b, t = frame_mask_BxT.shape
  return frame_mask_BxT.reshape(b, t // 2, 2).max(axis=-1)


class UNet1D(nnx.Module):
  """`UNet1D(UNetConfig.from_config(config.model), rngs=...)`; call
  `model(x_BxTxC, sigma_B, cond_BxTxC, cond_mask_B)`.

  The optional `frame_mask_BxT` (1 = real frame, 0 = padding) keeps padded frames out of norm
  statistics and attention keys.
  """

  def __init__(self, cfg: UNetConfig, *, rngs: nnx.Rngs):
    channels = cfg.channels
    levels = len(channels)
    self.latent_channels = cfg.latent_channels
    self.cond_channels = cond_channels(cfg)
    # The harmony head (bassgen/models/harmony.py): mix chroma -> bass pitch-class logits.
    self.harmony = (harmony.HarmonyHead(cfg.harmony.hidden, cfg.harmony.kernel_size, rngs=rngs,
                                        equivariant=cfg.harmony.equivariant)
                    if cfg.harmony.enabled else None)
    # The onset head: mix latent and chroma -> logit that a bass note starts in the frame.
    self.onsets = (harmony.OnsetHead(cfg.latent_channels + harmony.NUM_PC, cfg.harmony.onset_hidden,
                                     cfg.harmony.onset_kernel_size, rngs=rngs)
                   if cfg.harmony.onsets else None)
    self.position = cfg.position
    self.multiple = length_multiple(cfg)
    groups, emb_dim = cfg.norm_groups, cfg.emb_dim
    dtype = jnp.dtype(cfg.dtype)

    def res(c_in, c_out):
      return layers.ResBlock(c_in, c_out, emb_dim, groups=groups, kernel_size=cfg.kernel_size,
                             dropout=cfg.dropout, rngs=rngs, dtype=dtype)

    def attn(c):
      return layers.SelfAttention(c, cfg.num_heads, groups=groups, position=cfg.position,
                                  dpb_hidden=cfg.dpb_hidden, dpb_depth=cfg.dpb_depth, rngs=rngs,
                                  dtype=dtype)

    self.noise_emb = layers.NoiseEmbedding(emb_dim, rngs=rngs)
    self.conv_in = layers.conv(cfg.latent_channels + self.cond_channels + 1, channels[0],
                               cfg.kernel_size, rngs=rngs, dtype=dtype)
    # Down path: per level `num_blocks` (ResBlock [+ attention]); every block output is a skip.
    self.down = nnx.List()
    self.downsample = nnx.List()
    skip_channels = [channels[0]]
    c = channels[0]
    for level, c_level in enumerate(channels):
      use_attn = level in cfg.attn_levels
      blocks = nnx.List()
      for _ in range(cfg.num_blocks):
        blocks.append(nnx.List([res(c, c_level)] + ([attn(c_level)] if use_attn else [])))
        c = c_level
        skip_channels.append(c)
      self.down.append(blocks)
      if level < levels - 1:
        self.downsample.append(layers.Downsample(c, c, rngs=rngs, dtype=dtype))
        skip_channels.append(c)
    self.mid_res1 = res(c, c)
    self.mid_attn = attn(c)
    self.mid_res2 = res(c, c)
    # Up path: per level `num_blocks + 1` ResBlocks, each eating one skip.
    self.up = nnx.List()
    self.upsample = nnx.List()
    for level in reversed(range(levels)):
      use_attn = level in cfg.attn_levels
      blocks = nnx.List()
      for _ in range(cfg.num_blocks + 1):
        c_skip = skip_channels.pop()
        blocks.append(nnx.List([res(c + c_skip, channels[level])]
                               + ([attn(channels[level])] if use_attn else [])))
        c = channels[level]
      self.up.append(blocks)
      if level > 0:
        self.upsample.append(layers.Upsample(c, c, rngs=rngs, dtype=dtype))
    self.norm_out = layers.group_norm(c, groups, rngs=rngs, dtype=dtype)
    self.conv_out = layers.conv(c, cfg.latent_channels, cfg.kernel_size, rngs=rngs, scale=0.0,
                                dtype=dtype)

  def chroma_of(self, cond_BxTxC: jax.Array) -> jax.Array:
    """The mix chroma channels of a condition [B, T, C'] (after the mix latent)."""
    c = self.latent_channels
    return cond_BxTxC[..., c: c + harmony.NUM_PC]

  def harmony_logits(self, cond_BxTxC: jax.Array) -> jax.Array:
    """Bass pitch-class logits [B, T, 12] from a condition's mix chroma (needs the head)."""
    return self.harmony(self.chroma_of(cond_BxTxC))

  def onset_logits(self, cond_BxTxC: jax.Array) -> jax.Array:
    """Bass onset logits [B, T] from a condition's mix latent and chroma (needs the head)."""
    return self.onsets(cond_BxTxC[..., : self.latent_channels + harmony.NUM_PC])

  def complete_condition(self, cond_BxTxC: jax.Array, switch_penalty: float,
                         onset_threshold: float = 0.5) -> jax.Array:
    """A sampling condition: the mix latent and chroma followed by the one-hot of the head's most
    likely pitch-class path and, with the onset head, the onset channel (its picked peaks and
    every change of the path, as in training a new pitch class always starts a note). Without
    the heads, `cond_BxTxC` unchanged."""
    if self.harmony is None:
      return cond_BxTxC
    path = harmony.decode_path(self.harmony_logits(cond_BxTxC), switch_penalty)
    parts = [cond_BxTxC, harmony.one_hot_path(path, cond_BxTxC.dtype)]
    if self.onsets is not None:
      picked = harmony.pick_onsets(self.onset_logits(cond_BxTxC), onset_threshold)
      onsets = jnp.maximum(picked, harmony.path_changes(path))
      parts.append(onsets[..., None].astype(cond_BxTxC.dtype))
    return jnp.concatenate(parts, axis=-1)

  def __call__(self, x_BxTxC: jax.Array, sigma_B: jax.Array, cond_BxTxC: jax.Array,
               cond_mask_B: jax.Array, frame_mask_BxT: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """Returns F_BxTxC in float32. `dropout_key` drives dropout in training mode (each block
    folds in its own index); the module holds no random state of its own."""
    b, t, c = x_BxTxC.shape
    if c != self.latent_channels or cond_BxTxC.shape != (b, t, self.cond_channels):
      raise BassgenError(
          f"the U-Net expects target latents [B, T, {self.latent_channels}] and a condition "
          f"[B, T, {self.cond_channels}], got {x_BxTxC.shape} and {cond_BxTxC.shape}; check that "
          "the latent cache was written by the autoencoder named in autoencoder_checkpoint")
    if t % self.multiple:
      raise BassgenError(
          f"latent length {t} is not a multiple of {self.multiple}; pad it to a bucket with "
          "bassgen.samplers.bucket_length (generate() does this for you)")
    mask_B11 = cond_mask_B.astype(x_BxTxC.dtype).reshape(b, 1, 1)
    h = jnp.concatenate([x_BxTxC, cond_BxTxC * mask_B11,
                         jnp.broadcast_to(mask_B11, (b, t, 1))], axis=-1)
    h = self.conv_in(h)
    if self.position == "sinusoidal":
      h = h + layers.absolute_positions(t, h.shape[-1])[None].astype(h.dtype)
    emb = self.noise_emb(sigma_B.astype(jnp.float32).reshape(b))

    block_keys = itertools.count()

    def res(block, h, fmask):
      key = None if dropout_key is None else jax.random.fold_in(dropout_key, next(block_keys))
      return block(h, emb, fmask, key)

    fmask = frame_mask_BxT
    skips = [h]
    for level, blocks in enumerate(self.down):
      for block in blocks:
        h = res(block[0], h, fmask)
        if len(block) > 1:
          h = block[1](h, fmask)
        skips.append(h)
      if level < len(self.downsample):
        h = self.downsample[level](h)
        fmask = _downsample_mask(fmask)
        skips.append(h)
    h = res(self.mid_res1, h, fmask)
    h = self.mid_attn(h, fmask)
    h = res(self.mid_res2, h, fmask)
    masks = [frame_mask_BxT]
    for _ in range(len(self.upsample)):
      masks.append(_downsample_mask(masks[-1]))
    for i, blocks in enumerate(self.up):
      fmask = masks[len(self.up) - 1 - i]
      for block in blocks:
        h = res(block[0], jnp.concatenate([h, skips.pop()], axis=-1), fmask)
        if len(block) > 1:
          h = block[1](h, fmask)
      if i < len(self.upsample):
        h = self.upsample[i](h)
    h = jax.nn.silu(layers.masked_norm(self.norm_out, h, frame_mask_BxT))
    return self.conv_out(h).astype(jnp.float32)
