"""librosa's numba-compiled functions: cached in a folder of bassgen's own and compiled once.

librosa compiles onset peak picking, pYIN/YIN, beat tracking and tuning estimation with numba and
caches the machine code on disk. Two processes compiling the same functions at the same time can
leave an index that points at the other's code, and from then on every call segfaults. So bassgen

- keeps the cache per user: `$NUMBA_CACHE_DIR` when set, else `$XDG_CACHE_HOME/bassgen/numba`
  (`~/.cache/bassgen/numba`), instead of inside site-packages (`configure`, called first thing by
  the CLI and `bassgen.main`);
- compiles every librosa function it uses once, in a child process, under a file lock, before the
  first use; a stamp file (per librosa, numba and Python version) lets later processes skip it
  (`warm_up`, called by the evaluation functions that reach numba code).

A cache that is already corrupt (the warm-up crashes) is deleted and compiled again.
"""
from __future__ import annotations

import logging
import os
import pathlib
import subprocess
import sys

_ENV = "NUMBA_CACHE_DIR"


def cache_dir() -> pathlib.Path:
  """The folder numba caches into for bassgen: $NUMBA_CACHE_DIR, else the per-user default."""
  if os.environ.get(_ENV):
    return pathlib.Path(os.environ[_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "bassgen" / "numba"


def configure() -> pathlib.Path:
  """Points numba at `cache_dir()` unless the user chose a folder; returns the folder.

  Takes effect for functions librosa compiles after the call, so call it before librosa is used.
  """
  folder = cache_dir()
  os.environ.setdefault(_ENV, str(folder))
  config = sys.modules.get("numba.core.config")
  if config is not None:   # numba read the environment when it was imported
    config.reload_config()
  return folder


def _stamp_name() -> str:
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  return (f"bassgen-warm-librosa{metadata.version('librosa')}-numba{metadata.version('numba')}"
          f"-py{sys.version_info[0]}{sys.version_info[1]}")


def warm_up() -> None:
  """Compiles (once per cache folder and versions) the numba-backed librosa functions bassgen uses.

  Safe to call from any number of processes at once: the first compiles while the others wait on
  the lock, then find the stamp. Costs one `stat` once the cache is warm.
  """
  folder = configure()
  stamp = folder / _stamp_name()
  if stamp.exists():
    return
  try:
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".bassgen-warm-up.lock", "a")  # pylint: disable=consider-using-with
  except OSError as e:   # an unwritable cache folder: numba then compiles without caching
    logging.getLogger(__name__).warning("numba cache %s is not writable (%s)", folder, e.strerror)
    return
  import fcntl  # pylint: disable=g-import-not-at-top

  with lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if stamp.exists():
      return
    logging.getLogger(__name__).info("compiling librosa's numba functions once into %s", folder)
    if _run_compile(folder) != 0:   # a cache corrupted earlier (e.g. by another program): rebuild
      _clear(folder)
      if _run_compile(folder) != 0:
        logging.getLogger(__name__).warning("could not warm the numba cache in %s", folder)
        return
    stamp.write_text("librosa's numba functions used by bassgen are compiled here\n")


def _run_compile(folder: pathlib.Path) -> int:
  """Compiles in a fresh process, so that every function is cached in `folder`."""
  env = dict(os.environ, **{_ENV: str(folder)})
  return subprocess.run([sys.executable, "-c", "from bassgen import numba_cache; numba_cache.compile_all()"],
                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        check=False).returncode


def _clear(folder: pathlib.Path) -> None:
  for p in folder.rglob("*"):
    if p.suffix in (".nbi", ".nbc") and p.is_file():
      p.unlink()


def compile_all() -> None:
  """Calls each numba-backed librosa path bassgen uses, on float32 and float64 input (~30 s cold).

  The calls follow bassgen's: onset strength and peak picking, onset backtracking, beat tracking,
  pYIN and YIN, chroma CQT with tuning estimation, RMS and mel spectrograms.
  """
  import warnings  # pylint: disable=g-import-not-at-top

  import librosa  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  sr = 16000
  rng = np.random.default_rng(0)
  t = np.arange(2 * sr) / sr
  base = 0.3 * np.sin(2 * np.pi * 110 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.01 * rng.standard_normal(t.size)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for dt in (np.float32, np.float64):
      y = base.astype(dt)
      env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=128)
      frames = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=128, units="frames")
      librosa.onset.onset_backtrack(frames, env)
      librosa.onset.onset_detect(y=y, sr=sr, units="time", backtrack=True)
      librosa.beat.beat_track(y=y, sr=sr, hop_length=128, units="time")
      librosa.pyin(y, fmin=30, fmax=400, sr=sr, frame_length=2048, hop_length=256, resolution=0.2)
      librosa.yin(y, fmin=30, fmax=400, sr=sr, frame_length=2048, hop_length=256)
      librosa.yin(y, fmin=40, fmax=400, sr=sr)
      librosa.estimate_tuning(y=y, sr=sr)
      librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=512, fmin=32.7, n_octaves=6, norm=None)
      librosa.feature.rms(y=y, frame_length=1024, hop_length=256)
      librosa.feature.melspectrogram(y=y, sr=sr, n_fft=1024, hop_length=256)
      librosa.zero_crossings(y)
