"""Provenance helpers of the mux stage: C2PA content credentials, the signing identity and the
AI-disclosure text written into metadata, credentials and subtitles."""
