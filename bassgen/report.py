"""What `bassgen sample` shows a person: a picture per input and an index.html with players."""
from __future__ import annotations

import html
import os
import pathlib
import urllib.parse
from typing import TYPE_CHECKING, Sequence

import numpy as np

from bassgen.data.audio import atomic_write_bytes, atomic_write_text
from bassgen.notes import Note

if TYPE_CHECKING:
  from bassgen import transcription


WIDTH_PER_S = 60          # picture columns per second of audio, between MIN_ and MAX_WIDTH
MIN_WIDTH, MAX_WIDTH = 480, 1600
MIX_ROWS = 160            # the mix's spectrogram: 40 Hz to 8 kHz on a log axis
MIX_FMIN, MIX_FMAX = 40.0, 8000.0
ROLL_LOW, ROLL_HIGH = 24, 72   # the bass's piano roll: C1 (32.7 Hz) to C5 (523 Hz)
ROLL_PX = 3               # rows per semitone
RANGE_DB = 80.0
BLOCK_FRAMES = 512        # STFT frames of the mix analysed at once


def spectrogram_png(path: str | os.PathLike, mix: np.ndarray, sample_rate: int,
                    track: "transcription.BassTrack", notes: Sequence[Note], *, title: str = "",
                    overwrite: bool = False, block_frames: int = BLOCK_FRAMES) -> pathlib.Path:
  """A picture of one input: the mix's spectrogram (log frequency, its colours following the
  mix's own peak) above the generated bass as a piano roll (its notes, brightness by velocity,
  and its pitch contour in cyan), with faint lines every second (every 10 s past a minute) and at
  every C. Written directly as a PNG (no plotting library); the mix is analysed in blocks of
  `block_frames` STFT frames, so memory holds the picture and one block at any song length, and
  any block size draws the same picture. `title` goes into the PNG's Title text field."""
  rgb = picture(mix, sample_rate, track, notes, block_frames=block_frames)
  return atomic_write_bytes(path, png_bytes(rgb, {"Title": title} if title else None),
                            overwrite=overwrite)


def picture(mix: np.ndarray, sample_rate: int, track: "transcription.BassTrack",
            notes: Sequence[Note], *, block_frames: int = BLOCK_FRAMES) -> np.ndarray:
  """The picture of `spectrogram_png` as RGB [H, W, 3] uint8."""
  duration = max(len(mix) / sample_rate, 1e-3)
  width = int(np.clip(round(duration * WIDTH_PER_S), MIN_WIDTH, MAX_WIDTH))
  top = _mix_panel(mix, sample_rate, width, block_frames)
  roll = _roll_panel(track, notes, width, duration)
  rgb = np.concatenate([top, np.full((2, width, 3), 255, np.uint8), roll])
  step = 1.0 if duration <= 60 else 10.0 if duration <= 600 else 60.0
  cols = (np.arange(step, duration, step) / duration * width).astype(int)
  rgb[:, cols] = (0.75 * rgb[:, cols] + 0.25 * 255).astype(np.uint8)
  return rgb


def _mix_panel(mix: np.ndarray, sr: int, width: int, block_frames: int) -> np.ndarray:
  """Max-pooled log-frequency power spectrogram of the mix, [MIX_ROWS, width, 3]."""
  mix = np.asarray(mix, np.float32)
  nfft = 1 << int(np.ceil(np.log2(0.064 * sr)))     # ~64 ms
  hop = max(nfft // 4, len(mix) // (4 * width))     # at least 4 frames per column
  n = 1 + len(mix) // hop
  window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(nfft) / nfft)).astype(np.float32)
  bands = _band_matrix(sr, nfft)
  image = np.zeros((width, MIX_ROWS))
  padded = np.concatenate([np.zeros(nfft // 2, np.float32), mix,
                           np.zeros(nfft // 2 + hop, np.float32)])
  for a in range(0, n, max(1, int(block_frames))):
    b = min(n, a + max(1, int(block_frames)))
    seg = padded[a * hop: (b - 1) * hop + nfft]
    frames = np.lib.stride_tricks.sliding_window_view(seg, nfft)[::hop][: b - a]
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    cols = (np.arange(a, b) * width) // n
    np.maximum.at(image, cols, power @ bands)
  db = 10.0 * np.log10(image + 1e-20)
  level = np.clip((db - (db.max() - RANGE_DB)) / RANGE_DB, 0.0, 1.0)
  return _colour(level.T[::-1])


def _band_matrix(sr: int, nfft: int) -> np.ndarray:
  """[bins, MIX_ROWS]: each row the mean power of the bins in its log-spaced band (the nearest
  bin for bands narrower than one)."""
  edges = np.geomspace(MIX_FMIN, min(MIX_FMAX, sr / 2), MIX_ROWS + 1)
  freqs = np.arange(nfft // 2 + 1) * sr / nfft
  m = (freqs[:, None] >= edges[None, :-1]) & (freqs[:, None] < edges[None, 1:])
  empty = ~m.any(axis=0)
  centres = np.sqrt(edges[:-1] * edges[1:])
  m[np.abs(freqs[:, None] - centres[None]).argmin(axis=0)[empty], np.flatnonzero(empty)] = True
  return m / m.sum(axis=0, keepdims=True)


def _roll_panel(track: "transcription.BassTrack", notes: Sequence[Note], width: int,
                duration: float) -> np.ndarray:
  """The bass's notes and pitch contour on a piano roll, [rows, width, 3]."""
  rows = (ROLL_HIGH - ROLL_LOW) * ROLL_PX
  img = np.zeros((rows, width, 3), np.uint8)
  img[:] = (16, 16, 24)
  for c in range(ROLL_LOW, ROLL_HIGH, 12):   # a line at every C
    img[rows - 1 - (c - ROLL_LOW) * ROLL_PX] = (48, 48, 64)
  col = lambda t: int(np.clip(t / duration * width, 0, width - 1))
  for n in notes:
    if ROLL_LOW <= n.pitch < ROLL_HIGH:
      r1 = rows - (n.pitch - ROLL_LOW) * ROLL_PX
      shade = 0.35 + 0.65 * np.clip(n.velocity / 127, 0, 1)
      img[r1 - ROLL_PX: r1, col(n.onset): col(n.offset) + 1] = (
          np.array([250, 150, 60]) * shade).astype(np.uint8)
  pitch = track.pitch
  ok = pitch.voiced & (pitch.midi >= ROLL_LOW) & (pitch.midi < ROLL_HIGH)
  r = (rows - 1 - np.round((pitch.midi[ok] - ROLL_LOW) * ROLL_PX - 0.5 + ROLL_PX / 2)).astype(int)
  c = np.clip((pitch.times[ok] / duration * width).astype(int), 0, width - 1)
  img[np.clip(r, 0, rows - 1), c] = (90, 230, 255)
  return img


# Colour map: black, purple, red, orange, pale yellow at 0, 0.25, 0.5, 0.75, 1 (magma-like).
_STOPS = np.array([[0, 0, 4], [80, 18, 123], [183, 55, 121], [252, 137, 97], [252, 253, 191]],
                  np.float64)


def _colour(level: np.ndarray) -> np.ndarray:
  x = level * (len(_STOPS) - 1)
  i = np.minimum(x.astype(int), len(_STOPS) - 2)
  f = (x - i)[..., None]
  return np.round(_STOPS[i] * (1 - f) + _STOPS[i + 1] * f).astype(np.uint8)


def png_bytes(rgb: np.ndarray, text: dict[str, str] | None = None) -> bytes:
  """An 8-bit RGB PNG of [H, W, 3] uint8, with optional text fields (UTF-8 iTXt chunks)."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

  h, w, _ = rgb.shape
  raw = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, 3 * w)], axis=1)
  out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
  for key, value in (text or {}).items():
    out += chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + value.encode("utf-8"))
  return out + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")


def index_html(path: str | os.PathLike, items: Sequence[dict], *, settings: str,
               overwrite: bool = True) -> pathlib.Path:
  """One section per input: players for mix, bass(es) and mix with bass, and the picture.

  Each item: {'name', 'mix', 'basses': [...], 'with_bass': [...], 'png', 'midi'} with file names
  relative to the page's folder, and optionally 'summaries': one line per bass (its notes). Links are URL-encoded, so names with '#', '?', '%', spaces or
  non-ASCII letters resolve to the files.
  """
  def url(name: str) -> str:
    return html.escape(urllib.parse.quote(name))

  rows = []
  for it in items:
    players = [("mix", it["mix"])]
    summaries = it.get("summaries") or [""] * len(it["basses"])
    notes = {}
    for i, (b, wb) in enumerate(zip(it["basses"], it["with_bass"])):
      suffix = f" #{i + 1}" if len(it["basses"]) > 1 else ""
      players += [(f"bass{suffix}", b), (f"mix + bass{suffix}", wb)]
      notes[b] = summaries[i]
    audio_rows = "\n".join(
        f'<div class="p"><span>{html.escape(label)}</span><audio controls preload="metadata" '
        f'src="{url(src)}"></audio>'
        + (f'<small>{html.escape(notes[src])}</small>' if notes.get(src) else "")
        + '</div>' for label, src in players)
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
