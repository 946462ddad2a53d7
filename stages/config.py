"""The pipeline's configuration types: one dataclass per section, with its defaults.

Each stage owns one section and reads it from here, without importing the orchestration; the DAG
reads only ``resources`` from it. Loading from YAML and ``--set section.key=value`` lives in
:mod:`pipeline.config`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fixtalk.config import (PRECISIONS, AdaptConfig, FootageFitConfig, PixelWarp, PoseTrack, ShiftStitching,
                            SilenceGate)


@dataclass
class Resources:
    """Ray resources of one stage's actor pool."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    batch_size: int = 1
    pool_size: int = 1
    max_tasks_in_flight: int | None = None  # per actor; None = Ray's default, 1 for long calls
    memory_gib: float | None = None  # Ray memory reservation per actor (dropped if the cluster has less)


@dataclass
class IngestConfig:
    resources: Resources = field(default_factory=Resources)
    sample_rate: int = 16000
    fps: int = 25
    max_audio_seconds: float = 600.0
    min_audio_seconds: float = 0.2
    silence_dbfs: float | None = -60.0  # audio whose peak is below this is refused; None allows it
    max_image_side: int = 2048  # larger portraits are scaled down (the full-frame output size)
    max_video_side: int = 1280  # driving videos are scaled down to this longer side


@dataclass
class FaceCropConfig:
    resources: Resources = field(default_factory=Resources)
    backend: str = "dlib"  # dlib | face_alignment
    crop_scale: float = 1.6  # crop side = crop_scale * 2.5 * max(eye distance, 0.9 * eye-mouth)
    max_image_side: int = 4096
    center_shift: float = 0.1  # crop centre below the eyes, in eye-to-mouth vectors
    size: int | None = None  # crop side; None: the checkpoint's model size
    detect_max_side: int = 1600  # faces are detected on a copy scaled to this longer side
    min_face_score: float = 0.3  # weaker detections are ignored when counting faces
    minor_face_area: float = 0.25  # smaller faces (share of the largest's area) ...
    minor_face_score: float = 0.8  # ... count only when they score at least this
    rotations: str = "30,-30,60,-60,90,-90,180"  # extra in-plane angles tried when no face is found
    min_face_px: int = 40  # narrower faces (jaw width in the portrait as read) are refused
    upright_roll: float = 4.0  # faces rolled more than this (degrees) get landmarks re-fitted upright
    face_alignment_device: str = "cpu"


@dataclass
class MotionConfig:
    resources: Resources = field(default_factory=Resources)
    lip_smoothing_sigma: float = 1.0  # temporal Gaussian over alpha_lip, in frames (0: none)
    silence_gate: SilenceGate = field(default_factory=SilenceGate)  # mouth at rest in silence
    # a pose video's head shift is taken out before the encoder and put back rigidly on the render
    # (fixtalk.shift_stitching), so the generator never renders a shift as a turn
    shift_stitching: ShiftStitching = field(default_factory=ShiftStitching)
    # what of a pose video's head motion drives the pose bank (fixtalk.pose_track): by default its
    # rigid head motion, smoothed and bounded, read off the portrait turned by it (mode=rigid)
    pose_track: PoseTrack = field(default_factory=PoseTrack)
    emotion_intensity: float = 1.0
    driving_landmark_frames: int = 9  # frames sampled to place the fixed crop of a driving video
    chunk_frames: int = 32  # driving frames per motion-encoder call


@dataclass
class ModelSection:
    """Which network renders, shared by the motion and render stages."""

    checkpoint: str | None = None  # None: the shipped default model (fixtalk/weights/default.pt)
    audio2lip: str | None = None  # EDTalk's Audio2Lip.pt when the checkpoint is an EDTalk one
    emotions_dir: str | None = None  # EDTalk's predefined_exp_weights/*.npy
    device: str = "auto"  # auto | cpu | cuda | cuda:N


RENDER_OUTPUTS = ("crop", "full")
PASTE_REGIONS = ("auto", "face", "mouth")


@dataclass
class RenderConfig:
    """The render stage (stages/render.py). ``precision``: the network's arithmetic, float32
    (default), bfloat16 (autocast on CPU or CUDA) or float16 (autocast, CUDA only); error and
    speed against float32 in docs/performance.md (Rendering)."""

    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, num_gpus=0.0,
                                                                   max_tasks_in_flight=1))
    # frames per network call; None: the device's default (fixtalk.inference.DEFAULT_BATCH:
    # 1 on CPU, where batch 1 is fastest per frame, 8 on CUDA)
    batch_size: int | None = None
    precision: str = "float32"  # float32 | bfloat16 | float16 (CUDA only)
    output: str = "full"  # crop | full (paste back into the portrait)
    paste_region: str = "auto"  # auto | face | mouth (stages/media/paste.py)
    feather: float = 0.12
    # subtract the portrait's self-flow from every flow (fixtalk.nets.decoder.self_flow_offsets):
    # the network moves the face without pulling it toward its training faces' geometry
    relative_flow: bool = True
    # the portrait's own pixels moved by the network's finest flow, where the network only moves
    # them (fixtalk.pixel_warp): sharper than the generator's frame; enabled=false for G alone
    pixel_warp: PixelWarp = field(default_factory=PixelWarp)

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when they are valid), each naming the key."""
        out = []
        if self.output not in RENDER_OUTPUTS:
            out.append(f"render.output={self.output!r}: expected one of {', '.join(RENDER_OUTPUTS)}")
        if self.paste_region not in PASTE_REGIONS:
            out.append(f"render.paste_region={self.paste_region!r}: expected one of {', '.join(PASTE_REGIONS)}")
        if self.precision not in PRECISIONS:
            out.append(f"render.precision={self.precision!r}: expected one of {', '.join(PRECISIONS)} "
                       "(float16 on CUDA only)")
        if self.batch_size is not None and self.batch_size < 1:
            out.append(f"render.batch_size={self.batch_size}: expected >= 1, or none for the device's default")
        return out


@dataclass
class AdaptSection:
    """Portrait adaptation (stages/adapt.py, :mod:`fixtalk.adapt`): the network fine-tuned to each
    presenter's portrait, once per portrait, before motion and render use it. ``enabled``: None
    ("auto", the default) adapts when the shipped default model renders, where it was evaluated:
    the render is 3 dB closer to held-out targets (+0.8 without), the mouth moves 2.5 times as
    much and a pose video moves the head; about 7 minutes per portrait (300 steps) on 2 CPU cores
    (docs/model_card.md). A user's checkpoint (EDTalk's, or one trained on real video) is not
    adapted unless ``enabled=true``: fine-tuning it on synthetic motion is unevaluated.
    ``false`` renders with the checkpoint as it is."""

    resources: Resources = field(default_factory=lambda: Resources(num_cpus=1.0, num_gpus=0.0,
                                                                   max_tasks_in_flight=1, memory_gib=1.5))
    enabled: bool | None = None  # None = auto (``--set adapt.enabled=auto``)
    recipe: AdaptConfig = field(default_factory=AdaptConfig)
    # a presenter with footage (presenter_video, or a dub's source_video) is fitted on that
    # footage instead (fixtalk.footage_fit): real frames of the real face, its own speech
    footage: FootageFitConfig = field(default_factory=FootageFitConfig)


@dataclass
class FaceTrackConfig:
    """Face tracking through footage (stages/face/track.py)."""

    detect_every: int = 5  # full detection on every k-th frame (and after a cut or a lost face)
    detect_max_side: int = 640  # frames are scaled to this longer side for detection
    smoothing_s: float = 0.06  # Gaussian sigma (seconds) of the crop transform over time
    scene_cut: float = 0.30  # mean thumbnail change (0-1) that starts a new shot
    min_face_px: int = 40  # smaller faces pass through undubbed
    max_turn: float = 0.6  # |yaw proxy| (0 frontal, 1 profile) beyond which a frame passes through
    several_faces_share: float = 0.3  # 2+ faces in this share of detections: SeveralFaces
    max_jump: float = 0.25  # landmark jump (of the face's size) that counts as a lost track


DUB_MOUTHS = ("auto", "memory", "model")
MEMORY_RESHAPES = ("warp", "network", "none")


@dataclass
class PresenterMemoryConfig:
    """The presenter memory of a footage (stages/rendering/presenter_memory.py) and its recall
    (stages/rendering/recall.py): the footage's own mouths, indexed once, recalled per output frame.

    "Enough" footage for ``dub.mouth=auto`` is at least ``min_frames`` usable frames, of which at
    least ``min_open_frames`` show an open mouth (inner-lip gap over the eye distance above the
    presenter's resting gap by ``open_margin``): fewer, and the recall would repeat a handful of
    shapes, so the model draws the mouth instead (docs/model_card.md, Dubbing)."""

    min_frames: int = 75  # 3 s at 25 fps
    min_open_frames: int = 25  # 1 s of open mouth
    open_margin: float = 0.08  # of the inter-ocular distance
    min_sharpness: float = 0.35  # frames below this share of the footage's median mouth detail are not recalled
    candidates: int = 48  # memory frames considered per output frame in the path search
    w_shape: float = 3.0  # path cost weights (stages/rendering/recall.py)
    w_pose: float = 0.3
    w_jump: float = 4.0
    w_sharp: float = 1.0
    w_phone: float = 1.0  # prefer memory frames saying the new speech's viseme (footage_phones.py)
    crossfade: int = 2  # output frames over which a jump in the memory is morphed
    pause_s: float = 0.3  # silences at least this long hold a closed mouth
    amplitude: float = 1.3  # target opening stretched about the presenter's median (mouth_targets.py)
    # a recalled mouth is reshaped to its target opening by at most ``warp`` (eye distances):
    # ``warp`` moves its jaw side at full resolution (stages/face/mouth_warp.py); ``network`` adds the
    # generator's change for that opening, rendered on the recalled frame as its source
    # (stages/rendering/dub.py); ``none``: shown as recalled
    reshape: str = "warp"
    warp: float = 0.05
    # without an aligned script, close the lips on the P/B/M that pocketsphinx hears in the new
    # speech (English; stages/transcript/heard_phones.py)
    hear_phones: bool = True


@dataclass
class DubConfig:
    """Dubbing footage (rows with ``source_video``): stages/rendering/dub.py.

    ``mouth``: where the dubbed mouth comes from. ``memory``: the presenter's own footage
    (stages/rendering/memory_dub.py: recalled mouths, real teeth and lips at full resolution);
    ``model``: the network re-renders the lower face; ``auto``: memory when the footage has
    enough usable talking frames (``dub.memory``), else model."""

    extend: str = "pingpong"  # footage shorter than the speech: pingpong | loop | freeze
    mouth: str = "auto"  # auto | memory | model
    memory: PresenterMemoryConfig = field(default_factory=PresenterMemoryConfig)
    track: FaceTrackConfig = field(default_factory=FaceTrackConfig)
    batch_size: int = 8  # footage frames per network call
    feather: float = 0.05  # lower-face mask blur, in face heights
    # scale of the lips' motion relative to the resting mouth (stages/rendering/dub.py); None (auto): 0.5 when
    # the row renders with weights fitted to its presenter (they open the mouth about twice as far:
    # at 1.0 into a smear, docs/model_card.md, Dubbing), 1.0 with the checkpoint's own
    lip_gain: float | None = None

    def problems(self) -> list[str]:
        """What is wrong with these settings (empty when they are valid), each naming the key."""
        out = []
        if self.mouth not in DUB_MOUTHS:
            out.append(f"dub.mouth={self.mouth!r}: expected one of {', '.join(DUB_MOUTHS)}")
        if self.memory.crossfade < 0 or self.memory.candidates < 1:
            out.append("dub.memory.crossfade must be >= 0 and dub.memory.candidates >= 1")
        if self.memory.reshape not in MEMORY_RESHAPES:
            out.append(f"dub.memory.reshape={self.memory.reshape!r}: expected one of {', '.join(MEMORY_RESHAPES)}")
        if not 0 <= self.memory.warp <= 0.1:
            out.append(f"dub.memory.warp={self.memory.warp}: expected 0 (off) to 0.1 eye distances")
        return out


@dataclass
class MuxConfig:
    resources: Resources = field(default_factory=Resources)
    crf: int = 20
    preset: str = "medium"
    audio_bitrate: str = "160k"
    loudness_lufs: float | None = None  # e.g. -16.0 to normalise; None keeps the level
    true_peak_db: float = -1.5
    loudness_range: float = 11.0
    sample_rate: int = 48000


@dataclass
class ProvenanceConfig:
    """Content credentials, disclosure and consent (stages/provenance/c2pa.py, applied by mux).

    ``enabled``: sign a C2PA manifest into every clip (with ``cert``/``key``, a PEM chain and its
    unencrypted key; without them a local, untrusted identity under ``identity_dir``, default
    ``$XDG_CONFIG_HOME/fixtalk-studio``). ``label``: a short text (e.g. "AI-generated") burnt
    into a corner for the first ``label_seconds`` (None or 0: the whole clip), its height a
    ``label_size`` share of the frame height. ``statement``: the disclosure written into the MP4's
    metadata and the subtitle files (default: the label, else a fixed sentence)."""

    enabled: bool = True
    cert: str | None = None
    key: str | None = None
    identity_dir: str | None = None
    label: str | None = None  # None: no visible label
    label_seconds: float | None = 5.0
    label_position: str = "top-right"  # top-left | top-right | bottom-left | bottom-right
    label_size: float = 0.05
    statement: str | None = None
    require_consent: bool = False  # a row without a `consent` cell fails


@dataclass
class QCConfig:
    resources: Resources = field(default_factory=Resources)
    enabled: bool = True
    sample_every: int = 5  # identity / face presence on every k-th output frame
    embedder: str = "dlib"  # dlib (128-d ResNet, offline) | onnx (ArcFace-style model, onnx_model)
    onnx_model: str | None = None  # path of an ArcFace-style .onnx (112x112 aligned input)
    syncnet_weights: str | None = None  # syncnet_v2.model for LSE-C/LSE-D; None skips them
    syncnet_device: str = "cpu"
    analysis_max_side: int = 640  # output frames are scaled down to this longer side for QC
    # full-picture output: faces are measured in an upright view of view_size px around the face
    # crop (view_context times the crop's side), wherever the face is and however it is rolled
    view_size: int = 384
    view_context: float = 2.0
    max_lag_frames: int = 10  # search range of the offline sync lag
    sync_max_seconds: float = 120.0  # sync is measured on the first N seconds
    identity_plot: bool = True  # OUT/qc/<clip_id>_identity.png for flagged clips
    # Thresholds -> qc_status (docs/qc.md). None disables a check; csim_* None = embedder default.
    csim_warn: float | None = None  # dlib 0.95, onnx 0.50
    csim_fail: float | None = None  # dlib 0.91, onnx 0.30 (applied to csim_mean)
    csim_min_warn: float | None = None  # dlib 0.91, onnx 0.30 (applied to csim_min)
    csim_slope_warn: float | None = -0.002  # CSIM lost per second (drift)
    face_presence_warn: float | None = 0.98
    face_presence_fail: float | None = 0.8
    # lip sync (docs/qc.md "Lip sync"); the loudness-envelope sync_corr / lag are never judged
    mouth_motion_fail: float | None = 0.005  # std of the opening in speech: below = a still mouth
    mouth_motion_low: float | None = 0.03  # below: still (fail) if pauses/phones say so, else warn
    pause_min_s: float = 0.4  # silent stretches this long are pauses, where a mouth rests
    pause_margin_s: float = 0.12  # left out at each side of a pause (lips part early, close late)
    pause_min_evidence_s: float = 0.4  # pause interiors needed to judge lip jitter
    pause_motion_warn: float | None = 0.02  # lip jitter: std of the opening in pauses above this...
    pause_motion_ratio_warn: float | None = 0.4  # ...and above this share of the speech motion
    phone_min_speech_s: float = 4.0  # timed spoken phones needed to judge phone_corr
    phone_corr_warn: float | None = 0.1  # phone-openness correlation below this warns
    phone_max_lag_frames: int = 15  # search range of the phone lag (0.6 s at 25 fps)
    phone_lag_warn: int | None = 4  # |phone_lag_frames| from this warns, when its peak is clear
    bilabial_min_count: int = 6  # P/B/M phones (and as many open vowels) needed to judge closure
    bilabial_closure_warn: float | None = 0.7  # opening at P/B/M over open vowels above this warns
    lse_c_warn: float | None = 3.0
    av_offset_warn: int | None = 1  # |av_offset| above this warns
    duration_warn_s: float | None = 0.045  # |video - audio| (about one frame at 25 fps)
    duration_fail_s: float | None = 0.2
    expect_vcodec: str | None = "h264"
    expect_pix_fmt: str | None = "yuv420p"
    expect_acodec: str | None = "aac"
    expect_sample_rate: int | None = 48000
    lufs_target: float | None = None  # None: mux.loudness_lufs (no check when both are None)
    lufs_tolerance: float = 1.0
    true_peak_max_db: float | None = -1.0
    silence_lufs: float = -60.0  # integrated loudness below this = silent output (fail)
    script_mismatch_level: str | None = "fail"  # align's script_mismatch -> fail | warn | None
    script_wer_warn: float | None = 0.35  # trusted script_wer above this warns (docs/scripts.md)
    min_dubbed_fraction: float | None = 0.9  # dubs: a smaller share of frames dubbed warns
    outside_psnr_warn: float | None = 30.0  # dubs: PSNR outside the mouth mask below this warns (encoding alone: 35+ dB)
    # dubs: the mouth's motion in speech (std of the inner-lip gap) over the footage's own below
    # this warns (stages/checks/dub_qc.py; today's model mouths read 0.2-0.35)
    mouth_motion_ratio_warn: float | None = 0.5


@dataclass
class SpeechConfig:
    """Text-to-speech for rows with a script and no audio."""

    resources: Resources = field(default_factory=Resources)
    backend: str = "espeak"  # espeak | piper
    voice: str = "en-us"
    rate_wpm: int = 160
    piper_model: str | None = None
    language: str | None = None  # espeak voice to use when a row gives tts_language only
    piper_config: str | None = None  # the voice's .onnx.json (default: model path + ".json")
    max_script_chars: int = 20000


@dataclass
class AlignConfig:
    """Script-to-audio alignment, subtitles and transcript checks."""

    resources: Resources = field(default_factory=Resources)
    enabled: bool = True
    backend: str = "auto"  # auto | whisperx | pocketsphinx
    subtitles: str = "sidecar"  # sidecar | embedded | burned
    language: str = "en"  # pocketsphinx is English only
    device: str = "cpu"  # whisperx device: cpu | cuda
    whisperx_model: str = "small"  # faster-whisper name in the local cache, or a local folder
    whisperx_model_dir: str | None = None  # cache folder for the ASR model (download_root)
    whisperx_compute_type: str = "int8"
    whisperx_align_model: str | None = None  # torchaudio pipeline, HF id in cache, or folder
    whisperx_align_model_dir: str | None = None
    whisperx_min_word_score: float = 0.3  # wav2vec2 word score counted as "aligned"
    pocketsphinx_min_word_confidence: float = -4.0  # nats/frame counted as "aligned"
    asr_check: bool = True  # pocketsphinx: also run free recognition for script_wer
    max_wer: float = 0.6  # script_mismatch when script_wer is above this (trusted ASR only)
    pocketsphinx_wer_in_flag: bool = False  # pocketsphinx ASR is weak on TTS: WER not flagged
    min_aligned_share: float = 0.5  # script_mismatch when fewer script words align confidently
    cue_max_chars: int = 42
    cue_max_lines: int = 2
    cue_min_seconds: float = 1.0
    cue_max_seconds: float = 7.0


@dataclass
class RunConfig:
    """Orchestration: how the driver runs the stages (never part of the fingerprint)."""

    seed: int = 0
    ray_address: str | None = None  # None: start a local Ray; "auto" or host:port joins a cluster
    num_cpus: int | None = None  # local Ray only; None = every core of the machine
    engine: str = "ray"  # ray | local (one process, no Ray; for debugging)
    stages: list[str] | None = None  # None = all, in order: speech ingest align face_crop adapt motion render mux qc
    block_rows: int = 1  # manifest rows per Ray block (1 = finest streaming and ledger granularity)
    keep_work: bool = True  # keep OUT/work/<clip_id>/ after a clip succeeds
    results_every_s: float = 15.0  # rewrite results.parquet at most this often during a run
    # Ray Data stops a run whose stages emit nothing for this long (ExecutionTimeoutError); a
    # portrait adaptation or a long render on a busy CPU legitimately takes longer than Ray's
    # 30-minute default, so it is off (-1) unless set; a crashed run resumes anyway
    no_progress_timeout_s: float = -1.0
    # a clip on which a stage's worker process dies (kill -9, out of memory, a native crash) is
    # tried again this many times (Ray restarts the actor), then fails with the cause
    max_retries: int = 2
    # a node lost mid-run: stop (systemic, rerun to finish) when no clip finishes for this long
    # after; 0 waits forever (Ray may bring the node back)
    node_loss_grace_s: float = 120.0


@dataclass
class PipelineConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelSection = field(default_factory=ModelSection)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    face_crop: FaceCropConfig = field(default_factory=FaceCropConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    adapt: AdaptSection = field(default_factory=AdaptSection)
    render: RenderConfig = field(default_factory=RenderConfig)
    mux: MuxConfig = field(default_factory=MuxConfig)
    provenance: ProvenanceConfig = field(default_factory=ProvenanceConfig)
    qc: QCConfig = field(default_factory=QCConfig)
    dub: DubConfig = field(default_factory=DubConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
