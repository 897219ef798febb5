"""python -m bassgen.main --config=configs/ldm.py:demo --workdir=runs/ldm_demo

Conditional latent diffusion model (DESIGN.md §2): a 1-D U-Net with Dynamic Positional Bias over
normalised autoencoder latents, EDM training, jitted samplers with adapted guidance and style
grounding. Variants (`configs/ldm.py:VARIANT`):
  paper     115 M-parameter U-Net (bfloat16 compute), 64-channel latents, 256-frame (~24 s)
            crops; for GPU/TPU.
  demo      3.7 M parameters, 32-channel latents, 128-frame crops; trains on a 2-core CPU
            in ~45 min.
  runlocal  tiny; runs in seconds, used by the tests.
"""
from __future__ import annotations

import ml_collections

from bassgen import sharding

VARIANTS = ("paper", "demo", "runlocal")


def _model(variant: str) -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.position = "dpb"  # 'dpb' (paper) | 'sinusoidal' (absolute positions at the input) | 'none'
  m.kernel_size = 3
  # Condition = the mix latent (the paper), plus with `mix_chroma` the mix's 12-bin pitch-class
  # profile per latent frame (computed from the mix waveform; experiments/ldm/README.md).
  m.mix_chroma = variant != "paper"
  # Harmony pathway (bassgen/models/harmony.py; beyond the paper, off in `paper`): a
  # transposition-equivariant head predicts the bass pitch class per frame from the mix chroma
  # (cross-entropy against score/tracked labels, weight aux_weight); the U-Net is conditioned on
  # a one-hot pitch class (the true one in training, the head's Viterbi path when sampling).
  m.harmony = ml_collections.ConfigDict()
  m.harmony.enabled = variant != "paper"
  m.harmony.hidden = {"paper": 64, "demo": 48, "runlocal": 8}[variant]
  m.harmony.kernel_size = 9
  m.harmony.equivariant = True  # False: the ablation without sharing across transpositions
  m.harmony.aux_weight = 1.0
  # Share of training examples whose pitch-class condition is the head's Viterbi path (what the
  # sampler uses) instead of the true one, ramped in over predicted_path_warmup steps; 0 = always
  # the true one (teacher forcing only). See trainers/ldm.py:training_condition.
  m.harmony.predicted_path_prob = 0.0
  m.harmony.predicted_path_warmup = 2000
  m.dpb_depth = 2  # hidden layers of the DPB MLP
  m.dtype = "bfloat16" if variant == "paper" else "float32"  # compute dtype; parameters are f32
  if variant == "paper":
    m.latent_channels = 64
    m.channels = (256, 512, 640, 768)  # one entry per resolution; time halves between levels
    m.num_blocks = 2
    m.attn_levels = (2, 3)  # 1/4 and 1/8 of the latent frame rate
    m.num_heads = 8
    m.dpb_hidden = 128
    m.emb_dim = 768
    m.norm_groups = 32
    m.dropout = 0.1
  elif variant == "demo":
    m.latent_channels = 32
    m.channels = (64, 128, 192)
    m.num_blocks = 1
    m.attn_levels = (2,)
    m.num_heads = 4
    m.dpb_hidden = 32
    m.emb_dim = 256
    m.norm_groups = 16
    m.dropout = 0.0
  else:
    m.latent_channels = 8
    m.channels = (16, 32)
    m.num_blocks = 1
    m.attn_levels = (1,)
    m.num_heads = 2
    m.dpb_hidden = 16
    m.emb_dim = 32
    m.norm_groups = 4
    m.dropout = 0.0
  return m


def _diffusion() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.sigma_data = 1.0  # latents are normalised per channel to unit std
  # EDM's log-normal σ: P_mean -1.2 was tuned for σ_data 0.5; the same σ/σ_data gives -1.2 + ln 2.
  d.p_mean = -0.5
  d.p_std = 1.2
  d.p_uncond = 0.1  # probability of the null condition in training (classifier-free guidance)
  return d


def _sample(variant: str) -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.sampler = "dpmpp2m"  # 'euler' | 'heun' | 'dpmpp2m'
  s.steps = 32 if variant != "runlocal" else 8
  s.sigma_min = 0.002
  s.sigma_max = 80.0
  s.rho = 7.0
  s.guidance_w = 2.0  # 1 = conditional model alone, no guidance
  s.rescale_phi = 0.7  # 0 = plain classifier-free guidance
  s.ground_strength = 1.0  # style grounding strength λ (only with a reference bass)
  s.ground_sigma_threshold = 1.0  # grounding applies while σ > this
  # With model.harmony: nats a change of the bass pitch-class path costs (0 = frame-wise argmax).
  s.harmony_switch_penalty = 6.0
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
  if variant == "paper":
    s.buckets = (256, 320, 384, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072, 4096)
    s.bucket_multiple = 512
  elif variant == "demo":
    s.buckets = (128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
    s.bucket_multiple = 512
  else:
    s.buckets = (16, 32, 64)
    s.bucket_multiple = 32
  return s


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "demo"
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r} in --config=configs/ldm.py:{variant}; "
                     f"choose one of {VARIANTS}")
  config = ml_collections.ConfigDict()
  config.variant = variant
  config.kind = "ldm"
  config.seed = 0
  config.model = _model(variant)
  config.diffusion = _diffusion()
  config.sample = _sample(variant)

  # The trained autoencoder whose latents the model learns (its export, workdir or bundle).
  config.autoencoder_checkpoint = {"paper": "runs/ae_paper", "demo": "runs/ae_demo",
                                   "runlocal": ""}[variant]

  d = config.data = ml_collections.ConfigDict()
  d.train_dir = "data/prepared/train"  # prepared audio; latents are cached in WORKDIR/latents
  d.val_dir = "data/prepared/test"
  d.mixes_per_track = {"paper": 8, "demo": 4, "runlocal": 2}[variant]  # K random mixes per track
  d.gain_db_range = (-9.0, 3.0)
  d.silence_threshold_db = -50.0  # crops whose bass is quieter on average are redrawn
  d.num_val_examples = {"paper": 256, "demo": 64, "runlocal": 8}[variant]

  t = config.train = ml_collections.ConfigDict()
  t.crop_frames = {"paper": 256, "demo": 128, "runlocal": 32}[variant]
  t.batch_size = {"paper": 64, "demo": 16, "runlocal": 8}[variant]
  t.num_steps = {"paper": 400_000, "demo": 12_000, "runlocal": 4}[variant]
  t.max_minutes = {"paper": 0.0, "demo": 38.0, "runlocal": 0.0}[variant]
  t.log_every = {"paper": 100, "demo": 50, "runlocal": 1}[variant]
  t.eval_every = {"paper": 5000, "demo": 1000, "runlocal": 2}[variant]
  t.ckpt_every = {"paper": 5000, "demo": 1000, "runlocal": 2}[variant]
  t.keep_checkpoints = 2

  o = config.optim = ml_collections.ConfigDict()
  o.lr = {"paper": 1e-4, "demo": 5e-4, "runlocal": 1e-3}[variant]
  o.warmup_steps = {"paper": 5_000, "demo": 300, "runlocal": 1}[variant]
  o.end_lr_factor = 0.05
  o.b1 = 0.9
  o.b2 = 0.99
  o.weight_decay = 0.0
  o.clip_norm = 1.0
  o.ema_decay = {"paper": 0.9999, "demo": 0.999, "runlocal": 0.9}[variant]
  # Devices: mesh.data x mesh.fsdp (-1 = the rest); weights of >= mesh.min_shard_size elements
  # split their output channels over fsdp, smaller ones stay replicated (bassgen/sharding.py).
  config.mesh = sharding.mesh_config(
      min_shard_size={"paper": 2**14, "demo": 2**14, "runlocal": 1024}[variant])
  return config
