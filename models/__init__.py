"""avseg core package: model, data, metrics and I/O for open-vocabulary audio-visual segmentation.

Importing this package is cheap (no torch); heavy modules are imported where they are used.
"""

__version__ = "0.1.0.dev0"

from models.errors import AVSegError  # noqa: E402  (the error every user-facing failure raises)

__all__ = ["AVSegError", "__version__"]
