"""Every network the package builds or loads, and what turns images into cluster ids.

* :mod:`~uetransforms.models.networks` -- classifiers by name (``"cnn-small"``, torchvision archs);
* :mod:`~uetransforms.models.surrogates` -- surrogate classifiers trained on the fly for methods;
* :mod:`~uetransforms.models.encoders` -- feature encoders (torchvision, a small-CNN checkpoint, CLIP);
* :mod:`~uetransforms.models.clip` -- open_clip loading, offline and verified;
* :mod:`~uetransforms.models.backbones` -- pretrained backbones by spec (torchvision, timm, CLIP, a
  local file) for the pretrained attackers and for methods that fit through one;
* :mod:`~uetransforms.models.kmeans` / :mod:`~uetransforms.models.assign` -- k-means and the
  nearest-centroid cluster assignment that cluster-keyed banks use at apply time.

Imports only :mod:`uetransforms.core`.
"""
