"""The low-band pitch terms grow with a bass note's detuning, more steeply than spectral
convergence at the autoencoder's own window."""
import jax.numpy as jnp
import numpy as np

from bassgen.evaluation import synthetic as S
from bassgen.models import autoencoder_losses as AL

SR = 16000


def _note(midi):
  return S.pluck(midi, 1.0, SR, decay=0.5)[None]


def test_lowband_terms_grow_with_detuning():
  ref = jnp.asarray(_note(33.0))                      # A1, 55 Hz
  terms = {}
  for cents in (0, 10, 25, 50):
    est = jnp.asarray(_note(33.0 + cents / 100))
    sc, db, phase = AL.lowband_terms(est, ref, n_fft=4096, max_hz=800.0, sample_rate=SR)
    short_sc, _ = AL.spectral_terms(est, ref, 512)
    terms[cents] = (float(sc), float(db), float(phase), float(short_sc))
  assert all(v < 1e-3 for v in terms[0][:3])          # in tune: no loss
  for i in range(3):                                  # each term grows with the detuning
    assert terms[10][i] < terms[25][i] < terms[50][i], (i, terms)
  # At 50 cents the long-window spectral convergence is over twice the 512-sample one's.
  assert terms[50][0] > 2 * terms[50][3], terms


def test_reconstruction_losses_include_the_lowband_terms_when_configured():
  import pathlib

  import ml_collections
  from bassgen.config_loading import load_config
  root = pathlib.Path(__file__).parents[1]
  cfg = load_config(f"{root / 'configs' / 'autoencoder.py'}:runlocal").loss
  wav = jnp.asarray(np.random.default_rng(0).standard_normal((2, 2048)), jnp.float32)
  feat = jnp.zeros((2, 32, 2 * 129))
  z = jnp.zeros((2, 8, 8))
  terms = AL.reconstruction_losses(feat, feat, wav * 0.5, wav, z, cfg, 8000)
  assert {"lowband_sc", "lowband_logmag", "lowband_phase"} <= set(terms)
  off = ml_collections.ConfigDict(cfg.to_dict())
  off.lowband_fft_sizes = ()
  assert "lowband_sc" not in AL.reconstruction_losses(feat, feat, wav, wav, z, off, 8000)
