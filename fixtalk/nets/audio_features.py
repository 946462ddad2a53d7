"""Wav2Lip / EDTalk mel front-end, reproduced in float64 numpy (+ librosa's Slaney filterbank).

For a 16 kHz wave of N samples there are T = floor(N / 640) video frames at 25 fps. The wave is cut
(or zero-padded) to T*640 samples, pre-emphasised (y[n] - 0.97 y[n-1], float64), and turned into a
reflect-padded, centred STFT (n_fft 800, hop 200, periodic Hann 800), |X| -> 80 Slaney mels
(55-7600 Hz) -> 20 log10(max(1e-5, .)) - 20 dB -> clip(8 (S + 100) / 100 - 4, -4, 4).
Video frame i takes the 16 mel frames starting at int(80 (i - 2) / 25) (truncation toward zero,
indices clamped to the valid range), transposed to 80 x 16: a 200 ms window centred on frame i.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..config import AudioConfig, SilenceGate


@lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


@lru_cache(maxsize=8)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (float64), as ``scipy.signal.get_window('hann', n)``."""
    k = np.arange(n, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)


def num_frames(num_samples: int, cfg: AudioConfig) -> int:
    """T = floor(samples / (sample_rate / fps)) video frames."""
    return int(num_samples) // samples_per_frame(cfg)


def samples_per_frame(cfg: AudioConfig) -> int:
    if cfg.sample_rate % cfg.fps:
        raise ValueError(f"sample_rate {cfg.sample_rate} is not a multiple of fps {cfg.fps}")
    return cfg.sample_rate // cfg.fps


def _validate_wave(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"expected a mono 1-D waveform, got shape {wave.shape}")
    if not np.issubdtype(wave.dtype, np.floating):
        raise ValueError(f"expected a float waveform in [-1, 1], got dtype {wave.dtype}")
    if not np.all(np.isfinite(wave)):
        raise ValueError("waveform contains NaN or Inf samples")
    return wave


def crop_wave(wave: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Cut or zero-pad to T * samples_per_frame samples."""
    wave = _validate_wave(wave)
    n = num_frames(len(wave), cfg) * samples_per_frame(cfg)
    if len(wave) >= n:
        return wave[:n]
    return np.concatenate([wave, np.zeros(n - len(wave), dtype=wave.dtype)])


def stft_magnitude(y: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """|STFT| (n_fft/2 + 1, frames) in float64, centred with reflect padding."""
    pad = cfg.n_fft // 2
    if len(y) <= pad:
        raise ValueError(f"waveform too short for the STFT: {len(y)} samples (need > {pad})")
    y = np.pad(y, pad, mode="reflect")
    n_frames = 1 + (len(y) - cfg.n_fft) // cfg.hop_length
    window = _hann(cfg.win_length)
    if cfg.win_length < cfg.n_fft:
        lpad = (cfg.n_fft - cfg.win_length) // 2
        window = np.pad(window, (lpad, cfg.n_fft - cfg.win_length - lpad))
    idx = np.arange(cfg.n_fft)[None, :] + cfg.hop_length * np.arange(n_frames)[:, None]
    frames = y[idx] * window[None, :]
    return np.abs(np.fft.rfft(frames, axis=1)).T


def melspectrogram(wave: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Normalised mel spectrogram (frames, n_mels) in float64 of an already cropped wave."""
    x = np.asarray(wave, dtype=np.float64)
    y = x.copy()
    y[1:] = x[1:] - cfg.preemphasis * x[:-1]
    mag = stft_magnitude(y, cfg)
    mel = np.dot(_mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax), mag)
    min_level = np.exp(cfg.min_level_db / 20 * np.log(10))
    s = 20 * np.log10(np.maximum(min_level, mel)) - cfg.ref_level_db
    m = cfg.max_abs_value
    s = np.clip((2 * m) * ((s - cfg.min_level_db) / (-cfg.min_level_db)) - m, -m, m)
    return s.T


def window_starts(t: int, cfg: AudioConfig, offset_frames: int = -2) -> np.ndarray:
    """Start mel frame per video frame: int(mel_fps * (i + offset) / fps), truncated toward 0."""
    mel_fps = cfg.sample_rate / cfg.hop_length
    return np.array([int(mel_fps * ((i + offset_frames) / float(cfg.fps))) for i in range(t)],
                    dtype=np.int64)


def mel_windows_from_spectrogram(mel: np.ndarray, t: int, cfg: AudioConfig) -> np.ndarray:
    """(T, 1, n_mels, window_frames) float32 windows; indices clamped to [0, frames - 1]."""
    starts = window_starts(t, cfg)
    idx = np.clip(starts[:, None] + np.arange(cfg.window_frames)[None, :], 0, mel.shape[0] - 1)
    win = mel[idx]  # (T, 16, 80)
    return np.ascontiguousarray(win.transpose(0, 2, 1)[:, None].astype(np.float32))


def mel_windows(wave: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """Audio2Lip input for a 16 kHz mono wave: (T, 1, 80, 16) float32, T = floor(N / 640)."""
    cropped = crop_wave(wave, cfg)
    t = num_frames(len(cropped), cfg)
    if t == 0:
        raise ValueError(f"waveform too short: {len(wave)} samples, need at least "
                         f"{samples_per_frame(cfg)} (one video frame at {cfg.fps} fps)")
    return mel_windows_from_spectrogram(melspectrogram(cropped, cfg), t, cfg)


def frame_levels_dbfs(wave: np.ndarray, cfg: AudioConfig) -> np.ndarray:
    """RMS level (dBFS, floored at -120) of each video frame's samples: (T,) for T = floor(N / 640)."""
    cropped = crop_wave(wave, cfg).astype(np.float64)
    spf = samples_per_frame(cfg)
    rms = np.sqrt(np.mean(cropped.reshape(-1, spf) ** 2, axis=1)) if len(cropped) else np.zeros(0)
    return 20 * np.log10(np.maximum(rms, 1e-6))


def speech_gate(wave: np.ndarray, cfg: AudioConfig, gate: SilenceGate) -> np.ndarray:
    """Per-frame weight g_t in [0, 1] of the lip motion (1 = speech, 0 = silence); see
    :class:`fixtalk.config.SilenceGate`."""
    levels = frame_levels_dbfs(wave, cfg)
    if len(levels) == 0:
        return levels
    threshold = max(gate.floor_dbfs, float(np.percentile(levels, 95)) - gate.below_loud_db)
    g = np.clip((levels - threshold) / max(gate.ramp_db, 1e-6), 0.0, 1.0)
    h = max(0, int(gate.hold_frames))
    if h:
        padded = np.pad(g, h, mode="edge")
        g = np.lib.stride_tricks.sliding_window_view(padded, 2 * h + 1).max(axis=1)
    return g
