"""One verdict on an evaluation: does the protection protect, and is the run strong enough to say?

The rule lives here only; ``uetransforms evaluate`` prints it and the README quotes it.

* **baseline too weak to judge**: the model trained on the *clean* rows got less than halfway
  from chance to perfect on the clean test set (:data:`MIN_BASELINE_GAIN`). A small model that
  learnt little from clean data learns little from protected data too, so their ratio says
  nothing about the protection (a 2,000-image, 4-epoch CIFAR-10 run reached 0.416 clean).
* **broken**: protected training reached at least :data:`~uetransforms.evaluation.suite.BROKEN_RATIO`
  of the clean accuracy (the defence suite's rule).
* **weak**: between :data:`PROTECTS_RATIO` and the broken ratio.
* **protects**: protected training reached less than :data:`PROTECTS_RATIO` of the clean
  accuracy.

Example:
    >>> v = verdict(clean_accuracy=0.66, protected_accuracy=0.312, num_classes=10)
    >>> v.word, round(v.ratio, 2)
    ('protects', 0.47)
    >>> verdict(clean_accuracy=0.416, protected_accuracy=0.342, num_classes=10).word
    'baseline too weak to judge'
"""

from __future__ import annotations

from dataclasses import dataclass

from .suite import BROKEN_RATIO

#: The clean model must get this share of the way from chance (1/classes) to 1.0 before a ratio
#: means anything: the recorded CPU harness's clean run (measured.json) got 0.62 of the way; the
#: 2,000-image, 4-epoch run of issue 24 got 0.35 and its 0.82x ratio said nothing.
MIN_BASELINE_GAIN = 0.5
#: Below this ratio the protection did its job: every method the suite measured as protecting
#: reached 0.29-0.47x on the CPU harness; from here up to the broken ratio it is called weak.
PROTECTS_RATIO = 0.6

WORDS = ("protects", "weak", "broken", "baseline too weak to judge")


@dataclass(frozen=True)
class Verdict:
    """The verdict word and the numbers it rests on."""

    word: str
    clean_accuracy: float
    protected_accuracy: float
    ratio: float
    chance: float
    baseline_needed: float

    def line(self) -> str:
        """One line for a person: the word, the numbers and the rule applied."""
        nums = (f"clean training {self.clean_accuracy:.3f}, protected training {self.protected_accuracy:.3f} "
                f"({self.ratio:.2f}x) on the clean test set")
        if self.word == "baseline too weak to judge":
            return (f"verdict: {self.word}: {nums}; clean training must reach at least {self.baseline_needed:.3f} "
                    f"(halfway from chance {self.chance:.3f} to 1) before the ratio means anything. Train on more "
                    f"rows or for more epochs{_measured_setting()}.")
        rule = {"protects": f"below {PROTECTS_RATIO:g}x", "weak": f"{PROTECTS_RATIO:g}x to {BROKEN_RATIO:g}x",
                "broken": f"{BROKEN_RATIO:g}x or more"}[self.word]
        return f"verdict: {self.word}: {nums}; {rule} of clean reads {self.word}."


def _measured_setting() -> str:
    """What the recorded measurements used, from ``measured.json`` (no number written here)."""
    from ..algorithms import measured

    for key in ("cuda", *sorted(measured.load()["methods"])):
        f = measured.for_method(key)
        h, e = f.get("harness") or {}, f.get("effect") or {}
        if h.get("train_size") and e:
            return (f" (the recorded measurements used {h['train_size']:,} CIFAR-10 images, {h.get('arch')}, "
                    f"{h.get('epochs')} epochs: clean {e['clean_accuracy']:.3f})")
    return ""


def verdict(*, clean_accuracy: float, protected_accuracy: float, num_classes: int) -> Verdict:
    """The verdict on one evaluation (no defence, or one defence with both sides under it).

    Args:
        clean_accuracy: clean test accuracy of the model trained on the clean rows.
        protected_accuracy: clean test accuracy of the model trained on the protected rows.
        num_classes: classes of the task (chance is ``1 / num_classes``).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 for a verdict, got {num_classes}")
    for name, v in (("clean_accuracy", clean_accuracy), ("protected_accuracy", protected_accuracy)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be an accuracy in [0, 1], got {v!r}")
    chance = 1.0 / num_classes
    needed = chance + MIN_BASELINE_GAIN * (1.0 - chance)
    ratio = protected_accuracy / clean_accuracy if clean_accuracy > 0 else float("inf")
    if clean_accuracy < needed:
        word = WORDS[3]
    elif ratio >= BROKEN_RATIO:
        word = "broken"
    elif ratio >= PROTECTS_RATIO:
        word = "weak"
    else:
        word = "protects"
    return Verdict(word, float(clean_accuracy), float(protected_accuracy), float(ratio), chance, needed)


__all__ = ["MIN_BASELINE_GAIN", "PROTECTS_RATIO", "Verdict", "WORDS", "verdict"]
