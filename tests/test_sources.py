"""Dataset layouts: each test writes a small fixture tree in the exact layout, scans, prepares it.

The fixture writers here are also used by test_prepare, test_pipeline and test_tfds_builder.
"""
import json
import pathlib
import zlib

import numpy as np
import pytest
import soundfile as sf
import yaml

from bassgen.data import prepare
from bassgen.data import records
from bassgen.data import sources
from bassgen.errors import BassgenError

SR = 8000


def tone(seed: int, seconds: float = 1.0, sr: int = SR, channels: int = 1,
         amp: float = 0.3) -> np.ndarray:
  """A distinct, deterministic test signal (sine + noise): [S] or [S, C]."""
  rng = np.random.default_rng(seed)
  n = int(round(seconds * sr))
  t = np.arange(n) / sr
  sig = amp * np.sin(2 * np.pi * (60 + 37 * (seed % 50)) * t) + 0.05 * rng.standard_normal(n)
  sig = sig.astype(np.float32)
  return sig if channels == 1 else np.stack([sig, 0.5 * sig], axis=1)


def write_wav(path: pathlib.Path, wav: np.ndarray, sr: int = SR) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(path, wav, sr, subtype="FLOAT" if path.suffix == ".wav" else "PCM_24")
  return path


def write_folder_tree(root: pathlib.Path, stems_per_track=(("drums", "keys"),), seconds=1.0,
                      sr: int = SR) -> dict[str, dict[str, np.ndarray]]:
  """The project's renderer layout: <track>/{bass,<stems>,mix}.wav + song.mid + song.json.

  Returns {track: {stem: audio}} (the bass under 'bass').
  """
  truth = {}
  for i, stems in enumerate(stems_per_track):
    d = root / f"song{i:02d}"
    names = ("bass",) + tuple(stems)
    audio = {name: tone(100 * i + j, seconds, sr) for j, name in enumerate(names)}
    for name, wav in audio.items():
      write_wav(d / f"{name}.wav", wav, sr)
    write_wav(d / "mix.wav", sum(audio.values()), sr)
    (d / "song.mid").write_bytes(b"MThd")
    (d / "song.json").write_text("{}")
    truth[d.name] = audio
  return truth


def write_musdb_tree(root: pathlib.Path, n_train=2, n_test=1, seconds=1.0):
  truth = {}
  for subset, n in (("train", n_train), ("test", n_test)):
    for i in range(n):
      d = root / subset / f"Artist - Song {subset} {i}"
      audio = {s: tone(10 * i + j + (500 if subset == "test" else 0), seconds, channels=2)
               for j, s in enumerate(("bass", "drums", "vocals", "other"))}
      for s, wav in audio.items():
        write_wav(d / f"{s}.wav", wav)
      write_wav(d / "mixture.wav", sum(audio.values()))
      truth[(subset, d.name)] = audio
  return truth


def write_slakh_tree(root: pathlib.Path, seconds=1.0):
  """Track00001: two Bass stems (summed), piano, and an unrendered stem; Track00002: no bass."""
  classes = {"Track00001": {"S00": "Bass", "S01": "Piano", "S02": "Bass", "S03": "Drums"},
             "Track00002": {"S00": "Piano", "S01": "Guitar"}}
  truth = {}
  for name, stems in classes.items():
    d = root / name
    meta = {"UUID": name, "audio_dir": "stems", "stems": {}}
    audio = {}
    for j, (sid, cls) in enumerate(stems.items()):
      rendered = not (name == "Track00001" and sid == "S03")
      meta["stems"][sid] = {"inst_class": cls, "audio_rendered": rendered, "program_num": j}
      if rendered:
        audio[sid] = tone(zlib.crc32((name + sid).encode()) % 1000, seconds)
        write_wav(d / "stems" / f"{sid}.flac", audio[sid])
    (d / "metadata.yaml").write_text(yaml.safe_dump(meta))
    truth[name] = audio
  return truth


def write_moisesdb_tree(root: pathlib.Path, seconds=1.0):
  """Track aaa: bass (two files, summed), drums, guitar; track bbb: no bass folder."""
  truth = {}
  for name, stems in {"aaa-111": {"bass": 2, "drums": 1, "guitar": 1},
                      "bbb-222": {"drums": 1, "vocals": 1}}.items():
    d = root / name
    audio = {}
    for j, (stem, n_files) in enumerate(stems.items()):
      audio[stem] = [tone(7 * j + k + len(name), seconds, channels=2) for k in range(n_files)]
      for k, wav in enumerate(audio[stem]):
        write_wav(d / stem / f"{k:04d}-{stem}.wav", wav)
    (d / "data.json").write_text(json.dumps({"song": name, "artist": "x", "stems": []}))
    truth[name] = audio
  return truth


def mono(wav: np.ndarray) -> np.ndarray:
  return wav if wav.ndim == 1 else wav.mean(axis=1)


def prepared_audio(out: pathlib.Path, index: dict, name: str) -> dict[str, np.ndarray]:
  """{stem: audio} of one prepared track, stitched from its segments."""
  entry = next(t for t in index["tracks"] if t["name"] == name)
  segs = records.read_track(out / entry["file"])
  full = np.concatenate(segs, axis=1)
  assert full.shape[1] == entry["num_samples"]
  return dict(zip(entry["stems"], full))


def assert_audio_close(got, want):
  np.testing.assert_allclose(got, want, atol=2e-4 * max(1.0, np.abs(want).max()))


def test_folder_layout_target_glob_exclude_and_prepare(tmp_path):
  truth = write_folder_tree(tmp_path / "root", (("drums", "keys"), ("guitar",)))
  scanned = sources.scan("folder", tmp_path / "root")
  assert [t.name for t in scanned.tracks] == ["song00", "song01"]
  t0 = scanned.tracks[0]
  assert [f.name for f in t0.target] == ["bass.wav"]
  assert [name for name, _ in t0.stems] == ["drums", "keys"]  # mix.wav excluded, .mid/.json ignored

  index = prepare.prepare("folder", tmp_path / "root", tmp_path / "out", sample_rate=SR, workers=1)
  assert index["num_tracks"] == 2 and not index["skipped"]
  got = prepared_audio(tmp_path / "out", index, "song01")
  assert list(got) == ["bass", "guitar"]
  for stem, wav in truth["song01"].items():
    assert_audio_close(got[stem], wav)


def test_folder_layout_sums_every_file_matching_the_target_glob(tmp_path):
  d = tmp_path / "root" / "t"
  for name, seed in (("bass_di", 1), ("bass_amp", 2), ("mix", 3), ("drums", 4)):
    write_wav(d / f"{name}.wav", tone(seed))
  scanned = sources.scan("folder", tmp_path / "root", target_glob="bass*", exclude_glob=None)
  (track,) = scanned.tracks
  assert sorted(f.name for f in track.target) == ["bass_amp.wav", "bass_di.wav"]
  assert [n for n, _ in track.stems] == ["drums", "mix"]  # exclude disabled: mix is a stem
  index = prepare.prepare("folder", tmp_path / "root", tmp_path / "out", sample_rate=SR,
                          target_glob="bass*", workers=1)
  got = prepared_audio(tmp_path / "out", index, "t")
  assert_audio_close(got["bass"], tone(1) + tone(2))


def test_folder_layout_track_without_target_or_other_stems_is_skipped(tmp_path):
  write_folder_tree(tmp_path / "root", (("drums",),))
  write_wav(tmp_path / "root" / "no_bass" / "drums.wav", tone(5))
  write_wav(tmp_path / "root" / "only_bass" / "bass.wav", tone(6))
  scanned = sources.scan("folder", tmp_path / "root")
  assert [t.name for t in scanned.tracks] == ["song00"]
  reasons = {s.track: s.reason for s in scanned.skipped}
  assert "no target stem" in reasons["no_bass"] and "bass.*" in reasons["no_bass"]
  assert "no stems besides the target" in reasons["only_bass"]


def test_musdb_layout_subsets_and_downmix(tmp_path):
  truth = write_musdb_tree(tmp_path / "musdb")
  train = sources.scan("musdb", tmp_path / "musdb", subset="train")
  test = sources.scan("musdb", tmp_path / "musdb", subset="test")
  assert len(train.tracks) == 2 and len(test.tracks) == 1
  track = train.tracks[0]
  assert [f.name for f in track.target] == ["bass.wav"]
  assert [n for n, _ in track.stems] == ["drums", "other", "vocals"]  # mixture.wav ignored

  index = prepare.prepare("musdb", tmp_path / "musdb", tmp_path / "out", subset="test",
                          sample_rate=SR, workers=1)
  assert index["split"] == "test" and index["num_tracks"] == 1
  name = "Artist - Song test 0"
  got = prepared_audio(tmp_path / "out", index, name)
  for stem, wav in truth[("test", name)].items():
    assert_audio_close(got[stem], mono(wav))  # stereo downmixed to mono


def test_musdb_layout_errors_name_the_folder(tmp_path):
  (tmp_path / "musdb" / "train").mkdir(parents=True)
  with pytest.raises(BassgenError, match="test.*missing"):
    sources.scan("musdb", tmp_path / "musdb", subset="test")
  with pytest.raises(BassgenError, match="no track folders"):
    sources.scan("musdb", tmp_path / "musdb", subset="train")
  with pytest.raises(BassgenError, match="not a folder"):
    sources.scan("musdb", tmp_path / "nowhere")


def test_slakh_layout_sums_bass_stems_and_skips_tracks_without_bass(tmp_path):
  truth = write_slakh_tree(tmp_path / "slakh")
  scanned = sources.scan("slakh", tmp_path / "slakh")
  assert [t.name for t in scanned.tracks] == ["Track00001"]
  assert [s.track for s in scanned.skipped] == ["Track00002"]
  assert "inst_class 'bass'" in scanned.skipped[0].reason
  (track,) = scanned.tracks
  assert [f.name for f in track.target] == ["S00.flac", "S02.flac"]
  assert [n for n, _ in track.stems] == ["S01"]  # S03 is not rendered: ignored, not an error

  index = prepare.prepare("slakh", tmp_path / "slakh", tmp_path / "out", sample_rate=SR, workers=1)
  assert index["num_tracks"] == 1 and [s["track"] for s in index["skipped"]] == ["Track00002"]
  got = prepared_audio(tmp_path / "out", index, "Track00001")
  a = truth["Track00001"]
  assert_audio_close(got["bass"], a["S00"] + a["S02"])
  assert_audio_close(got["S01"], a["S01"])


def test_slakh_missing_rendered_stem_or_bad_metadata_skips_the_track(tmp_path):
  write_slakh_tree(tmp_path / "slakh")
  (tmp_path / "slakh" / "Track00001" / "stems" / "S01.flac").unlink()
  bad = tmp_path / "slakh" / "Track00003"
  bad.mkdir()
  (bad / "metadata.yaml").write_text("stems: [unclosed")
  scanned = sources.scan("slakh", tmp_path / "slakh")
  assert not scanned.tracks
  reasons = {s.track: s.reason for s in scanned.skipped}
  assert "S01" in reasons["Track00001"] and "missing" in reasons["Track00001"]
  assert "unreadable metadata.yaml" in reasons["Track00003"]


def test_moisesdb_layout_sums_files_of_a_stem_folder(tmp_path):
  truth = write_moisesdb_tree(tmp_path / "moises")
  scanned = sources.scan("moisesdb", tmp_path / "moises")
  assert [t.name for t in scanned.tracks] == ["aaa-111"]
  assert [s.track for s in scanned.skipped] == ["bbb-222"]
  (track,) = scanned.tracks
  assert len(track.target) == 2 and [n for n, _ in track.stems] == ["drums", "guitar"]

  index = prepare.prepare("moisesdb", tmp_path / "moises", tmp_path / "out", sample_rate=SR,
                          workers=1)
  got = prepared_audio(tmp_path / "out", index, "aaa-111")
  a = truth["aaa-111"]
  assert_audio_close(got["bass"], mono(a["bass"][0]) + mono(a["bass"][1]))
  assert_audio_close(got["guitar"], mono(a["guitar"][0]))


def test_moisesdb_track_without_data_json_is_skipped(tmp_path):
  write_moisesdb_tree(tmp_path / "moises")
  (tmp_path / "moises" / "aaa-111" / "data.json").unlink()
  scanned = sources.scan("moisesdb", tmp_path / "moises")
  assert not scanned.tracks
  assert {s.track: s.reason for s in scanned.skipped}["aaa-111"] == "missing data.json"


def test_other_target_stem_can_be_learned(tmp_path):
  write_musdb_tree(tmp_path / "musdb", n_train=1, n_test=0)
  (track,) = sources.scan("musdb", tmp_path / "musdb", target="vocals").tracks
  assert [f.name for f in track.target] == ["vocals.wav"]
  assert [n for n, _ in track.stems] == ["bass", "drums", "other"]


def test_unknown_layout_is_a_user_error(tmp_path):
  with pytest.raises(BassgenError, match="--layout"):
    sources.scan("stems", tmp_path)
