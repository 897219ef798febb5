"""python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ldm_demo

Conditional latent diffusion model (DESIGN.md §2): a 1-D U-Net with Dynamic Positional Bias over
normalised autoencoder latents, EDM training, jitted samplers with adapted guidance and style
grounding. A base config (the `demo` variant) and one override block per other variant
(`configs/ldm.py:VARIANT`):
  paper     115 M-parameter U-Net (bfloat16 compute), 64-channel latents, 256-frame (~24 s)
            crops; for GPU/TPU.
  demo      3.9 M parameters, 32-channel latents, 128-frame crops; trains on a 2-core CPU
            in ~35 min (6 000 steps).
  runlocal  tiny; runs in seconds, used by the tests.
"""
from __future__ import annotations

import pathlib
import runpy
import types

import ml_collections

VARIANTS = ("paper", "demo", "runlocal")


def _common() -> types.SimpleNamespace:
  """configs/common.py, next to this file (config files are loaded by path, not as a package)."""
  return types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("common.py"))))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "demo"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} in --config=configs/ldm.py:{variant}; "
                     f"choose one of {VARIANTS}")
  common = _common()
  config = ml_collections.ConfigDict()
  config.variant = variant
  config.kind = "ldm"
  config.seed = 0
  # The trained autoencoder whose latents the model learns (its export, workdir or bundle).
  config.autoencoder_checkpoint = "runs/ae_demo"

  # The base config is the `demo` variant; `paper` and `runlocal` override it below.
  m = config.model = ml_collections.ConfigDict()   # bassgen/models/unet.py:UNetConfig
  m.position = "dpb"  # 'dpb' (paper) | 'sinusoidal' (absolute positions at the input) | 'none'
  m.kernel_size = 3
  m.latent_channels = 32
  m.channels = (64, 128, 192)  # one entry per resolution; time halves between levels
  m.num_blocks = 1
  m.attn_levels = (2,)         # levels with self-attention (0 = the latent frame rate)
  m.num_heads = 4
  m.dpb_hidden = 32
  m.dpb_depth = 2              # hidden layers of the DPB MLP
  m.emb_dim = 256
  m.norm_groups = 16
  m.dropout = 0.0
  m.dtype = "float32"          # compute dtype; parameters are float32
  # Condition = the mix latent (the paper), plus with `mix_chroma` the mix's 12-bin pitch-class
  # profile per latent frame (computed from the mix waveform; experiments/ldm/README.md).
  m.mix_chroma = True
  # Harmony pathway (bassgen/models/harmony.py; beyond the paper, off in `paper`): a
  # transposition-equivariant head predicts the bass pitch class per frame from the mix chroma
  # (cross-entropy against score/tracked labels, weight aux_weight); the U-Net is conditioned on
  # a one-hot pitch class (the true one in training, the head's Viterbi path when sampling).
  h = m.harmony = ml_collections.ConfigDict()
  h.enabled = True
  h.hidden = 48
  h.kernel_size = 9
  h.equivariant = True  # False: the ablation without sharing across transpositions
  h.aux_weight = 1.0
  # Share of training examples whose pitch-class condition is the head's Viterbi path (what the
  # sampler uses) instead of the true one, ramped in over predicted_path_warmup steps; 0 = always
  # the true one (teacher forcing only). See trainers/ldm.py:training_condition.
  h.predicted_path_prob = 0.0
  h.predicted_path_warmup = 2000
  # Bass onset channel: a head on the mix latent and chroma predicts where bass notes start
  # (binary cross-entropy against the score's note starts, weight onset_aux_weight); the U-Net
  # reads 1 where a note starts (the score's in training, the head's peaks when sampling).
  # False: the bundle of 2026-12-02, whose bass held its notes through each chord
  # (experiments/ldm/README.md, "The onset channel").
  h.onsets = True
  h.onset_hidden = 64
  h.onset_kernel_size = 5
  h.onset_aux_weight = 1.0

  dif = config.diffusion = ml_collections.ConfigDict()
  dif.sigma_data = 1.0  # latents are normalised per channel to unit std
  # EDM's log-normal σ: P_mean -1.2 was tuned for σ_data 0.5; the same σ/σ_data gives -1.2 + ln 2.
  dif.p_mean = -0.5
  dif.p_std = 1.2
  dif.p_uncond = 0.1  # probability of the null condition in training (classifier-free guidance)

  s = config.sample = ml_collections.ConfigDict()
  s.sampler = "dpmpp2m"  # 'euler' | 'heun' | 'dpmpp2m'
  s.steps = 32
  s.sigma_min = 0.002
  s.sigma_max = 80.0
  s.rho = 7.0
  s.guidance_w = 2.0  # 1 = conditional model alone, no guidance
  s.rescale_phi = 0.7  # 0 = plain classifier-free guidance
  s.ground_strength = 1.0  # style grounding strength λ (only with a reference bass)
  s.ground_sigma_threshold = 1.0  # grounding applies while σ > this
  # With model.harmony: nats a change of the bass pitch-class path costs (0 = frame-wise argmax).
  s.harmony_switch_penalty = 6.0
  # With model.harmony.onsets: onset probability above which a local peak starts a bass note.
  s.onset_threshold = 0.5
  s.seed = 0
  # For `python -m bassgen.main --config=configs/ldm.py:demo --mode=sample --config.sample.mix=...`
  s.mix = ""  # file(s) or folder, comma-separated
  s.style = ""  # optional reference bass
  s.out = "samples"
  s.checkpoint = "experiments/demo"  # bundle or diffusion workdir
  s.num_samples = 1
  s.overwrite = False
  # Lengths are padded up to the smallest bucket that fits (then cropped back), so a new song
  # length rarely compiles again; beyond the last bucket, up to a multiple of bucket_multiple.
  s.buckets = (128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
  s.bucket_multiple = 512

  # Prepared audio; latents are cached in WORKDIR/latents.
  d = config.data = common.data(silence_threshold_db=-50.0, num_val_examples=64)
  d.mixes_per_track = 4  # K random mixes per track
  t = config.train = common.train(batch_size=16, num_steps=6000, max_minutes=75.0,
                                  log_every=50, eval_every=1000, ckpt_every=1000)
  t.crop_frames = 128
  o = config.optim = common.optim(lr=5e-4, warmup_steps=300, ema_decay=0.999)
  config.mesh = common.mesh()

  if variant == "paper":
    config.autoencoder_checkpoint = "runs/ae_paper"
    m.latent_channels = 64
    m.channels = (256, 512, 640, 768)
    m.num_blocks = 2
    m.attn_levels = (2, 3)  # 1/4 and 1/8 of the latent frame rate
    m.num_heads = 8
    m.dpb_hidden = 128
    m.emb_dim = 768
    m.norm_groups = 32
    m.dropout = 0.1
    m.dtype = "bfloat16"
    m.mix_chroma = False
    h.enabled = False
    h.onsets = False
    h.hidden = 64
    s.buckets = (256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072, 4096)
    d.mixes_per_track = 8
    d.num_val_examples = 256
    t.crop_frames = 256
    t.batch_size = 64
    t.num_steps = 400_000
    t.max_minutes = 0.0
    t.log_every = 100
    t.eval_every = 5000
    t.ckpt_every = 5000
    o.lr = 1e-4
    o.warmup_steps = 5_000
    o.ema_decay = 0.9999
  elif variant == "runlocal":
    config.autoencoder_checkpoint = ""
    m.latent_channels = 8
    m.channels = (16, 32)
    m.attn_levels = (1,)
    m.num_heads = 2
    m.dpb_hidden = 16
    m.emb_dim = 32
    m.norm_groups = 4
    h.hidden = 8
    s.steps = 8
    s.buckets = (16, 32, 64)
    s.bucket_multiple = 32
    d.mixes_per_track = 2
    d.num_val_examples = 8
    t.crop_frames = 32
    t.batch_size = 8
    t.num_steps = 4
    t.max_minutes = 0.0
    t.log_every = 1
    t.eval_every = 2
    t.ckpt_every = 2
    o.lr = 1e-3
    o.warmup_steps = 1
    o.ema_decay = 0.9
    config.mesh.min_shard_size = 1024   # tiny weights: shard most of them, so tests exercise fsdp
  return config
