"""What the training loop writes for people: TensorBoard scalars, audio and spectrogram images,
`metrics.jsonl`, and a progress bar (process 0 only)."""
from __future__ import annotations

import io
import json
import pathlib
import time

import jax
import numpy as np


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
