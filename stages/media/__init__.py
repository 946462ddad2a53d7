"""Media helpers of the stages: ffmpeg probing, decoding and encoding (:mod:`.av`), images,
delivery checks, paste-back into the full frame, and presenter footage."""
