"""Building blocks of the diffusion U-Net (DESIGN.md §2): noise-level embedding, FiLM residual
blocks, 2x resampling in time, and self-attention whose logits get a Dynamic Positional Bias.

All layers act on `h_BxTxC` (batch, frames, channels). An optional `frame_mask_BxT` (1 = real
frame, 0 = padding added to reach a length bucket) keeps padding out of the group-norm statistics
and out of the attention keys, so padding a song changes its real frames as little as possible.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

# Logical axis names of parameters (of every network here); the config's sharding rules map them to
# mesh axes.
AXIS_IN, AXIS_OUT = "conv_in", "conv_out"


def partitioned(init, names: tuple):
  """`init` whose parameter carries the logical axis `names`. It is placed by jit's out_shardings
  (bassgen/sharding.py), never eagerly where it is created."""
  return nnx.with_partitioning(init, names, eager_sharding=False)


def _kernel_init(scale: float = 1.0, names: tuple = (AXIS_IN, AXIS_OUT)):
  if scale == 0.0:
    init = nnx.initializers.zeros_init()
  else:
    init = nnx.initializers.variance_scaling(scale, "fan_avg", "uniform")
  return partitioned(init, names)


def _bias_init():
  return partitioned(nnx.initializers.zeros_init(), (AXIS_OUT,))


def dense(c_in: int, c_out: int, *, rngs: nnx.Rngs, scale: float = 1.0,
          dtype: jnp.dtype = jnp.float32) -> nnx.Linear:
  """Linear layer with a Xavier-uniform kernel scaled by `scale` (0 gives a zero kernel).

  Parameters are float32; `dtype` is the compute dtype (bfloat16 for mixed precision).
  """
  return nnx.Linear(c_in, c_out, kernel_init=_kernel_init(scale), bias_init=_bias_init(),
                    dtype=dtype, rngs=rngs)


def conv(c_in: int, c_out: int, kernel_size: int, *, rngs: nnx.Rngs, stride: int = 1,
         scale: float = 1.0, dtype: jnp.dtype = jnp.float32) -> nnx.Conv:
  """1-D 'SAME' convolution over time (the kernel is [K, C_in, C_out])."""
  return nnx.Conv(c_in, c_out, kernel_size=(kernel_size,), strides=(stride,), padding="SAME",
                  kernel_init=_kernel_init(scale, (None, AXIS_IN, AXIS_OUT)),
                  bias_init=_bias_init(), dtype=dtype, rngs=rngs)


def group_norm(channels: int, groups: int, *, rngs: nnx.Rngs,
               dtype: jnp.dtype = jnp.float32) -> nnx.GroupNorm:
  """Group norm (statistics in float32 whatever the compute dtype)."""
  if channels % groups:
    raise ValueError(f"{channels} channels cannot be split into {groups} norm groups: "
                     "set model.norm_groups to a divisor of every entry of model.channels")
  return nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-5, dtype=dtype, rngs=rngs,
                       scale_init=partitioned(nnx.initializers.ones_init(), (AXIS_OUT,)),
                       bias_init=_bias_init())


def masked_norm(norm: nnx.GroupNorm, h_BxTxC: jax.Array,
                frame_mask_BxT: jax.Array | None) -> jax.Array:
  """Group norm whose statistics skip padded frames (`frame_mask_BxT` = 0)."""
  if frame_mask_BxT is None:
    return norm(h_BxTxC)
  mask = jnp.broadcast_to(frame_mask_BxT[:, :, None] > 0, h_BxTxC.shape)
  return norm(h_BxTxC, mask=mask)


def sinusoidal_embedding(x: jax.Array, dim: int, *, min_freq: float, max_freq: float) -> jax.Array:
  """[..., ] -> [..., dim]: sin and cos of x at `dim // 2` frequencies spaced geometrically."""
  half = dim // 2
  freqs = jnp.exp(jnp.linspace(math.log(min_freq), math.log(max_freq), half))
  angles = x[..., None].astype(jnp.float32) * freqs
  return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def absolute_positions(length: int, dim: int) -> jax.Array:
  """[T, dim] sinusoidal absolute positions (Transformer-style, periods 2π … 2π·10⁴ frames).

  Used only by the `model.position = 'sinusoidal'` ablation; the default model has no absolute
  position anywhere.
  """
  return sinusoidal_embedding(jnp.arange(length, dtype=jnp.float32), dim,
                              min_freq=1e-4, max_freq=1.0)


class NoiseEmbedding(nnx.Module):
  """c_noise = log(σ)/4 -> Fourier features -> 2-layer MLP -> [B, emb_dim]."""

  def __init__(self, emb_dim: int, *, rngs: nnx.Rngs, fourier_dim: int = 128):
    self.fourier_dim = fourier_dim
    self.fc1 = dense(fourier_dim, emb_dim, rngs=rngs)
    self.fc2 = dense(emb_dim, emb_dim, rngs=rngs)

  def __call__(self, sigma_B: jax.Array) -> jax.Array:
    c_noise_B = jnp.log(sigma_B) / 4.0
    # c_noise spans about [-2, 2] in training; frequencies 1 … 64 rad per unit resolve it finely.
    feats = sinusoidal_embedding(c_noise_B, self.fourier_dim, min_freq=1.0, max_freq=64.0)
    return self.fc2(jax.nn.silu(self.fc1(feats)))


class ResBlock(nnx.Module):
  """GroupNorm -> SiLU -> conv -> GroupNorm -> FiLM(noise) -> SiLU -> dropout -> conv, plus skip.

  The second conv starts at zero, so every block starts as the identity (or its 1x1 projection).
  """

  def __init__(self, c_in: int, c_out: int, emb_dim: int, *, groups: int, kernel_size: int,
               dropout: float, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
    self.norm1 = group_norm(c_in, groups, rngs=rngs, dtype=dtype)
    self.conv1 = conv(c_in, c_out, kernel_size, rngs=rngs, dtype=dtype)
    self.film = dense(emb_dim, 2 * c_out, rngs=rngs, dtype=dtype)
    self.norm2 = group_norm(c_out, groups, rngs=rngs, dtype=dtype)
    self.dropout = nnx.Dropout(dropout)   # its key comes with each call
    self.conv2 = conv(c_out, c_out, kernel_size, rngs=rngs, scale=0.0, dtype=dtype)
    self.skip = conv(c_in, c_out, 1, rngs=rngs, dtype=dtype) if c_in != c_out else None

  def __call__(self, h_BxTxC: jax.Array, emb_BxE: jax.Array,
               frame_mask_BxT: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
    """`dropout_key` drives the dropout in training mode (required there when dropout > 0)."""
    x = self.conv1(jax.nn.silu(masked_norm(self.norm1, h_BxTxC, frame_mask_BxT)))
    scale_BxC, shift_BxC = jnp.split(self.film(jax.nn.silu(emb_BxE)), 2, axis=-1)
    x = masked_norm(self.norm2, x, frame_mask_BxT)
    x = x * (1.0 + scale_BxC[:, None]) + shift_BxC[:, None]
    x = self.conv2(self.dropout(jax.nn.silu(x), rngs=dropout_key))
    skip = h_BxTxC if self.skip is None else self.skip(h_BxTxC)
    return (skip + x) * (1.0 / math.sqrt(2.0))


class Downsample(nnx.Module):
  """Halves the frame rate with a stride-2 convolution."""

  def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
    self.conv = conv(c_in, c_out, 3, stride=2, rngs=rngs, dtype=dtype)

  def __call__(self, h_BxTxC: jax.Array) -> jax.Array:
    return self.conv(h_BxTxC)


class Upsample(nnx.Module):
  """Doubles the frame rate: nearest-neighbour repeat, then a convolution (no checkerboard)."""

  def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
    self.conv = conv(c_in, c_out, 3, rngs=rngs, dtype=dtype)

  def __call__(self, h_BxTxC: jax.Array) -> jax.Array:
    return self.conv(jnp.repeat(h_BxTxC, 2, axis=1))


def relative_distance_features(length: int) -> jax.Array:
  """[2T-1] features sign(r)·log(1+|r|) of the distances r = -(T-1) … T-1."""
  r = jnp.arange(-(length - 1), length, dtype=jnp.float32)
  return jnp.sign(r) * jnp.log1p(jnp.abs(r))


class DynamicPositionBias(nnx.Module):
  """CrossFormer's DPB: an MLP maps the relative distance i - j to one logit bias per head.

  It is a function of the distance alone, so it is defined (and finite) for distances never seen
  in training, and the network holds no position parameter tied to a sequence length.
  """

  def __init__(self, num_heads: int, hidden: int, depth: int, *, rngs: nnx.Rngs):
    # No normalisation layer right after the 1-D input: it would keep only the sign of r.
    self.proj = dense(1, hidden, rngs=rngs)
    self.hidden = nnx.List([dense(hidden, hidden, rngs=rngs) for _ in range(depth)])
    self.out = dense(hidden, num_heads, rngs=rngs)

  def table(self, length: int) -> jax.Array:
    """[2T-1, N] bias for the distances -(T-1) … T-1 (row T-1 is distance 0)."""
    h = jax.nn.silu(self.proj(relative_distance_features(length)[:, None]))
    for layer in self.hidden:
      h = jax.nn.silu(layer(h))
    return self.out(h)

  def __call__(self, length: int) -> jax.Array:
    """[N, T, T] bias; entry [n, i, j] belongs to the distance i - j."""
    table_RxN = self.table(length)
    pos = jnp.arange(length)
    index_TxT = pos[:, None] - pos[None, :] + (length - 1)
    return jnp.transpose(table_RxN[index_TxT], (2, 0, 1))


class SelfAttention(nnx.Module):
  """Pre-norm multi-head self-attention over time with a residual connection.

  `position = 'dpb'` adds the Dynamic Positional Bias to the logits; 'sinusoidal' and 'none' add
  nothing here (the 'sinusoidal' ablation puts absolute positions at the network input).
  """

  def __init__(self, channels: int, num_heads: int, *, groups: int, position: str,
               dpb_hidden: int, dpb_depth: int, rngs: nnx.Rngs, dtype: jnp.dtype = jnp.float32):
    if channels % num_heads:
      raise ValueError(f"{channels} channels cannot be split into {num_heads} heads: set "
                       "model.num_heads to a divisor of the channels of every attention level")
    self.num_heads = num_heads
    self.norm = group_norm(channels, groups, rngs=rngs, dtype=dtype)
    self.qkv = dense(channels, 3 * channels, rngs=rngs, dtype=dtype)
    self.out = dense(channels, channels, rngs=rngs, scale=0.0, dtype=dtype)
    # The DPB MLP is tiny and stays in float32; its bias is cast to the logits' dtype.
    self.dpb = (DynamicPositionBias(num_heads, dpb_hidden, dpb_depth, rngs=rngs)
                if position == "dpb" else None)

  def __call__(self, h_BxTxC: jax.Array, frame_mask_BxT: jax.Array | None = None) -> jax.Array:
    b, t, c = h_BxTxC.shape
    qkv = self.qkv(masked_norm(self.norm, h_BxTxC, frame_mask_BxT))
    q_BxTxNxH, k_BxTxNxH, v_BxTxNxH = (
        a.reshape(b, t, self.num_heads, c // self.num_heads) for a in jnp.split(qkv, 3, axis=-1))
    bias = None if self.dpb is None else self.dpb(t)[None].astype(q_BxTxNxH.dtype)
    mask = None if frame_mask_BxT is None else (frame_mask_BxT > 0)[:, None, None, :]
    o_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, bias=bias, mask=mask)
    return h_BxTxC + self.out(o_BxTxNxH.reshape(b, t, c))


def count_params(model_or_params) -> int:
  """Number of trainable parameters of a module, or of the arrays of a parameter tree."""
  tree = (nnx.state(model_or_params, nnx.Param) if isinstance(model_or_params, nnx.Module)
          else model_or_params)
  return sum(x.size for x in jax.tree.leaves(tree))
