"""The bottom layer: what a model is made of. Masked convolutions and colour groups (layers), the
LSTM scans with their own backward passes (scans), ResidualStack, the output head and the
sampling-state protocol (blocks), NLL and bits/dim (metrics). Torch and einops only; plugins
import it as :mod:`pixelgen.blocks`.
"""
