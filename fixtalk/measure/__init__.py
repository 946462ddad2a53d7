"""Meters shared by the model's evaluation (:mod:`fixtalk.train.evaluate`) and the pipeline's QC
stage: face detection and landmarks (:mod:`.faces`), identity embeddings (:mod:`.identity`) and
mouth motion against speech (:mod:`.lipsync`). Plain NumPy/dlib functions: no pipeline, no Ray.
"""
