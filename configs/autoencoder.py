r"""The audio autoencoder (DESIGN.md §1).

  python -m bassgen.main --config=configs/autoencoder.py:demo --workdir=runs/ae_demo

Variants: `paper` (44.1 kHz, hop 256, 16x time down-sampling to 64 channels: ~10.8 latent frames/s,
64x compression; for TPU/GPU), `demo` (16 kHz, hop 128, 8x down to 32 channels: 32x compression;
trains on a 2-core CPU in five stages: `demo_base` from scratch without the low-band pitch terms,
`demo` fine-tunes it with them, `demo_decoder`, `demo_decoder2` and `demo_decoder3` fine-tune its
decoder alone, keeping the encoder and so the latents), `runlocal` (tiny; what the tests use). Override any field on the command
line: `--config.optim.lr=3e-4`.
"""
import pathlib
import runpy
import types

import ml_collections


def _common() -> types.SimpleNamespace:
  """configs/common.py, next to this file (config files are loaded by path, not as a package)."""
  return types.SimpleNamespace(**runpy.run_path(str(pathlib.Path(__file__).with_name("common.py"))))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "demo"
  common = _common()
  c = ml_collections.ConfigDict()
  c.variant = variant
  c.kind = "autoencoder"
  c.seed = 0
  c.sample_rate = 16000

  m = c.model = ml_collections.ConfigDict()   # bassgen/models/autoencoder.py:AutoencoderConfig
  m.n_fft = 512
  m.hop = 128
  m.spec_exponent = 0.5        # network sees |X|^a e^{i phi}
  m.num_down = 3               # time down-sampling 2**num_down after the STFT hop
  m.widths = (192, 256, 320, 384)
  m.dilations = (1, 3)         # one residual block per entry, at every resolution
  m.kernel_size = 3
  m.latent_channels = 32

  lo = c.loss = ml_collections.ConfigDict()
  lo.spec_l1_weight = 1.0
  lo.mag_l1_weight = 1.0
  lo.mrstft_sc_weight = 1.0
  lo.mrstft_logmag_weight = 1.0
  lo.log_mel_db_weight = 0.05
  lo.latent_l2_weight = 1e-4   # keeps the unbounded latent's scale sane
  lo.latent_noise_std = 0.0    # optional noise on the latent while training
  lo.mrstft_fft_sizes = (256, 512, 1024, 2048)
  lo.mel_n_fft = 1024
  # Pitch fidelity (experiments/autoencoder/README.md): spectral convergence + floored dB L1 of the
  # band below lowband_max_hz at long windows, where a bass note a quarter-tone off is visible.
  # An empty tuple turns the terms off (the autoencoder as first bundled).
  lo.lowband_fft_sizes = (4096,)
  lo.lowband_max_hz = 800.0
  lo.lowband_sc_weight = 1.0
  lo.lowband_logmag_weight = 1.0
  lo.lowband_phase_weight = 1.0
  lo.mel_bands = 80
  lo.mel_floor_db = 80.0

  d = c.data = common.data(silence_threshold_db=-45.0, num_val_examples=32)
  d.crop_samples = 16384
  d.worker_count = 0

  o = c.optim = common.optim(lr=1e-3, warmup_steps=200, ema_decay=0.999)

  t = c.train = common.train(batch_size=8,   # crops per step; each gives a mix and a bass example
                             num_steps=10000, max_minutes=85.0, log_every=25, eval_every=500,
                             ckpt_every=500)
  t.init_from = ""              # an autoencoder export to start from (fine-tuning); "" = random
  # Fine-tune the decoder of init_from only: its encoder, latents and latent statistics stay
  # exactly as they were, so latent caches and diffusion models made with it stay valid.
  t.freeze_encoder = False
  t.audio_every = 1000          # audio and spectrogram summaries of reconstructions
  t.stats_batches = 16          # batches used for the latent mean/std after training

  c.mesh = common.mesh()
  c.chunk = ml_collections.ConfigDict()
  c.chunk.latent_frames = 256   # long audio is coded in chunks of this many latent frames...
  c.chunk.margin = 16           # ...with this much context on each side (>= receptive field)

  if variant == "paper":
    c.sample_rate = 44100
    m.n_fft, m.hop, m.num_down = 1024, 256, 4
    m.widths = (512, 512, 640, 768, 768)
    m.latent_channels = 64
    lo.mrstft_fft_sizes = (512, 1024, 2048, 4096)
    lo.mel_n_fft = 2048
    lo.lowband_fft_sizes = (8192,)   # 5.4 Hz bins at 44.1 kHz
    d.crop_samples = 2**16
    t.batch_size = 16
    t.num_steps = 400_000
    t.max_minutes = 0.0
    t.eval_every = 5000
    t.ckpt_every = 5000
    t.audio_every = 10000
    o.lr = 3e-4
    o.warmup_steps = 2000
  elif variant == "runlocal":
    c.sample_rate = 8000
    c.mesh.min_shard_size = 1024   # tiny weights: shard most of them, so tests exercise fsdp
    m.n_fft, m.hop, m.num_down = 256, 64, 2
    m.widths = (16, 24, 32)
    m.dilations = (1,)
    m.latent_channels = 8
    lo.mrstft_fft_sizes = (128, 256)
    lo.mel_n_fft = 256
    lo.lowband_fft_sizes = (1024,)
    lo.mel_bands = 32
    d.crop_samples = 2048
    d.num_val_examples = 8
    t.num_steps = 6
    t.max_minutes = 0.0
    t.log_every = 2
    t.eval_every = 4
    t.ckpt_every = 2
    t.audio_every = 4
    t.stats_batches = 2
    o.warmup_steps = 2
    c.chunk.latent_frames = 16
    c.chunk.margin = 8
  elif variant in ("demo", "demo_decoder", "demo_decoder2", "demo_decoder3"):
    # Stage 2 of the demo recipe: fine-tune stage 1 (`demo_base`, no pitch terms) with the
    # low-band pitch-fidelity terms (experiments/autoencoder/README.md, "Keeping the notes").
    t.init_from = "runs/ae_demo_base"
    t.num_steps = 4000  # ~40 min at the 1.7 steps/s of this project's 2-core CPU
    t.max_minutes = 50.0
    o.lr = 5e-4
    o.warmup_steps = 50
    o.ema_decay = 0.998
    lo.lowband_sc_weight = 2.0
    if variant in ("demo_decoder", "demo_decoder2", "demo_decoder3"):
      # Stage 3: the same losses on stage 2's decoder alone (encoder, latents and latent
      # statistics stay stage 2's, so its latent cache and diffusion model stay valid).
      # Stages 4 and 5 (`demo_decoder2`, `demo_decoder3`): the same again from the stage before,
      # each with a fresh cosine schedule.
      t.init_from = {"demo_decoder": "runs/ae_demo", "demo_decoder2": "runs/ae_demo_decoder",
                     "demo_decoder3": "runs/ae_demo_decoder2"}[variant]
      t.freeze_encoder = True
      t.num_steps = 5000 if variant == "demo_decoder" else 6000  # 33 / 33-40 min, 2-core CPU
      t.max_minutes = 60.0 if variant == "demo_decoder" else 90.0
      o.lr = 3e-4
  elif variant == "demo_base":
    # Stage 1 of the demo recipe: the autoencoder as first bundled (no low-band terms).
    lo.lowband_fft_sizes = ()
  else:
    raise ValueError(f"unknown variant {variant!r}: use paper, demo, demo_base, demo_decoder, "
                     "demo_decoder2, demo_decoder3 or runlocal")
  return c
