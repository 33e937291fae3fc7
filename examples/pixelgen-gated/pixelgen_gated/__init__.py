"""pixelgen-gated: Gated PixelCNN as a third-party pixelgen model plugin.

The model is registered through the ``pixelgen`` entry-point group (see this package's
``pyproject.toml``); use it through pixelgen::

    import pixelgen
    model = pixelgen.create_model("gated_pixelcnn", in_channels=3)
"""

from pixelgen_gated.model import GatedPixelCNN

__all__ = ["GatedPixelCNN"]
