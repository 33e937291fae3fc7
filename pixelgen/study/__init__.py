"""The study: everything that reads a finished run or checkpoint. Evaluating, sampling,
scoring and quantizing a checkpoint (from_checkpoint, inference, scoring, classifier), and the
comparison and analysis reports (measure, analysis, report, render).
"""
