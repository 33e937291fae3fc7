"""How much measuring a comparison or an analysis does (:class:`CompareOptions`), in a
module that loads nothing heavy: the command line reads the defaults from here to show them
in its help without loading torch, and the names of the files that mark a report's folder.
"""

from __future__ import annotations

import attrs

#: The file that marks a folder as a comparison's report, rewritten by the next comparison into
#: it (:func:`pixelgen.store.runs.check_output_folder`).
COMPARISON_JSON = "comparison.json"
#: The file that marks a folder as an analysis's report.
ANALYSIS_JSON = "analysis.json"


@attrs.frozen(kw_only=True)
class CompareOptions:
    """How much measuring :func:`~pixelgen.study.report.compare` and
    :func:`~pixelgen.study.report.analyse` do; the defaults live here.

    Attributes:
        field_size: side of the canvas the receptive fields are measured on (capped at
            the image size).
        gradient_batch: training images in the batch of the gradient-flow measurement.
        scaling: measure the scaling sweep (forward + backward time and activation memory
            against image size and depth). Off by default: it measures the architecture on
            random images, not the trained weights, takes longer than everything else a
            small run's comparison measures, and is asked for where it is the question.
        scaling_sizes, scaling_depths: image sizes and numbers of layers timed.
        scaling_batch, scaling_repeats: images per timed pass, timed passes per point.
        timing_images: images generated to time each sampler.
        timing_repeats: at most this many timings of the fast sampler; their median is
            reported.
        timing_steady_seconds: the fast sampler is timed again only while its timings add
            up to less than this (a longer timing is steady; see
            :func:`~pixelgen.study.measure.sampling_seconds`).
        reference_subpixels: sub-pixels the reference sampler generates for its timing;
            its time per image is extrapolated from them (each sub-pixel costs it one full
            forward pass, the same for every sub-pixel).
        time_reference: time the reference sampler on whole images instead (minutes per
            image for the recurrent models on a CPU).
        max_train_images: training images searched for each sample's nearest neighbour.
        max_held_out_images: test images used as the baseline of that search.
        device: where the measurements run ("cpu", "cuda", ...).
        threads: torch threads while measuring; None: one per two CPU cores
            (:func:`pixelgen.sampling.default_threads`), the caller's number put back after.
    """

    field_size: int = 15
    gradient_batch: int = 8
    scaling: bool = False
    scaling_sizes: tuple[int, ...] = (8, 16, 32)
    scaling_depths: tuple[int, ...] = (1, 2, 4)
    scaling_batch: int = 4
    scaling_repeats: int = 3
    timing_images: int = 2
    timing_repeats: int = 3
    timing_steady_seconds: float = 0.25
    reference_subpixels: int = 8
    time_reference: bool = False
    max_train_images: int = 2000
    max_held_out_images: int = 500
    device: str = "cpu"
    threads: int | None = None
