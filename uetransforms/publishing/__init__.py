"""Writing a protected dataset: lossless shards, the card and the Hub.

* :mod:`~uetransforms.publishing.pipeline` -- ``ue.publish`` (in-memory datasets) and the Hub
  upload;
* :mod:`~uetransforms.publishing.streaming` -- ``ue.publish_stream`` (iterable datasets);
* :mod:`~uetransforms.publishing.writer` -- the one writer both doors use: batch sources, the
  double-protection refusal, the atomic output folder and its shards;
* :mod:`~uetransforms.publishing.card` -- the dataset card, a pure function that checks its own
  output for secrets.

Imports :mod:`uetransforms.integrations` (``Protect`` applies the bank) and the layers below.
"""
