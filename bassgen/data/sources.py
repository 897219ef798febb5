"""Dataset layouts: find the tracks of a multitrack dataset and the files of each stem.

A scan only looks at folder names and metadata files; it reads no audio. Audio problems (unreadable
files, mismatched stems) are found by `bassgen.data.prepare`. Tracks the scan can already reject
(no target stem, unreadable metadata) come back as `Skipped` entries so they are counted and listed.

Layouts:
  musdb     `ROOT/{train,test}/<track>/{bass,drums,vocals,other}.wav` (MUSDB18-HQ;
            `mixture.wav` ignored).
  slakh     `ROOT/<track>/metadata.yaml` + `ROOT/<track>/stems/Sxx.flac` (Slakh2100); the target
            is the sum of every stem whose `inst_class` is the target class (`Bass`); tracks
            without one are skipped.
  moisesdb  `ROOT/<track>/data.json` + `ROOT/<track>/<stem>/*.wav` (MoisesDB); the files of a stem
            folder are summed; the target is the stem folder named like the target (`bass`).
  folder    `ROOT/<track>/<stem>.<ext>`: every audio file is a stem, files matching `exclude_glob`
            are ignored, files matching `target_glob` are summed into the target.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import pathlib

from bassgen.data.audio import AUDIO_EXTENSIONS
from bassgen.errors import BassgenError

LAYOUTS = ("musdb", "slakh", "moisesdb", "folder")
MUSDB_SUBSETS = ("train", "test")
_MUSDB_IGNORED = ("mixture",)


@dataclasses.dataclass(frozen=True)
class Track:
  """One multitrack song: the files summed into the target and the other stems.

  Attributes:
    name: unique name within one scan (the track folder's name).
    target: files summed into the target stem (at least one).
    stems: the non-target stems as (stem name, files summed into that stem), sorted by name.
  """
  name: str
  target: tuple[pathlib.Path, ...]
  stems: tuple[tuple[str, tuple[pathlib.Path, ...]], ...]

  @property
  def files(self) -> tuple[pathlib.Path, ...]:
    """Every audio file of the track, target first."""
    return self.target + tuple(f for _, fs in self.stems for f in fs)


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A track (or file) left out, with the reason shown to the user."""
  track: str
  path: str
  reason: str

  def to_json(self) -> dict[str, str]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ScanResult:
  tracks: list[Track]
  skipped: list[Skipped]


def scan(layout: str, root: str | os.PathLike, *, target: str = "bass", subset: str = "train",
         target_glob: str | None = None, exclude_glob: str | None = "mix.*") -> ScanResult:
  """Finds the tracks of `root` in the given layout.

  Args:
    layout: one of LAYOUTS.
    root: the dataset folder (for musdb the folder holding `train/` and `test/`).
    target: the stem to learn: a file/folder name for musdb and moisesdb, an `inst_class` for slakh.
    subset: musdb only, `train` or `test`.
    target_glob: folder layout only; file-name pattern of the target (default f"{target}.*").
    exclude_glob: folder layout only; file-name pattern of files that are not stems (None: none).

  Returns:
    The tracks, sorted by name, and the tracks rejected from their metadata alone.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise BassgenError(f"{root}: not a folder. Give --root the folder that holds the dataset.")
  if layout == "musdb":
    return _scan_musdb(root, target, subset)
  if layout == "slakh":
    return _scan_slakh(root, target)
  if layout == "moisesdb":
    return _scan_moisesdb(root, target)
  if layout == "folder":
    return _scan_folder(root, target_glob or f"{target}.*", exclude_glob)
  raise BassgenError(f"unknown layout {layout!r}. Use --layout {'|'.join(LAYOUTS)}.")


def _audio_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                and p.suffix.lower() in AUDIO_EXTENSIONS)


def _subfolders(root: pathlib.Path, what: str) -> list[pathlib.Path]:
  folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
  if not folders:
    raise BassgenError(f"{root}: no track folders found. {what}")
  return folders


def _matches(name: str, pattern: str | None) -> bool:
  return pattern is not None and fnmatch.fnmatchcase(name.lower(), pattern.lower())


def _group_by_stem(files: list[pathlib.Path]) -> tuple[tuple[str, tuple[pathlib.Path, ...]], ...]:
  """One stem per file name (without extension); two files with the same stem name are summed."""
  groups: dict[str, list[pathlib.Path]] = {}
  for f in files:
    groups.setdefault(f.stem, []).append(f)
  return tuple((name, tuple(fs)) for name, fs in sorted(groups.items()))


def _no_target(track_dir: pathlib.Path, what: str) -> Skipped:
  return Skipped(track_dir.name, str(track_dir), f"no target stem: {what}")


def _add_track(d: pathlib.Path, target: tuple[pathlib.Path, ...],
               others: tuple[tuple[str, tuple[pathlib.Path, ...]], ...],
               tracks: list[Track], skipped: list[Skipped]) -> None:
  if not others:
    skipped.append(Skipped(d.name, str(d), "no stems besides the target, so no mix can be built"))
  else:
    tracks.append(Track(d.name, target, others))


def _scan_musdb(root: pathlib.Path, target: str, subset: str) -> ScanResult:
  if subset not in MUSDB_SUBSETS:
    raise BassgenError(f"unknown MUSDB subset {subset!r}. Use --subset train or --subset test.")
  base = root / subset
  if not base.is_dir():
    raise BassgenError(f"{base}: missing. --root must be the MUSDB18-HQ folder that holds "
                       "train/ and test/.")
  tracks, skipped = [], []
  for d in _subfolders(base, "Expected MUSDB18-HQ track folders with bass/drums/vocals/other.wav."):
    files = [f for f in _audio_files(d) if f.stem.lower() not in _MUSDB_IGNORED]
    tgt = [f for f in files if f.stem.lower() == target.lower()]
    if not tgt:
      skipped.append(_no_target(d, f"no {target}.wav"))
      continue
    _add_track(d, tuple(tgt), _group_by_stem([f for f in files if f not in tgt]), tracks, skipped)
  return ScanResult(tracks, skipped)


def _scan_slakh(root: pathlib.Path, target: str) -> ScanResult:
  import yaml  # pylint: disable=g-import-not-at-top

  tracks, skipped = [], []
  for d in _subfolders(root, "Expected Slakh2100 track folders with metadata.yaml and stems/."):
    meta_path = d / "metadata.yaml"
    try:
      meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
      stems_meta = meta["stems"]
      if not isinstance(stems_meta, dict):
        raise TypeError("'stems' is not a mapping")
    except FileNotFoundError:
      skipped.append(Skipped(d.name, str(meta_path), "missing metadata.yaml"))
      continue
    except Exception as e:  # yaml, key and type errors all mean: unusable metadata
      skipped.append(Skipped(d.name, str(meta_path), f"unreadable metadata.yaml ({e})"[:300]))
      continue
    stem_dir = d / str(meta.get("audio_dir") or "stems")
    available = {f.stem: f for f in _audio_files(stem_dir)} if stem_dir.is_dir() else {}
    tgt, others, missing = [], [], []
    for stem_id, info in sorted(stems_meta.items()):
      info = info if isinstance(info, dict) else {}
      stem_id = str(stem_id)
      f = available.get(stem_id)
      if f is None:
        if info.get("audio_rendered", True):
          missing.append(stem_id)
        continue
      if str(info.get("inst_class", "")).lower() == target.lower():
        tgt.append(f)
      else:
        others.append((stem_id, (f,)))
    if missing:
      skipped.append(Skipped(d.name, str(stem_dir),
                             f"metadata.yaml lists rendered stems {', '.join(missing)} but their "
                             "audio files are missing"))
    elif not tgt:
      skipped.append(_no_target(d, f"no stem with inst_class {target!r} in metadata.yaml"))
    else:
      _add_track(d, tuple(tgt), tuple(others), tracks, skipped)
  return ScanResult(tracks, skipped)


def _scan_moisesdb(root: pathlib.Path, target: str) -> ScanResult:
  tracks, skipped = [], []
  for d in _subfolders(root, "Expected MoisesDB track folders with data.json and stem folders."):
    meta_path = d / "data.json"
    try:
      json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
      skipped.append(Skipped(d.name, str(meta_path), "missing data.json"))
      continue
    except (ValueError, UnicodeDecodeError) as e:
      skipped.append(Skipped(d.name, str(meta_path), f"unreadable data.json ({e})"[:300]))
      continue
    stems = []
    for stem_dir in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
      files = _audio_files(stem_dir)
      if files:
        stems.append((stem_dir.name, tuple(files)))
    tgt = [fs for name, fs in stems if name.lower() == target.lower()]
    if not tgt:
      skipped.append(_no_target(d, f"no {target}/ stem folder with audio"))
      continue
    others = tuple((n, fs) for n, fs in stems if n.lower() != target.lower())
    _add_track(d, tgt[0], others, tracks, skipped)
  return ScanResult(tracks, skipped)


def _scan_folder(root: pathlib.Path, target_glob: str, exclude_glob: str | None) -> ScanResult:
  tracks, skipped = [], []
  for d in _subfolders(root, "Expected one folder per track with one audio file per stem."):
    files = [f for f in _audio_files(d) if not _matches(f.name, exclude_glob)]
    tgt = [f for f in files if _matches(f.name, target_glob)]
    if not tgt:
      skipped.append(_no_target(d, f"no file matches {target_glob!r}"))
      continue
    _add_track(d, tuple(tgt), _group_by_stem([f for f in files if f not in tgt]), tracks, skipped)
  return ScanResult(tracks, skipped)
