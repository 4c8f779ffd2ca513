"""The lowest layer: what a bank is and how it meets an image, with no model and no framework.

* :mod:`~uetransforms.core.bank` -- the :class:`NoiseBank` (Arrow IPC, verified, immutable);
* :mod:`~uetransforms.core.kinds` -- the bank kinds registry, one file per kind;
* :mod:`~uetransforms.core.kernels` -- the batched tensor maths the kinds run;
* :mod:`~uetransforms.core.apply` -- the one apply entry (image + key -> bank row -> kernel);
* :mod:`~uetransforms.core.codecs` / :mod:`~uetransforms.core.images` -- decoding, lossless
  encoding, the image record and the protection marker;
* :mod:`~uetransforms.core.data` -- :class:`FitData`, the arrays a method fits on;
* :mod:`~uetransforms.core.errors`, :mod:`~uetransforms.core.device`, :mod:`~uetransforms.core.version`.

Nothing here imports a higher layer (``tests/test_layers.py`` checks it).
"""
