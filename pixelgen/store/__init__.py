"""Storage: what outlives a process, each written so that a kill at any instant is harmless.
Atomic files and the run lock (files), checkpoints (checkpoint, quantization), the run archive
(archive), image files (images) and a run folder's file names (runs).
"""
