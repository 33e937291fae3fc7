"""The built-in pixelgen architectures, installed as the package ``pixelgen_plugins``.

Each module is a pluggy plugin registered through the ``pixelgen`` entry-point group,
exactly as a third-party package would be; the core never imports them by name.
"""
