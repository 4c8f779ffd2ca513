"""Measuring protection: train on the protected copy, test on clean data.

* :mod:`~uetransforms.evaluation.harness` -- ``ue.evaluate``: one training run per defence;
* :mod:`~uetransforms.evaluation.attackers` -- who trains on the copy: from scratch, a linear probe or
  a fine-tune of a pretrained backbone (one file each, one registry);
* :mod:`~uetransforms.evaluation.defences` -- what that trainer does against the noise (one file each);
* :mod:`~uetransforms.evaluation.suite` -- ``ue.evaluate_suite``: the method x defence grid;
* :mod:`~uetransforms.evaluation.verdict` -- protects / weak / broken / baseline too weak, from the numbers;
* :mod:`~uetransforms.evaluation.labelfree` -- the fair label-agnostic protocol;
* :mod:`~uetransforms.evaluation.quality` -- PSNR / SSIM / largest change of a bank;
* :mod:`~uetransforms.evaluation.figures` -- report figures and heatmaps.

The top of the library: only the CLI imports it.
"""
