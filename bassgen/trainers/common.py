"""Pieces both trainers use: optimizer, EMA, metric logging, progress, config dump, NaN guard,
and the preemption notice (SIGTERM -> checkpoint at the next step boundary, exit 0).

The loops themselves live in `autoencoder.py` and `ldm.py` (forked, not abstracted).
"""
from __future__ import annotations

import io
import json
import logging
import math
import pathlib
import signal
import threading
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from bassgen.errors import BassgenError


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup, cosine decay and global-norm clipping."""
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.lr, warmup_steps=cfg.warmup_steps,
      decay_steps=max(num_steps, cfg.warmup_steps + 1), end_value=cfg.lr * cfg.end_lr_factor)
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
  return tx, schedule


def ema_update(ema: Any, params: Any, decay: float, step: jax.Array) -> Any:
  """EMA with warm-up (decay grows as (1 + t) / (10 + t)), initialised to the parameters."""
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema, params)


def tree_norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree)


def write_config(cfg: ml_collections.ConfigDict, workdir: pathlib.Path) -> None:
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(cfg.to_json_best_effort(indent=2, sort_keys=True))


def check_finite(metrics: dict[str, float], step: int) -> None:
  bad = [k for k, v in metrics.items() if not math.isfinite(v)]
  if bad:
    raise BassgenError(
        f"training diverged at step {step}: {', '.join(sorted(bad))} became NaN/Inf. "
        "Lower --config.optim.lr or --config.optim.clip_norm and resume from the last checkpoint.")


class MetricWriter:
  """TensorBoard (tensorboardX) plus a `metrics.jsonl` for plots; only process 0 writes."""

  def __init__(self, workdir: pathlib.Path):
    self.enabled = jax.process_index() == 0
    if self.enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self.tb = SummaryWriter(str(workdir / "tb"))
      self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")

  def scalars(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    for k, v in metrics.items():
      self.tb.add_scalar(k, v, step)
    self.jsonl.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
    self.jsonl.flush()

  def audio(self, step: int, name: str, wav: np.ndarray, sample_rate: int) -> None:
    if self.enabled:
      self.tb.add_audio(name, np.clip(wav, -1, 1)[:, None], step, sample_rate=sample_rate)

  def spectrogram(self, step: int, name: str, wavs: dict[str, np.ndarray], sample_rate: int) -> None:
    """Side-by-side log spectrograms (e.g. original vs reconstruction) as one image."""
    if not self.enabled:
      return
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
    fig, axes = plt.subplots(len(wavs), 1, figsize=(8, 2.2 * len(wavs)), squeeze=False)
    for ax, (title, wav) in zip(axes[:, 0], wavs.items()):
      ax.specgram(wav + 1e-9, NFFT=512, Fs=sample_rate, noverlap=384, cmap="magma", vmin=-140)
      ax.set_title(title, fontsize=8)
      ax.set_ylabel("Hz", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    from PIL import Image  # pylint: disable=g-import-not-at-top
    img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    self.tb.add_image(name, img, step, dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self.tb.close()
      self.jsonl.close()


class Progress:
  """A tqdm bar with steps/s, ETA and the latest loss (process 0 only)."""

  def __init__(self, start: int, total: int, desc: str):
    self.bar = None
    if jax.process_index() == 0:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True,
                      smoothing=0.05)

  def update(self, n: int = 1, **postfix: float) -> None:
    if self.bar is not None:
      if postfix:
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
      self.bar.update(n)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class Preemption:
  """A preemption notice (SIGTERM by default) turned into a flag read at step boundaries.

      with common.Preemption() as preemption:
        while step < num_steps:
          ...one step...
          if preemption.stop_at(step):
            ...save a checkpoint; return normally (exit status 0)...

  The handler only records the signal; the loop decides when to stop, so a checkpoint is never
  cut in half and the next launch resumes exactly. The previous handlers are restored on exit.
  Handlers can only be installed from the main thread; elsewhere the notice is never seen.

  With several processes (`jax.distributed`), JAX's preemption service owns SIGTERM instead: it
  hears the notice on any process and `stop_at` returns True on every process at the same step,
  so the collective checkpoint is written by all of them. `requested` (the local flag, for work
  between steps such as the latent-cache build) then stays False.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self.received: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> "Preemption":
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for sig in self.signals:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum: int, frame: Any) -> None:
    del frame
    self.received = signum

  @property
  def requested(self) -> bool:
    """Whether this process has received the notice."""
    return self.received is not None

  def stop_at(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step` (called at every step, on every process)."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def log_stop(self, what: str, step: int | None = None) -> None:
    at = f" at step {step}" if step is not None else ""
    name = signal.Signals(self.received).name if self.received else "preemption notice"
    logging.info("%s: stopped%s after %s; run the same command again to resume", what, at, name)
