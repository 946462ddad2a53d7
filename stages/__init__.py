"""The pipeline's nine stages, one module each, in the order a clip passes through them:

==========  ======================================================================
speech      a script without audio becomes speech (TTS)
ingest      probe and normalise the inputs (audio 16 kHz mono, videos 25 fps)
align       word and phone timings of the speech; subtitles
face_crop   one face, landmarks, the model's crop and the paste-back transform
adapt       fit the generator to the presenter (portrait or footage), cached
motion      audio -> lip weights, pose and expression weights -> ``motion.npz``
render      frames in batches, streamed into ffmpeg (or a dubbed shot)
mux         audio + video -> the delivered MP4, credentials and subtitles
qc          identity, lip sync, format, loudness -> the clip's verdict
==========  ======================================================================

Every stage follows the contract of :mod:`stages.base` and reads its section of
:mod:`stages.config`. The helpers they share live in the subpackages below them: :mod:`stages.media`,
:mod:`stages.face`, :mod:`stages.transcript`, :mod:`stages.checks`, :mod:`stages.provenance`,
:mod:`stages.rendering`; the face, identity and lip meters that evaluation also uses are in
:mod:`fixtalk.measure`. Importing this package imports no stage (so a helper stays light).
"""

#: Stage order and where each class lives. The config section's name equals the stage's name.
STAGE_ORDER: tuple[str, ...] = ("speech", "ingest", "align", "face_crop", "adapt", "motion", "render",
                                "mux", "qc")
STAGE_CLASSES: dict[str, tuple[str, str]] = {
    "speech": ("stages.speech", "SpeechStage"),
    "ingest": ("stages.ingest", "IngestStage"),
    "align": ("stages.align", "AlignStage"),
    "face_crop": ("stages.face_crop", "FaceCropStage"),
    "adapt": ("stages.adapt", "AdaptStage"),
    "motion": ("stages.motion", "MotionStage"),
    "render": ("stages.render", "RenderStage"),
    "mux": ("stages.mux", "MuxStage"),
    "qc": ("stages.qc", "QCStage"),
}
