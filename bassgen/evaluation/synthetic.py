"""Constructed signals with known answers: plucked bass notes and chord pads, synthesised in numpy.

The metric tests use them, and they are a quick sanity check for a metric on a new machine:
a bass that plays the chord roots must score high on harmony, one a tritone off must score low.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from bassgen.evaluation.pitch import Note, as_notes, midi_to_hz

_ATTACK_S = 0.005
_RELEASE_S = 0.02


def pluck(pitch: float, duration: float, sample_rate: int, *, harmonics: int = 6,
          rolloff: float = 1.0, decay: float = 3.0, amplitude: float = 0.3,
          phase_seed: int = 0) -> np.ndarray:
  """A plucked-string-like note: `harmonics` partials with amplitude 1/k**rolloff, exp(-decay t).

  A small `rolloff` (e.g. 0.3) sounds bright, a large one (2.0) dull. 5 ms attack and 20 ms release
  ramps avoid clicks. Partials above Nyquist are left out.
  """
  n = max(1, int(round(duration * sample_rate)))
  t = np.arange(n) / sample_rate
  f0 = float(midi_to_hz(pitch))
  phases = np.random.default_rng(phase_seed).uniform(0, 2 * np.pi, harmonics)
  wav = np.zeros(n)
  for k in range(1, harmonics + 1):
    if k * f0 < sample_rate / 2:
      wav += np.sin(2 * np.pi * k * f0 * t + phases[k - 1]) / k ** rolloff
  env = np.exp(-decay * t)
  env *= np.clip(t / _ATTACK_S, 0, 1) * np.clip((duration - t) / _RELEASE_S, 0, 1)
  return amplitude * wav * env / max(1.0, np.abs(wav).max())


def bass_line(notes: Iterable[Note], sample_rate: int, duration: float | None = None,
              **pluck_kw) -> np.ndarray:
  """Renders notes (Notes or song.json dicts) with `pluck`; `duration` defaults to the last end."""
  notes = as_notes(notes)
  total = duration if duration is not None else max((n.offset for n in notes), default=0.0)
  wav = np.zeros(int(round(total * sample_rate)))
  for n in notes:
    start = int(round(n.onset * sample_rate))
    seg = pluck(n.pitch, n.offset - n.onset, sample_rate, **pluck_kw)[:max(0, len(wav) - start)]
    wav[start:start + len(seg)] += seg
  return wav


def chord_pad(chords: Sequence[tuple[float, float, Sequence[int]]], sample_rate: int,
              duration: float | None = None, *, saw: bool = True,
              amplitude: float = 0.15) -> np.ndarray:
  """Sums (start, end, midi pitches) chords as band-limited saw (or sine) tones, slowly decaying."""
  total = duration if duration is not None else max((c[1] for c in chords), default=0.0)
  wav = np.zeros(int(round(total * sample_rate)))
  for start_s, end_s, pitches in chords:
    for p in pitches:
      seg = pluck(p, end_s - start_s, sample_rate, harmonics=8 if saw else 1, rolloff=1.0,
                  decay=0.5, amplitude=amplitude, phase_seed=int(p))
      start = int(round(start_s * sample_rate))
      seg = seg[:max(0, len(wav) - start)]
      wav[start:start + len(seg)] += seg
  return wav


def triad(root_midi: int, minor: bool = False) -> list[int]:
  """Root-position triad as MIDI pitches."""
  return [root_midi, root_midi + (3 if minor else 4), root_midi + 7]
