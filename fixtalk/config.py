"""Typed configuration of the FixTalk / EDTalk networks: one place for every size.

Notation follows the papers: the encoder E maps an image I to a code f_6 (``style_dim`` wide) and
a pyramid of feature maps f_1..f_5; the motion bases (FDM) hold orthonormal directions for lip
(``lip_dim``), pose (``pose_dim``) and expression (``exp_dim``); the decoder G warps the source
pyramid. FixTalk adds EMI (motion indicator z) and EDI (detail memory at one pyramid level).

Named presets live in :mod:`fixtalk.presets`.
"""
from __future__ import annotations

from dataclasses import dataclass, field


#: Arithmetic of the rendering network (:class:`fixtalk.inference.ClipRenderer`): float32, or
#: autocast to bfloat16 (CPU or CUDA) or float16 (CUDA only).
PRECISIONS = ("float32", "bfloat16", "float16")


@dataclass
class AudioConfig:
    """Wav2Lip/EDTalk mel front-end (see shared/fixtures/README.md, section 5)."""

    sample_rate: int = 16000
    fps: int = 25
    n_fft: int = 800
    hop_length: int = 200
    win_length: int = 800
    n_mels: int = 80
    fmin: float = 55.0
    fmax: float = 7600.0
    preemphasis: float = 0.97
    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    max_abs_value: float = 4.0
    window_frames: int = 16  # mel frames per video frame window
    smoothing_k: int = 3
    smoothing_sigma: float = 1.0


@dataclass
class SilenceGate:
    """Inference policy (not part of EDTalk/FixTalk): the mouth rests where the speech is silent.

    Audio2Lip maps every 200 ms mel window to lip weights alpha_lip, pauses and room noise included,
    so a small model keeps mumbling through silence. Per video frame (40 ms) the RMS level L in dBFS
    is compared with a threshold ``max(floor_dbfs, loud - below_loud_db)``, where ``loud`` is the
    clip's 95th-percentile frame level; the gate g = clip((L - threshold) / ramp_db, 0, 1) blends
    alpha_lip_t = rest + g_t (alpha_lip_t - rest), ``rest`` being Audio2Lip's output on digital
    silence. The gate is widened by ``hold_frames`` on each side so that plosive onsets and
    releases keep their motion. ``enabled=False`` gives the network's raw output.
    """

    enabled: bool = True
    floor_dbfs: float = -55.0
    below_loud_db: float = 35.0
    ramp_db: float = 6.0
    hold_frames: int = 2


@dataclass
class ShiftStitching:
    """Inference policy (not part of EDTalk/FixTalk, :mod:`fixtalk.shift_stitching`): a driving
    video's head *shift* bypasses the generator.

    Per driving frame, the head motion (yaw, pitch, roll, scale, shift) is fitted to its rigid
    dlib-68 landmarks (relative to the clip's median, smoothed over ``smoothing_sigma`` frames);
    the motion encoder reads the frame with its head moved back by the shift, and the shift is put
    back rigidly on the rendered frame, so a shift is never rendered as a turn. ``reference``:
    ``median`` (the portrait's head sits where the video's head is on average) or ``first`` (where
    it is in the video's first frame: the portrait is a still of that video, FOMM's relative
    mode). ``enabled=False`` drives the generator with the video's own frames, as EDTalk does."""

    enabled: bool = True
    smoothing_sigma: float = 1.0
    reference: str = "median"  # median | first


@dataclass
class PoseTrack:
    """Inference policy (not part of EDTalk/FixTalk, :mod:`fixtalk.pose_track`): what of a pose
    video's head motion drives the pose bank.

    ``mode``: ``rigid`` (default) fits the video's rigid head motion to its landmarks and reads
    alpha_pose off the *portrait* turned, tilted and scaled by it (no pixel of the driver's face
    reaches the generator); ``relative`` uses the driver's own pose weights relative to their
    median, added to the portrait's; ``frames`` is EDTalk's absolute read-out of each frame.
    ``pose_scale`` multiplies the head angles (rigid) or the weights' deviation (relative);
    ``max_yaw`` / ``max_pitch`` / ``max_roll`` (degrees) and ``max_log_scale`` softly bound the
    fitted motion (b tanh(x / b)) to what the model was trained and adapted on
    (:data:`fixtalk.train.data_format.HEAD_TRACKS`: yaw +-16, pitch +-8, roll +-7 degrees, scale
    +-5 %, each a sum of sinusoids that peaks up to about 1.5 times that); ``smoothing_sigma``
    (frames) smooths the fitted track, whose landmark fit jitters on real video."""

    mode: str = "rigid"  # rigid | relative | frames
    pose_scale: float = 1.0
    max_yaw: float = 20.0
    max_pitch: float = 12.0
    max_roll: float = 12.0
    max_log_scale: float = 0.1
    smoothing_sigma: float = 2.0


@dataclass
class PixelWarp:
    """Inference policy (not part of EDTalk/FixTalk, :mod:`fixtalk.pixel_warp`): the source's own
    pixels, moved by the generator's finest flow, wherever the generator only moves them.

    G renders every pixel from warped source *features* through 1x1 ToRGB layers, which blurs a
    small model's output. With W = I_s warped by the finest-level flow phi_K that G itself computes
    (relative flow included), the frame is W + g (G - W), where the gate
    g = clip((|blur_sigma(G) - blur_sigma(W)| - ``low``) / ``ramp``, 0, 1) (mean over RGB, [-1, 1]
    units) takes G where it departs from a pure warp over a few pixels: an opening mouth, teeth,
    closing eyes (G's softer edges alone do not open the gate). ``enabled=False`` gives G alone."""

    enabled: bool = True
    low: float = 0.1
    ramp: float = 0.15
    sigma: float = 2.0


@dataclass
class Audio2LipConfig:
    """Audio2Lip: the Wav2Lip audio encoder (conv widths) + Linear(embed -> lip_dim)."""

    widths: tuple[int, ...] = (32, 64, 128, 256, 512)
    embed_dim: int = 512


@dataclass
class EMIConfig:
    """Enhanced Motion Indicator. ``level`` is the resolution of the pyramid map f^d_4 that the
    learnable query attends over (32 in the paper at 512x512)."""

    enabled: bool = False
    level: int = 32
    depth: int = 2
    heads: int = 8
    ffn_mult: int = 4
    num_queries: int = 1
    margin: float = 0.4  # xi in L_dis = max(0, cos(z^s, z^d) - xi)
    # --- choices where the paper is silent (see fixtalk/nets/emi.py) ---
    attn_dim: int = 0  # width of the extractor P; 0 = channels of the ``level`` map
    pool_levels: tuple[int, ...] = ()  # levels fused by GAP; () = every level except ``level``
    fuse_code: bool = True  # also fuse the encoder code f_6 as one weighted term
    code_logit: float = 6.0  # initial softmax logit of the f_6 term (others start at 0)


@dataclass
class EDIConfig:
    """Enhanced Detail Indicator: compressor/decompressor of the ``level`` map, the driven-identity
    memory M_d and the motion-source memory M_{m-s} with ``slots`` entries each."""

    enabled: bool = False
    level: int = 32
    slots: int = 128
    temperature: float = 10.0
    heads: int = 8
    # --- choices where the paper is silent (see fixtalk/nets/edi.py and fixtalk/losses.py) ---
    token_dim: int = 0  # width of the compact token f_pi; 0 = style_dim (512 in the paper)
    pool_size: int = 4  # compressor Pi: AdaptiveAvgPool2d(pool_size) then a learned weighted sum
    base_size: int = 4  # decompressor Lambda: token -> (C, base, base), then upsampled to level
    attn_dim: int = 0  # width of the fusion cross-attention; 0 = channels of the level map
    kv_mode: str = "recalled"  # MHCA keys: "recalled" (K=V=f^s_4 hat) or "figure" (K=f^s_4)
    train_read: str = "driver"  # token fused in training with f_d: "driver" (alpha_d M_d) or "ms"
    d_mem_kind: str = "l1"  # L_d-mem: "l1" or "cos" (1 - cosine)
    align_detach_target: bool = True  # L_align: stop-gradient on the driver address Omega_d


@dataclass
class ModelConfig:
    """Sizes of one network. ``channels`` maps resolution -> channels and serves both the encoder
    and the decoder (as in EDTalk). ``variant`` picks the layout: ``edtalk`` (lip+pose+exp banks,
    EEM), ``edtalk_lip_pose`` (lip+pose only, no EEM) or ``fixtalk`` (edtalk + EMI + EDI)."""

    name: str = "custom"
    variant: str = "edtalk"
    size: int = 256
    style_dim: int = 512
    lip_dim: int = 20
    pose_dim: int = 6
    exp_dim: int = 10
    channels: dict[int, int] = field(default_factory=dict)
    channel_multiplier: int = 1
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)
    adain_hidden: int = 128
    audio: AudioConfig = field(default_factory=AudioConfig)
    audio2lip: Audio2LipConfig = field(default_factory=Audio2LipConfig)
    emi: EMIConfig = field(default_factory=EMIConfig)
    edi: EDIConfig = field(default_factory=EDIConfig)

    @property
    def has_exp(self) -> bool:
        return self.variant in ("edtalk", "fixtalk")

    @property
    def levels(self) -> list[int]:
        """Decoder warp levels, coarse to fine: 8, 16, ..., size."""
        out, r = [], 8
        while r <= self.size:
            out.append(r)
            r *= 2
        return out


# ---------------------------------------------------------------------------------------------
# Training (fixtalk.train): one config for every stage. Appended by the training issue.

TRAIN_STAGES = ("base", "lip_pose", "exp", "fixtalk", "audio2lip")


@dataclass
class StageConfig:
    """One training stage. ``name``: base (self-reconstruction), lip_pose (cross-reconstruction
    with mouth-swapped composites + latent consistency), exp (expression bank + EEM, complementary
    self-reconstruction), fixtalk (EMI L_dis, EDI L_d-mem + L_align), audio2lip (lip-weight
    regression + temporal smoothness + image loss). Loss weights of terms a stage does not use are
    ignored. ``max_minutes`` > 0 ends the stage early on wall-clock time."""

    name: str = "base"
    steps: int = 1000
    batch_size: int = 4
    lr: float = 0.0016
    d_lr: float = 0.0018
    lr_schedule: str = "constant"  # constant | cosine (warm-up of warmup_steps, then cosine to 0 at steps)
    warmup_steps: int = 0
    window: int = 1  # consecutive driving frames per item (audio2lip uses 5)
    l1: float = 1.0
    perceptual: float = 1.0
    track: float = 0.0  # synthetic data: alpha_lip[0] ~ 4 mouth_open, alpha_lip[1] ~ 4 (mouth_width - 1)
    pose_track: float = 0.0  # synthetic data: alpha_pose[0:3] ~ yaw / 16, pitch / 8, roll / 7 (degrees)
    mouth: float = 0.0  # extra L1 inside the driver's mouth box (landmarks 48-67), see losses.mouth_l1
    flow: float = 0.0  # synthetic data: L1 of every level's flow to the landmark warp (train.warp_targets)
    mask: float = 0.0  # synthetic data: every level's mask 1 outside the open mouth (copy the source)
    mask_mouth: float = 0.0  # synthetic data: the two finest levels' mask 0 inside the open mouth
    copy: float = 0.0  # synthetic data: the finest level alone reproduces the driver outside the mouth
    flow_lr_mult: float = 1.0  # learning-rate factor of the decoder's flow/mask heads (dec.to_flows)
    still_flow: float = 0.0  # with relative_flow: mean |self-flow| of every level (keeps it a small bias)
    invariance: float = 0.0  # partial clips: banks a clip does not move read the source's weights
    contour: float = 0.0  # L1 around the driver's jaw-line and nose points (losses.contour_l1)
    gan: float = 0.0
    gan_start: int = 0  # stage step from which the GAN terms are on
    r1: float = 10.0  # R1 penalty gamma on real images (StyleGAN2), applied lazily every r1_every D steps
    r1_every: int = 4
    latent: float = 1.0  # lip_pose latent consistency
    dis: float = 1.0  # fixtalk L_dis
    d_mem: float = 1.0  # fixtalk L_d-mem
    align: float = 1.0  # fixtalk L_align
    lip: float = 1.0  # audio2lip weight regression (MSE)
    smooth: float = 0.1  # audio2lip temporal-difference MSE
    image: float = 0.5  # audio2lip image loss (L1 + perceptual of the render)
    image_every: int = 1  # audio2lip: render for the image loss every N steps
    max_minutes: float = 0.0
    trainable: str = ""  # comma-separated parameter-name prefixes; "" = the stage's own choice
    frozen: str = ""  # comma-separated parameter-name prefixes kept fixed among those (e.g. "enc.")


@dataclass
class TrainConfig:
    """``fixtalk train`` settings. ``preset`` names the model (fixtalk.presets); ``model``
    overrides fields of it, nested like the ModelConfig (e.g. ``{"size": 64, "channels": {...},
    "edi": {"train_read": "ms"}}``)."""

    preset: str = "tiny"
    model: dict = field(default_factory=dict)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig(name=n) for n in TRAIN_STAGES])
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # mixed precision (CUDA only)
    dtype: str = "float32"  # parameters and batches; "float64" for exact comparisons (tests); model.pt is float32
    num_threads: int = 0  # torch CPU threads (0 = torch default)
    perceptual_weights: str = ""  # VGG19 weights file; empty = no-download StructureLoss
    disc_channels: int = 32
    disc_stddev_group: int = 4  # minibatch-stddev group of the discriminator (within each worker's share)
    checkpoint_minutes: float = 5.0
    checkpoint_steps: int = 0
    log_every: int = 10
    max_minutes: float = 0.0  # whole run budget (0 = none)
    init_flow_scale: float = 0.1  # scale of the to_flow weights at init (near-identity warps)
    colour_augment: bool = False  # random colour transform per item (fixtalk.train.colour)
    audio_noise_dbfs: float = 0.0  # < 0: a noise floor near this level under the training audio
    stickers: float = 0.0  # probability of moving picture patches per item (fixtalk.train.stickers)
    relative_flow: bool = False  # renders subtract the source's self-flow (nets.decoder.self_flow_offsets)


@dataclass
class DistributedConfig:
    """``fixtalk train --workers N``: data-parallel training on Ray Train (fixtalk.train.distributed).

    ``workers`` processes each take ``batch_size / workers`` items of every global batch (a stage's
    ``batch_size`` stays the global batch, so the same config trains the same model on any number
    of workers); gradients and the logged losses are averaged over them. ``gpus_per_worker`` > 0
    puts each worker on its GPU(s) with NCCL, 0 trains on CPU with gloo. ``address``: a running Ray
    cluster ("auto", host:port); empty starts a local one. ``max_failures``: worker-group restarts
    (a lost worker) before the run fails; each restart resumes from the last ``train_state.pt``.
    ``resources``: custom Ray resources each worker asks for, e.g. ``{"gpu_train": 1}`` to land on
    the training node type of cluster.yaml."""

    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    address: str = ""
    max_failures: int = 2
    resources: dict[str, float] = field(default_factory=dict)  # custom per-worker resources (node type)


@dataclass
class AdaptConfig:
    """Portrait adaptation (:mod:`fixtalk.adapt`, a choice of this project, not in EDTalk/FixTalk):
    before rendering a presenter, the generator (all but Audio2Lip) is fine-tuned on ``clips``
    synthetic clips of ``clip_seconds`` made from that presenter's portrait crop alone (known head
    and mouth motion, :mod:`fixtalk.train.synthetic`): ``steps`` of self-reconstruction
    (L1 + perceptual + mouth-box L1 ``mouth`` + lip-track ``track`` + head-track ``pose_track``,
    stage_steps.track_term) at learning rate ``lr``, rendered as the pipeline renders
    (``relative_flow``, TrainConfig.relative_flow); ``flow`` > 0 also supervises every level's
    flow with the known warp (with relative flow, the displacement rendered, f_d - f_s).
    ``partial_clips``: see fixtalk.adapt."""

    steps: int = 300  # with lr 1e-3 on a cosine schedule; was 600 at a constant 5e-4 (docs/performance.md)
    lr: float = 0.001
    lr_schedule: str = "cosine"  # constant | cosine (fixtalk.train.schedule)
    warmup_steps: int = 15
    batch_size: int = 4
    relative_flow: bool = True
    flow: float = 0.0
    mouth: float = 4.0
    track: float = 1.0
    pose_track: float = 0.0
    clips: int = 12
    clip_seconds: float = 4.0
    partial_clips: bool = True  # one clip in three moves only the head, one only the lips
    shift: bool = False  # clips shift the head too (off: shift stitching moves it, not G)
    invariance: float = 100.0  # with partial_clips: stage_steps.invariance_term
    frozen: str = ""  # parameter-name prefixes kept fixed, e.g. "enc." (the encoder E: no backward through it)
    seed: int = 0
    num_threads: int = 0  # torch CPU threads while adapting (0 = every core: a Ray actor's default is 1)
    checkpoint_minutes: float = 2.0  # resumable state this often (a killed run continues)


@dataclass
class FootageFitConfig:
    """Fitting the model to a presenter from their footage (:mod:`fixtalk.footage_fit`; EDTalk's
    "fine-tune on a specific person"): ``steps`` of self-reconstruction, each frame rendered from
    another frame of the same footage (L1 + perceptual + mouth-box L1 ``mouth``), training the
    decoder G only (``train="decoder"``, as EDTalk recommends) or every generator part
    (``"generator"``); then, when the footage has speech and ``lip_steps`` > 0, that many steps
    of Audio2Lip on its own sound against the encoder's lip weights alpha_lip of its frames (off by
    default: with the shipped small model the regression shrinks the lip weights toward their mean
    and a dub's mouth then moves a fifth as much; docs/model_card.md). At most ``max_frames`` frames
    (evenly spaced, 25 fps) are used, cut into clips of ``clip_seconds``; ``holdout`` is the share
    of frames (the end of the footage) kept out of fitting for evaluation."""

    enabled: bool = True
    steps: int = 150  # at lr 6e-4 on a cosine schedule; was 300 at a constant 3e-4 (docs/model_card.md)
    lr: float = 0.0006
    lr_schedule: str = "cosine"  # constant | cosine (fixtalk.train.schedule)
    warmup_steps: int = 10
    batch_size: int = 4
    train: str = "decoder"  # decoder | generator
    mouth: float = 4.0
    relative_flow: bool = True
    lip_steps: int = 0
    lip_lr: float = 0.0005
    max_frames: int = 1500
    clip_seconds: float = 4.0
    holdout: float = 0.0
    seed: int = 0
    num_threads: int = 0  # torch CPU threads while fitting (0 = every core)
    checkpoint_minutes: float = 2.0


@dataclass
class PrepareConfig:
    """``fixtalk data prepare`` (:mod:`fixtalk.train.prepare`): talking-face videos -> training
    clips in the on-disk format (:mod:`fixtalk.train.data_format`).

    Each video is decoded at 25 fps / 16 kHz; a frame whose 32x32 grey thumbnail differs from the
    previous one by more than ``scene_cut`` (mean absolute difference, 0-1) starts a new shot;
    each shot is cut into clips of ``segment`` seconds (0: one clip per shot; a remainder shorter
    than ``min_seconds`` joins the clip before it), each with ONE fixed crop of ``size`` pixels
    (EDTalk's preprocessing). Faces are detected on every ``detect_every``-th frame and at each
    shot start (on a copy scaled to ``detect_max_side``), landmarks fitted on every frame. A shot
    shorter than ``min_seconds`` is dropped as ``too_short``; one with two or more faces in
    ``several_faces_share`` of its detection frames as ``several_faces`` (faces smaller than
    ``minor_face_area`` of the largest one's box do not count). Clips are cut to the face track:
    stretches without a face longer than ``max_gap`` seconds are dropped as ``no_face`` (shorter
    gaps are bridged), a run of the track shorter than ``min_seconds`` as ``too_short``.
    ``num_cpus`` is Ray's CPU request per video task. ``split`` and ``licence`` go into every
    clip's meta.json."""

    size: int = 128
    segment: float = 10.0
    min_seconds: float = 1.0
    max_gap: float = 0.4
    scene_cut: float = 0.30
    several_faces_share: float = 0.3
    minor_face_area: float = 0.25
    detect_every: int = 5
    detect_max_side: int = 480
    split: str = "train"
    licence: str = "unknown (set --licence)"
    num_cpus: float = 1.0

    #: Settings that change the clips made: a rerun into the same OUT must use the same values.
    CLIP_SETTINGS = ("size", "segment", "min_seconds", "max_gap", "scene_cut",
                     "several_faces_share", "minor_face_area", "detect_every", "detect_max_side")

    def clip_settings(self) -> dict:
        """The values of :attr:`CLIP_SETTINGS` (recorded with every prepared video)."""
        return {name: getattr(self, name) for name in self.CLIP_SETTINGS}
