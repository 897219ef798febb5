"""Evaluation metrics, one module per family; each is a plain function on waveforms (and notes).

- reconstruction: multi-resolution STFT distance, log-mel L1 (dB), SI-SDR.
- pitch: bass f0 tracking (pyin, or swift-f0 with the `eval` extra), notes, MIDI in and out.
- harmony: chord-tone share against the mix's chroma; pitch-class accuracy against a known bass.
- rhythm: onset F-measure (+-50 ms) against the mix's onsets/beats and against a known bass.
- timbre: Fréchet distance between MFCC distributions.
- distribution: Fréchet distance between sets with a pluggable embedding.
- suite: `bass_metrics`, all per-song bass metrics at once.
- synthetic: constructed test signals with known answers.
Modules import numpy only at the top; librosa and mir_eval load on first use.
"""
