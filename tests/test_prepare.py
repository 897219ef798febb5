"""`bassgen prepare`: bad files are skipped and listed, runs resume, nothing is half-written."""
import argparse
import json

import numpy as np
import pytest

from bassgen.data import prepare
from bassgen.data import records
from bassgen.errors import BassgenError
from test_sources import SR, prepared_audio, assert_audio_close, tone, write_folder_tree, write_wav


def _run(root, out, **kw):
  kw.setdefault("sample_rate", SR)
  kw.setdefault("workers", 1)
  logs = []
  index = prepare.prepare("folder", root, out, log=logs.append, **kw)
  return index, "\n".join(logs)


def _good_tree(root, n=2):
  return write_folder_tree(root, tuple(("drums", "keys") for _ in range(n)))


def _assert_only_good_tracks(index, out, truth):
  assert sorted(t["name"] for t in index["tracks"]) == sorted(truth)
  for name, audio in truth.items():
    got = prepared_audio(out, index, name)
    assert_audio_close(got["bass"], audio["bass"])


def _break(root, kind):
  """Writes a track named `bad_<kind>` whose files have one defect."""
  d = root / f"bad_{kind}"
  write_wav(d / "bass.wav", tone(1))
  write_wav(d / "drums.wav", tone(2))
  if kind == "truncated":
    data = (d / "drums.wav").read_bytes()
    (d / "drums.wav").write_bytes(data[: len(data) // 2])
  elif kind == "empty":
    (d / "drums.wav").write_bytes(b"")
  elif kind == "not_audio":
    (d / "drums.wav").write_text("this is a text file, not audio\n" * 20)
  elif kind == "header_only":
    (d / "drums.wav").write_bytes((d / "drums.wav").read_bytes()[:30])
  elif kind == "lengths":
    write_wav(d / "drums.wav", tone(2, seconds=0.75))
  elif kind == "rates":
    write_wav(d / "drums.wav", tone(2, sr=2 * SR), sr=2 * SR)  # same duration, other native rate
  elif kind == "no_target":
    (d / "bass.wav").unlink()
  elif kind == "truncated_flac":
    (d / "drums.wav").unlink()
    write_wav(d / "drums.flac", tone(2, seconds=2.0))
    write_wav(d / "bass.wav", tone(1, seconds=2.0))
    data = (d / "drums.flac").read_bytes()
    (d / "drums.flac").write_bytes(data[: len(data) // 2])
  else:
    raise ValueError(kind)
  return d


BAD_CASES = {
    "truncated": "truncated",
    "truncated_flac": "not a readable audio file",
    "empty": "empty",
    "not_audio": "not a readable audio file",
    "header_only": "not a readable audio file",
    "lengths": "different lengths",
    "rates": "different sample rates",
    "no_target": "no target stem",
}


@pytest.mark.parametrize("kind", sorted(BAD_CASES))
def test_bad_file_is_skipped_counted_and_listed(tmp_path, kind):
  truth = _good_tree(tmp_path / "root")
  bad = _break(tmp_path / "root", kind)
  index, log = _run(tmp_path / "root", tmp_path / "out")
  _assert_only_good_tracks(index, tmp_path / "out", truth)
  (skip,) = index["skipped"]
  assert skip["track"] == bad.name and BAD_CASES[kind] in skip["reason"]
  assert index["summary"]["skipped"] == 1
  on_disk = json.loads((tmp_path / "out" / "index.json").read_text())
  assert on_disk["skipped"] == index["skipped"]
  # Warned while running, and listed again in the final summary.
  assert "WARNING" in log and log.count(bad.name) >= 2
  assert log.splitlines()[-1].startswith(f"  skipped '{bad.name}'")
  assert not list((tmp_path / "out" / "tracks").glob(f"{bad.name}*"))


def test_every_bad_case_together_never_stops_the_run(tmp_path):
  truth = _good_tree(tmp_path / "root", n=3)
  for kind in BAD_CASES:
    _break(tmp_path / "root", kind)
  index, log = _run(tmp_path / "root", tmp_path / "out")
  _assert_only_good_tracks(index, tmp_path / "out", truth)
  assert sorted(s["track"] for s in index["skipped"]) == sorted(f"bad_{k}" for k in BAD_CASES)
  assert f"3 new, 0 resumed, {len(BAD_CASES)} skipped" in log


def test_index_lists_tracks_stems_durations_rate_and_segments(tmp_path):
  write_folder_tree(tmp_path / "root", (("drums", "keys"),), seconds=1.3)
  index, _ = _run(tmp_path / "root", tmp_path / "out", sample_rate=4000, segment_seconds=0.5,
                  split="test")
  assert index["sample_rate"] == 4000 and index["split"] == "test" and index["target"] == "bass"
  assert index["segment_samples"] == 2000
  (entry,) = index["tracks"]
  assert entry["stems"] == ["bass", "drums", "keys"]
  assert entry["num_samples"] == 5200 and entry["duration_s"] == pytest.approx(1.3)
  assert entry["num_segments"] == 3
  segs = records.read_track(tmp_path / "out" / entry["file"])
  assert [s.shape for s in segs] == [(3, 2000), (3, 2000), (3, 1200)]
  # Resampled once with soxr: a 8 kHz sine at 4 kHz keeps its level.
  rms = lambda x: np.sqrt(np.mean(np.square(x)))
  assert rms(np.concatenate(segs, 1)[0]) == pytest.approx(rms(tone(0, 1.3)), rel=0.05)


def test_rerun_resumes_and_keeps_finished_track_files(tmp_path):
  _good_tree(tmp_path / "root", n=2)
  index, _ = _run(tmp_path / "root", tmp_path / "out")
  files = {t["file"]: (tmp_path / "out" / t["file"]).stat().st_mtime_ns for t in index["tracks"]}
  write_folder_tree(tmp_path / "more", (("drums",),) * 3)
  (tmp_path / "more" / "song02").rename(tmp_path / "root" / "song02")
  index, log = _run(tmp_path / "root", tmp_path / "out")
  assert [t["name"] for t in index["tracks"]] == ["song00", "song01", "song02"]
  assert index["summary"]["already_prepared"] == 2 and index["summary"]["prepared"] == 1
  for f, mtime in files.items():
    assert (tmp_path / "out" / f).stat().st_mtime_ns == mtime  # not rewritten
  assert "1 new, 2 resumed" in log


def test_rerun_with_other_settings_is_refused(tmp_path):
  _good_tree(tmp_path / "root", n=1)
  _run(tmp_path / "root", tmp_path / "out")
  with pytest.raises(BassgenError, match="sample_rate=8000.*new --out"):
    _run(tmp_path / "root", tmp_path / "out", sample_rate=16000)


def test_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path, monkeypatch):
  truth = _good_tree(tmp_path / "root", n=3)
  real = records.encode_segment
  calls = {"n": 0}

  def interrupt_in_second_track(seg):
    calls["n"] += 1
    if calls["n"] == 2:  # the first track has 1 segment: this is inside the second track
      raise KeyboardInterrupt
    return real(seg)

  monkeypatch.setattr(records, "encode_segment", interrupt_in_second_track)
  with pytest.raises(KeyboardInterrupt):
    _run(tmp_path / "root", tmp_path / "out", segment_seconds=1.0)
  tracks_dir = tmp_path / "out" / "tracks"
  assert len(list(tracks_dir.iterdir())) == 1  # finished track only: no temp file, no partial file
  on_disk = json.loads((tmp_path / "out" / "index.json").read_text())
  assert [t["name"] for t in on_disk["tracks"]] == ["song00"]

  monkeypatch.setattr(records, "encode_segment", real)
  index, _ = _run(tmp_path / "root", tmp_path / "out", segment_seconds=1.0)
  assert index["summary"] == {**index["summary"], "prepared": 2, "already_prepared": 1}
  _assert_only_good_tracks(index, tmp_path / "out", truth)


def test_failure_while_writing_skips_the_track_and_removes_its_temp_file(tmp_path, monkeypatch):
  truth = _good_tree(tmp_path / "root", n=2)
  real = records.encode_segment
  calls = {"n": 0}

  def fail_in_second_track(seg):
    calls["n"] += 1
    if calls["n"] == 3:
      raise OSError(28, "No space left on device")
    return real(seg)

  monkeypatch.setattr(records, "encode_segment", fail_in_second_track)
  index, _ = _run(tmp_path / "root", tmp_path / "out", segment_seconds=0.5)
  assert [t["name"] for t in index["tracks"]] == ["song00"]
  assert "No space left" in index["skipped"][0]["reason"]
  assert len(list((tmp_path / "out" / "tracks").iterdir())) == 1
  monkeypatch.setattr(records, "encode_segment", real)
  index, _ = _run(tmp_path / "root", tmp_path / "out", segment_seconds=0.5)
  _assert_only_good_tracks(index, tmp_path / "out", truth)


def test_worker_processes_give_the_same_result(tmp_path):
  truth = _good_tree(tmp_path / "root", n=3)
  _break(tmp_path / "root", "not_audio")
  index, _ = _run(tmp_path / "root", tmp_path / "out", workers=2)
  _assert_only_good_tracks(index, tmp_path / "out", truth)
  assert [s["track"] for s in index["skipped"]] == ["bad_not_audio"]


def test_cli_entry(tmp_path, capsys):
  _good_tree(tmp_path / "root", n=1)
  parser = argparse.ArgumentParser()
  prepare.add_arguments(parser)
  args = parser.parse_args(["--layout", "folder", "--root", str(tmp_path / "root"), "--out",
                            str(tmp_path / "out"), "--sample-rate", "4000", "--workers", "1"])
  assert prepare.run(args) == 0
  assert json.loads((tmp_path / "out" / "index.json").read_text())["sample_rate"] == 4000
  assert "prepared 1 tracks" in capsys.readouterr().err

  (tmp_path / "empty_root" / "t").mkdir(parents=True)
  write_wav(tmp_path / "empty_root" / "t" / "drums.wav", tone(1))
  args = parser.parse_args(["--layout", "folder", "--root", str(tmp_path / "empty_root"), "--out",
                            str(tmp_path / "out2"), "--workers", "1"])
  assert prepare.run(args) == 1
