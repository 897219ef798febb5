"""The U-Net's configuration and what follows from it alone (length multiple, condition channels):
no Flax, so a process whose compiled sampler comes from the program cache (bassgen.aot) reads its
model's config without importing the network code. `bassgen.models.unet` re-exports all of it."""
from __future__ import annotations

import dataclasses
from typing import Mapping

import jax.numpy as jnp

from bassgen.errors import BassgenError
from bassgen.models import typed

NUM_PC = 12   # bass pitch classes (harmony.NUM_PC)
POSITIONS = ("dpb", "sinusoidal", "none")


@dataclasses.dataclass(frozen=True)
class HarmonyConfig:
  """The harmony head (bassgen/models/harmony.py) of `model.harmony`; its training-only keys
  (aux_weight, predicted_path_*) are read by the trainer."""
  enabled: bool = False
  hidden: int = 0
  kernel_size: int = 9
  equivariant: bool = True   # False: the ablation without sharing across transpositions
  onsets: bool = False       # the bass onset channel and its head (harmony.OnsetHead)
  onset_hidden: int = 64
  onset_kernel_size: int = 5


@dataclasses.dataclass(frozen=True)
class UNetConfig:
  """The U-Net's architecture (the `model` section of configs/ldm.py)."""
  latent_channels: int
  channels: tuple[int, ...]      # one entry per resolution; time halves between levels
  num_blocks: int
  attn_levels: tuple[int, ...]
  num_heads: int
  dpb_hidden: int
  emb_dim: int
  norm_groups: int
  dropout: float
  kernel_size: int = 3
  dpb_depth: int = 2
  position: str = "dpb"
  dtype: str = "float32"         # compute dtype; parameters are float32
  mix_chroma: bool = False       # the condition carries the mix's 12-bin chroma
  harmony: HarmonyConfig = HarmonyConfig()

  def __post_init__(self):
    if self.position not in POSITIONS:
      raise BassgenError(f"model.position is {self.position!r}; choose one of {POSITIONS} "
                         "(e.g. --config.model.position=dpb)")
    levels = len(self.channels)
    bad = [a for a in self.attn_levels if not 0 <= a < levels]
    if bad:
      raise BassgenError(f"model.attn_levels {tuple(self.attn_levels)} names levels outside "
                         f"0..{levels - 1}")
    if self.harmony.onsets and not self.harmony.enabled:
      raise BassgenError("model.harmony.onsets needs model.harmony.enabled=True; to turn the "
                         "pathway off, set both: --config.model.harmony.enabled=False "
                         "--config.model.harmony.onsets=False")
    if self.harmony.enabled and not self.mix_chroma:
      raise BassgenError("model.harmony.enabled needs model.mix_chroma=True (the harmony head "
                         "reads the mix chroma)")
    try:
      jnp.dtype(self.dtype)
    except TypeError:
      raise BassgenError(f"model.dtype is {self.dtype!r}; use 'float32' or 'bfloat16'") from None

  @classmethod
  def from_config(cls, section) -> "UNetConfig":
    return typed.from_section(cls, section, nested={"harmony": HarmonyConfig})

  @classmethod
  def of(cls, cfg: "UNetConfig | Mapping") -> "UNetConfig":
    """`cfg` itself, or the typed config of a `model` section."""
    return cfg if isinstance(cfg, cls) else cls.from_config(cfg)


def length_multiple(cfg: UNetConfig) -> int:
  """Latent lengths the U-Net accepts are multiples of this (2 ** number of downsamplings).
  (`cfg`: a `UNetConfig` or the `model` section it is built from, as for the helpers below.)"""
  return 2 ** (len(UNetConfig.of(cfg).channels) - 1)


def harmony_enabled(cfg: UNetConfig) -> bool:
  return UNetConfig.of(cfg).harmony.enabled


def onsets_enabled(cfg: UNetConfig) -> bool:
  return UNetConfig.of(cfg).harmony.onsets


def harmony_channels(cfg: UNetConfig) -> int:
  """Condition channels the harmony pathway adds: 12 one-hot bass pitch-class channels with
  `harmony.enabled` (+ 1 bass onset channel with `harmony.onsets`)."""
  cfg = UNetConfig.of(cfg)
  return (NUM_PC if cfg.harmony.enabled else 0) + (1 if cfg.harmony.onsets else 0)


def cond_channels(cfg: UNetConfig) -> int:
  """Channels of the condition: the mix latent (+ 12 pitch-class channels with `mix_chroma`)
  (+ the harmony pathway's channels, `harmony_channels`)."""
  cfg = UNetConfig.of(cfg)
  return cfg.latent_channels + (12 if cfg.mix_chroma else 0) + harmony_channels(cfg)


def sampling_cond_channels(cfg: UNetConfig) -> int:
  """Channels of the condition a sampler is given: the mix latent and chroma; the harmony
  channels are added inside the sampler from the heads' predictions (`complete_condition`)."""
  return cond_channels(cfg) - harmony_channels(cfg)
