"""Reconstruction losses of the autoencoder (DESIGN.md §1): pure functions of arrays."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from bassgen import spectral


def spectral_terms(wav_pred_BxS: jax.Array, wav_true_BxS: jax.Array, n_fft: int,
                   eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """(spectral convergence, mean |log-magnitude difference|) at one resolution, hop n_fft / 4."""
  hop = n_fft // 4
  mag_p = spectral.safe_mag(spectral.stft(wav_pred_BxS, n_fft, hop))
  mag_t = spectral.safe_mag(spectral.stft(wav_true_BxS, n_fft, hop))
  sc = jnp.sqrt((jnp.sum((mag_t - mag_p) ** 2, axis=(1, 2)) + eps) /
                (jnp.sum(mag_t**2, axis=(1, 2)) + eps))
  logmag = jnp.mean(jnp.abs(jnp.log(mag_t + eps) - jnp.log(mag_p + eps)))
  return jnp.mean(sc), logmag


def lowband_terms(wav_pred_BxS: jax.Array, wav_true_BxS: jax.Array, *, n_fft: int,
                  max_hz: float, sample_rate: int, floor_db: float = 60.0,
                  eps: float = 1e-7) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(spectral convergence, mean |dB difference| / 20, phase-advance error) of the band below
  `max_hz` at a long window.

  A bass fundamental of 41-200 Hz falls into the first few bins of the autoencoder's own STFT, so
  losses at its resolution barely see a note come back a quarter-tone off. At n_fft 4096 (16 kHz:
  3.9 Hz bins) the first harmonics of a detuned note land on other bins, so both terms grow with
  the detuning. The dB term is floored `floor_db` below the reference's loudest low-band bin so it
  weighs the harmonic peaks, not the noise between them. The phase-advance term compares, per
  bin, the unit phasor of X_t X*_{t-1} (the bin's instantaneous frequency: a 14-cent error at
  110 Hz turns it by 0.36 rad at hop 1024), weighted by the reference's magnitude.
  """
  hop = n_fft // 4
  k = max(2, int(max_hz * n_fft / sample_rate) + 1)
  spec_p = spectral.stft(wav_pred_BxS, n_fft, hop)[..., :k]
  spec_t = spectral.stft(wav_true_BxS, n_fft, hop)[..., :k]
  mag_p, mag_t = spectral.safe_mag(spec_p), spectral.safe_mag(spec_t)
  sc = jnp.sqrt((jnp.sum((mag_t - mag_p) ** 2, axis=(1, 2)) + eps) /
                (jnp.sum(mag_t**2, axis=(1, 2)) + eps))
  db_p = 20.0 * jnp.log10(mag_p + eps)
  db_t = 20.0 * jnp.log10(mag_t + eps)
  floor = jnp.max(db_t, axis=(1, 2), keepdims=True) - floor_db
  db = jnp.mean(jnp.abs(jnp.maximum(db_p, floor) - jnp.maximum(db_t, floor)))
  adv_p = spec_p[:, 1:] * jnp.conj(spec_p[:, :-1])
  adv_t = spec_t[:, 1:] * jnp.conj(spec_t[:, :-1])
  unit = lambda a: a / spectral.safe_mag(a, 1e-10)
  w = jnp.sqrt(mag_t[:, 1:] * mag_t[:, :-1])
  w = w / (jnp.sum(w, axis=(1, 2), keepdims=True) + eps)
  phase = jnp.sum(w * jnp.abs(unit(adv_p) - unit(adv_t)), axis=(1, 2))
  return jnp.mean(sc), db / 20.0, jnp.mean(phase)


def log_mel_l1_db(wav_pred_BxS: jax.Array, wav_true_BxS: jax.Array, *, sample_rate: int,
                  n_fft: int, n_mels: int, floor_db: float) -> jax.Array:
  """Mean |dB difference| of mel spectra, both floored `floor_db` below the reference's maximum.

  This is the evaluation's log-mel distance, made differentiable (it is 0-gradient below the floor).
  """
  mel = lambda w: spectral.mel_power(w, sample_rate, n_fft, n_fft // 4, n_mels, differentiable=True)
  db_p = 10.0 * jnp.log10(mel(wav_pred_BxS) + 1e-10)
  db_t = 10.0 * jnp.log10(mel(wav_true_BxS) + 1e-10)
  floor = jnp.max(db_t, axis=(1, 2), keepdims=True) - floor_db
  return jnp.mean(jnp.abs(jnp.maximum(db_p, floor) - jnp.maximum(db_t, floor)))


def reconstruction_losses(feat_pred: jax.Array, feat_true: jax.Array, wav_pred_BxS: jax.Array,
                          wav_true_BxS: jax.Array, z_BxLxC: jax.Array,
                          cfg: ml_collections.ConfigDict, sample_rate: int) -> dict[str, jax.Array]:
  """Every loss term, unweighted (the trainer logs each and sums them with `cfg.*_weight`)."""
  n_bins = feat_true.shape[-1] // 2
  mag = lambda f: jnp.sqrt(f[..., :n_bins] ** 2 + f[..., n_bins:] ** 2 + 1e-12)
  terms = {
      "spec_l1": jnp.mean(jnp.abs(feat_pred - feat_true)),
      "mag_l1": jnp.mean(jnp.abs(mag(feat_pred) - mag(feat_true))),
      "latent_l2": jnp.mean(z_BxLxC**2),
  }
  sc_all, logmag_all = [], []
  for n_fft in cfg.mrstft_fft_sizes:
    sc, logmag = spectral_terms(wav_pred_BxS, wav_true_BxS, n_fft)
    sc_all.append(sc)
    logmag_all.append(logmag)
  terms["mrstft_sc"] = jnp.mean(jnp.stack(sc_all))
  terms["mrstft_logmag"] = jnp.mean(jnp.stack(logmag_all))
  if cfg.get("lowband_fft_sizes"):
    lo = [lowband_terms(wav_pred_BxS, wav_true_BxS, n_fft=n_fft, max_hz=cfg.lowband_max_hz,
                        sample_rate=sample_rate) for n_fft in cfg.lowband_fft_sizes]
    for i, name in enumerate(("lowband_sc", "lowband_logmag", "lowband_phase")):
      terms[name] = jnp.mean(jnp.stack([t[i] for t in lo]))
  terms["log_mel_db"] = log_mel_l1_db(wav_pred_BxS, wav_true_BxS, sample_rate=sample_rate,
                                      n_fft=cfg.mel_n_fft, n_mels=cfg.mel_bands,
                                      floor_db=cfg.mel_floor_db)
  return terms


def total_loss(terms: dict[str, jax.Array], cfg: ml_collections.ConfigDict) -> jax.Array:
  return sum(cfg[f"{name}_weight"] * value for name, value in terms.items())
