"""The DPB U-Net: size, any-length inference, relative-only attention, null condition."""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from bassgen.config_loading import load_config
from bassgen.errors import BassgenError
from bassgen.models import layers, unet

LDM_CONFIG = pathlib.Path(__file__).parents[1] / "configs" / "ldm.py"


def _config(variant):
  return load_config(f"{LDM_CONFIG}:{variant}")


def _build(model_cfg, seed=0):
  return unet.UNet1D(unet.UNetConfig.from_config(model_cfg), rngs=nnx.Rngs(seed))


def _randomise(model, seed=1, scale=0.3):
  """Replaces the zero-initialised layers (residual branches, output) so every path is active."""
  params = nnx.state(model, nnx.Param)
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  new = [jnp.where(p == 0, scale * jax.random.normal(k, p.shape), p) if p.ndim > 1 else p
         for p, k in zip(leaves, keys)]
  nnx.update(model, jax.tree.unflatten(treedef, new))
  return model


# One jitted forward pass shared by the tests (same config and shapes: compiled once).
_forward = nnx.jit(lambda model, x, s, c, cm: model(x, s, c, cm))


def _tiny_cfg(position="dpb"):
  cfg = _config("runlocal").model
  cfg.position = position
  return cfg


def _inputs(b, t, cfg, seed=0):
  """(noisy latent, σ, condition, condition mask) for a U-Net of model config `cfg`."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  return (jax.random.normal(k1, (b, t, cfg.latent_channels)), jnp.full((b,), 0.7),
          jax.random.normal(k2, (b, t, unet.cond_channels(cfg))), jnp.ones((b,)))


def test_paper_model_is_in_the_published_size_class():
  def count(variant):
    cfg = _config(variant).model
    return unet.count_params(nnx.eval_shape(lambda: _build(cfg)))

  n = count("paper")
  print(f"paper U-Net: {n / 1e6:.1f} M parameters")
  assert 50e6 <= n <= 150e6
  paper = _config("paper")
  assert paper.model.latent_channels == 64 and paper.train.crop_frames == 256
  assert 1e6 <= count("demo") <= 4e6


def test_runs_at_1x_to_8x_the_training_length_with_finite_output():
  cfg = _tiny_cfg()
  model = _randomise(_build(cfg))
  train_len = 32
  outs = []
  for factor in (1, 2, 4, 8):
    x, s, c, cm = _inputs(2, train_len * factor, cfg, seed=factor)
    y = _forward(model, x, s, c, cm)
    assert y.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(y)))
    outs.append(float(jnp.std(y)))
  # The output keeps its scale at unseen lengths (no blow-up or collapse).
  assert max(outs) / min(outs) < 2.0 and min(outs) > 1e-3


def test_dpb_bias_depends_only_on_distance_and_is_finite_beyond_training_lengths():
  dpb = layers.DynamicPositionBias(num_heads=4, hidden=16, depth=2, rngs=nnx.Rngs(0))
  t = 32
  bias_short = dpb(t)
  bias_long = dpb(8 * t)  # distances up to 255, never seen at length 32
  assert bias_long.shape == (4, 8 * t, 8 * t)
  assert bool(jnp.all(jnp.isfinite(bias_long)))
  # Relative only: the bias of a pair depends on i - j, so the short table is a block of the long.
  np.testing.assert_allclose(bias_long[:, :t, :t], bias_short, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bias_long[:, 100:100 + t, 100:100 + t], bias_short, rtol=1e-5,
                             atol=1e-6)
  # ... and it is a real function of the distance (not constant), different per head.
  assert float(jnp.std(bias_long[0, 0])) > 1e-3
  assert float(jnp.abs(bias_long[0] - bias_long[1]).max()) > 1e-3


def test_attention_is_shift_equivariant_no_absolute_position():
  """Moving the content later in the sequence (with masked frames before it) changes nothing."""
  attn = layers.SelfAttention(16, 2, groups=4, position="dpb", dpb_hidden=16, dpb_depth=1,
                              rngs=nnx.Rngs(0))
  _randomise(attn)
  x = jax.random.normal(jax.random.key(0), (2, 24, 16))
  junk = 5.0 * jax.random.normal(jax.random.key(1), (2, 40, 16))
  mask = jnp.concatenate([jnp.zeros((2, 40)), jnp.ones((2, 24))], axis=1)
  y_plain = attn(x, jnp.ones((2, 24)))
  y_shifted = attn(jnp.concatenate([junk, x], axis=1), mask)[:, 40:]
  np.testing.assert_allclose(y_shifted, y_plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("position", ["dpb", "none"])
def test_no_absolute_position_parameter(position):
  model = _build(_tiny_cfg(position))
  paths = [".".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
  assert all(p.split(".")[-1] in ("kernel", "bias", "scale") for p in paths)
  has_dpb = any("dpb" in p for p in paths)
  assert has_dpb == (position == "dpb")


def test_sinusoidal_ablation_sees_absolute_position():
  """With 'sinusoidal', the same content at another offset gives another output."""
  outs = {}
  for position in ("none", "sinusoidal"):
    cfg = _tiny_cfg(position)
    cfg.attn_levels = ()  # attention only in the middle block
    model = _randomise(_build(cfg))
    x, s, c, cm = _inputs(1, 128, cfg)
    # A periodic input: one period (16 frames) later, the interior looks the same.
    x, c = jnp.tile(x[:, :16], (1, 8, 1)), jnp.tile(c[:, :16], (1, 8, 1))
    y = _forward(model, x, s, c, cm)
    outs[position] = float(jnp.abs(y[:, 48:64] - y[:, 64:80]).max() / jnp.abs(y).max())
  assert outs["sinusoidal"] > 10 * outs["none"]


def test_null_condition_ignores_the_mix():
  cfg = _tiny_cfg()
  model = _randomise(_build(cfg))
  x, s, c, _ = _inputs(2, 32, cfg)
  other = jax.random.normal(jax.random.key(5), c.shape)
  null, present = jnp.zeros((2,)), jnp.ones((2,))
  np.testing.assert_array_equal(_forward(model, x, s, c, null), _forward(model, x, s, other, null))
  diff = _forward(model, x, s, c, present) - _forward(model, x, s, other, present)
  assert float(jnp.abs(diff).max()) > 1e-3


def test_norm_statistics_ignore_padded_frames():
  norm = layers.group_norm(16, 4, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(0), (2, 8, 16))
  pad = 5.0 + 3.0 * jax.random.normal(jax.random.key(1), (2, 8, 16))
  mask = jnp.concatenate([jnp.ones((2, 8)), jnp.zeros((2, 8))], axis=1)
  padded = layers.masked_norm(norm, jnp.concatenate([x, pad], axis=1), mask)
  np.testing.assert_allclose(padded[:, :8], layers.masked_norm(norm, x, None), atol=1e-5)


def test_dropout_is_driven_by_the_given_key_and_off_in_eval_mode():
  cfg = _tiny_cfg()
  cfg.dropout = 0.5
  model = _randomise(_build(cfg))
  x, s, c, cm = _inputs(2, 32, cfg)
  fwd = nnx.jit(lambda m, k: m(x, s, c, cm, dropout_key=k))
  k1, k2 = jax.random.key(1), jax.random.key(2)
  np.testing.assert_array_equal(fwd(model, k1), fwd(model, k1))
  assert float(jnp.abs(fwd(model, k1) - fwd(model, k2)).max()) > 1e-3
  model.eval()
  np.testing.assert_array_equal(fwd(model, k1), fwd(model, k2))


def test_bfloat16_compute_matches_float32():
  cfg = _tiny_cfg()
  model = _randomise(_build(cfg), scale=0.1)
  cfg16 = _tiny_cfg()
  cfg16.dtype = "bfloat16"
  model16 = _build(cfg16)
  nnx.update(model16, nnx.state(model, nnx.Param))
  x, s, c, cm = _inputs(2, 32, cfg)
  y, y16 = _forward(model, x, s, c, cm), _forward(model16, x, s, c, cm)
  assert y16.dtype == jnp.float32
  rel = float(jnp.abs(y16 - y).mean() / jnp.abs(y).mean())
  assert 0.0 < rel < 0.05  # bfloat16 really is used, and close


def test_bad_length_and_bad_position_raise_clear_errors():
  cfg = _tiny_cfg()
  model = _build(cfg)
  x, s, c, cm = _inputs(1, 33, cfg)
  with pytest.raises(BassgenError, match="multiple of 2"):
    model(x, s, c, cm)
  cfg.position = "rope"
  with pytest.raises(BassgenError, match="model.position"):
    _build(cfg)


def test_typed_config_reads_old_exports_and_names_missing_fields():
  """An exported config (JSON: lists, no newer keys) gives the same typed config as the file it
  came from, with the defaults for keys it lacks; a missing required field is a clear error."""
  section = _config("demo").model
  typed = unet.UNetConfig.from_config(section)
  assert typed.channels == (64, 128, 192) and typed.harmony.enabled and typed.mix_chroma
  exported = json.loads(json.dumps(section.to_dict()))     # as in an export's metadata
  assert unet.UNetConfig.from_config(exported) == typed
  for key in ("mix_chroma", "harmony", "dtype", "position", "dpb_depth"):
    del exported[key]                                      # written before these existed
  old = unet.UNetConfig.from_config(exported)
  assert not old.mix_chroma and not old.harmony.enabled and old.dtype == "float32"
  assert unet.cond_channels(old) == typed.latent_channels
  del exported["channels"]
  with pytest.raises(BassgenError, match="model.channels is missing"):
    unet.UNetConfig.from_config(exported)
