"""Script and timing helpers of the stages: script text, forced alignment (pocketsphinx offline,
whisperx when its models are supplied) and subtitles."""
