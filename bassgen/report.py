"""What `bassgen sample` shows a person: a picture per input and an index.html with players."""
from __future__ import annotations

import html
import os
import pathlib
import urllib.parse
from typing import Sequence

import numpy as np

from bassgen.data.audio import atomic_write_bytes, atomic_write_text


def spectrogram_png(path: str | os.PathLike, mix: np.ndarray, bass: np.ndarray, sample_rate: int,
                    f0_times: np.ndarray | None = None, f0_hz: np.ndarray | None = None, *,
                    title: str = "", overwrite: bool = False) -> pathlib.Path:
  """The mix's spectrogram above the generated bass's (low frequencies) with its pitch contour."""
  import io  # pylint: disable=g-import-not-at-top

  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
  nfft = 2048 if sample_rate > 24000 else 1024
  _db_image(ax1, mix, sample_rate, nfft, nfft // 4)
  ax1.set_ylim(0, min(8000, sample_rate / 2))
  ax1.set_ylabel("mix (Hz)")
  ax1.set_title(title, fontsize=9)
  _db_image(ax2, bass, sample_rate, 4 * nfft, nfft // 4)
  ax2.set_ylim(0, 500)
  ax2.set_ylabel("generated bass (Hz)")
  ax2.set_xlabel("time (s)")
  if f0_times is not None and f0_hz is not None:
    ax2.plot(f0_times, f0_hz, color="cyan", linewidth=1.2, label="pitch")
    ax2.legend(loc="upper right", fontsize=7)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=90)
  plt.close(fig)
  return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)


def _db_image(ax, wav: np.ndarray, sample_rate: int, nfft: int, hop: int,
              range_db: float = 90.0) -> None:
  """A log-power spectrogram whose colour range follows the signal's own peak."""
  import scipy.signal  # pylint: disable=g-import-not-at-top

  nfft = min(nfft, max(16, len(wav)))
  f, t, p = scipy.signal.spectrogram(wav, fs=sample_rate, nperseg=nfft,
                                     noverlap=max(0, nfft - hop), mode="psd")
  db = 10.0 * np.log10(p + 1e-20)
  top = float(db.max())
  ax.pcolormesh(t, f, db, shading="auto", cmap="magma", vmin=top - range_db, vmax=top)


def index_html(path: str | os.PathLike, items: Sequence[dict], *, settings: str,
               overwrite: bool = True) -> pathlib.Path:
  """One section per input: players for mix, bass(es) and mix with bass, and the picture.

  Each item: {'name', 'mix', 'basses': [...], 'with_bass': [...], 'png', 'midi'} with file names
  relative to the page's folder. Links are URL-encoded, so names with '#', '?', '%', spaces or
  non-ASCII letters resolve to the files.
  """
  def url(name: str) -> str:
    return html.escape(urllib.parse.quote(name))

  rows = []
  for it in items:
    players = [("mix", it["mix"])]
    for i, (b, wb) in enumerate(zip(it["basses"], it["with_bass"])):
      suffix = f" #{i + 1}" if len(it["basses"]) > 1 else ""
      players += [(f"bass{suffix}", b), (f"mix + bass{suffix}", wb)]
    audio_rows = "\n".join(
        f'<div class="p"><span>{html.escape(label)}</span><audio controls preload="metadata" '
        f'src="{url(src)}"></audio></div>' for label, src in players)
    midi = "".join(f' <a href="{url(m)}">{html.escape(m)}</a>' for m in it["midi"])
    rows.append(f"""<section><h2>{html.escape(it['name'])}</h2>
{audio_rows}
<p>MIDI:{midi}</p>
<img src="{url(it['png'])}" alt="spectrograms of {html.escape(it['name'])}"></section>""")
  page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bassgen samples</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}
.p{{display:flex;align-items:center;gap:1em;margin:.3em 0}}.p span{{width:9em}}
img{{max-width:100%;border:1px solid #ccc}}section{{margin-bottom:2.5em}}</style></head>
<body><h1>bassgen samples</h1><p>{html.escape(settings)}</p>
{''.join(rows)}
<script>
// Marks each player loaded or failed (data-state), and says so next to a player that failed.
for (const a of document.querySelectorAll("audio")) {{
  a.addEventListener("loadedmetadata", () => {{ a.dataset.state = "loaded"; }});
  a.addEventListener("error", () => {{
    a.dataset.state = "error";
    a.insertAdjacentText("afterend", " could not load " + a.getAttribute("src"));
  }});
  if (a.readyState >= 1) a.dataset.state = "loaded";
}}
</script>
</body></html>
"""
  return atomic_write_text(path, page, overwrite=overwrite)
