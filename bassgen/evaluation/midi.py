"""MIDI files of a monophonic bass line: writing generated notes, reading a known bass part."""
from __future__ import annotations

import io
import os
import pathlib
from collections.abc import Iterable

import numpy as np

from bassgen.errors import BassgenError
from bassgen.evaluation.pitch import Note, as_notes


def notes_to_midi(notes: Iterable[Note], path: str | os.PathLike, *, program: int = 33,
                  overwrite: bool = False) -> pathlib.Path:
  """Writes notes as a one-track MIDI file (GM program 33 = Electric Bass (finger)), atomically."""
  import pretty_midi  # pylint: disable=g-import-not-at-top
  from bassgen.data.audio import atomic_write_bytes  # pylint: disable=g-import-not-at-top

  if not 0 <= int(program) <= 127:
    raise BassgenError(f"program={program}: a General MIDI program is 0 to 127 (bass: 32 to 39).")
  pm = pretty_midi.PrettyMIDI()
  inst = pretty_midi.Instrument(program=int(program), name="bass")
  for n in as_notes(notes):
    if n.offset > n.onset:
      inst.notes.append(pretty_midi.Note(velocity=int(np.clip(n.velocity, 1, 127)),
                                         pitch=int(np.clip(n.pitch, 0, 127)),
                                         start=float(n.onset), end=float(n.offset)))
  pm.instruments.append(inst)
  buf = io.BytesIO()
  pm.write(buf)
  return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)


def read_midi_notes(path: str | os.PathLike, *, bass_only: bool = True) -> list[Note]:
  """Notes of a MIDI file: the GM bass programs (32-39) only, or every non-drum part."""
  import pretty_midi  # pylint: disable=g-import-not-at-top

  path = pathlib.Path(path)
  if not path.is_file():
    raise BassgenError(f"{path}: no such MIDI file. Check the path.")
  try:
    pm = pretty_midi.PrettyMIDI(str(path))
  except Exception as e:  # pretty_midi/mido raise many types for bad files
    raise BassgenError(f"{path}: not a readable MIDI file ({type(e).__name__}). "
                       "Give a standard .mid file.") from None
  parts = [i for i in pm.instruments if not i.is_drum and (not bass_only or 32 <= i.program <= 39)]
  if not parts:
    raise BassgenError(f"{path}: no {'bass (GM program 32-39) ' if bass_only else ''}part found. "
                       "Give the bass part's MIDI, or pass bass_only=False.")
  notes = [Note(float(n.start), float(n.end), int(n.pitch), int(n.velocity))
           for i in parts for n in i.notes]
  return sorted(notes, key=lambda n: (n.onset, n.pitch))
