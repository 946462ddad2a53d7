"""QC helpers of the stages: the verdict rules, SyncNet (LSE-C/LSE-D) with supplied weights,
identity embedders and the dub's own measures."""
