"""Measuring protection: train on the protected copy, test on clean data.

* :mod:`~uetransforms.evaluation.harness` -- ``ue.evaluate``: one training run per defence;
* :mod:`~uetransforms.evaluation.defences` -- the defences an attacker may use (one registry);
* :mod:`~uetransforms.evaluation.suite` -- ``ue.evaluate_suite``: the method x defence grid;
* :mod:`~uetransforms.evaluation.quality` -- PSNR / SSIM / largest change of a bank;
* :mod:`~uetransforms.evaluation.figures` -- report figures and heatmaps.

The top of the library: only the CLI imports it.
"""
