"""Label-free protection under the fair label-agnostic protocol (issue 25).

Each ``--config NAME=METHOD[:PARAM=VALUE,...]`` is fitted WITHOUT labels on CIFAR-10 train rows
[0, 10000) (``ue.fit(method, ..., label_column=None, encoder=ENCODER)``: ``clusters`` is UC; any
class-keyed method is keyed by K-means clusters of the encoder's features, ``n_clusters=K``),
protected with ``Protect(bank, label_column=None)`` (clusters assigned at apply time) and judged by
:mod:`uetransforms.evaluation.labelfree`: a small CNN (the harness of bench_protection.py: cnn-small,
8 epochs, SGD one-cycle lr 0.1, batch 128) trained from scratch on the protected rows with (a) the
true labels and (b) 5 groups of 2 classes, tested on clean test rows [0, 2000); ratio = protected /
clean under the same labelling, with the majority-class floor beside it.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_labelfree.py \\
        --encoder /tmp/uet-surrogate/resnet18-c10.safetensors \\
        --config cuda-k10=cuda:n_clusters=10 --config cuda-k50=cuda:n_clusters=50 \\
        --out benchmarks/results/labelfree-s6.json

Results are written after every config (a killed run keeps what it measured); ``--resume`` reads
the clean baselines and finished configs back from ``--out`` (refused when that file was measured
with another attacker, backbone or harness setting: its clean rows would not be this run's).

**Pretrained attackers.** ``--attacker linear-probe`` / ``finetune`` with ``--backbone SPEC`` trains
every labelling (clean baseline included) with the evaluation package's attacker, as
``bench_protection.py --attacker`` does (``ue.evaluate``'s ``attacker=`` / ``backbone=``; the probe
counts ``--epochs`` as L-BFGS rounds, the fine-tune's peak lr is the attacker's 0.01). The JSON
records the attacker, the backbone's identity (file, sha256, what it was trained on) and the
resolution, so ``benchmarks/record_attacks.py`` can record its rows:

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_labelfree.py \\
        --encoder /tmp/uet-surrogate/resnet18-c10-e9.safetensors --attacker finetune --epochs 4 \\
        --backbone /tmp/pt/attack-cnn-w32-r40k50k.safetensors \\
        --config cuda5-k10=cuda:n_clusters=10,kernel_size=5 --out /tmp/labelfree-finetune.json

**How pure must a key be?** A config with the bench-only parameter ``key_purity=P`` is NOT
label-free: it is the method fitted class-keyed on a synthetic key column, each row's key being its
true label with probability P, else a uniformly random *other* class (seeded with the bank seed), so
P is the keys' purity in the sense of :func:`purity` (the cluster keys' number). It measures what
purity a label-free key needs, with everything else (method, harness, attacker) unchanged:

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_labelfree.py --labellings true \
        --config cuda-p80=cuda:key_purity=0.8 --config ops-p80=ops:key_purity=0.8 --out /tmp/noisy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "cifar10"))


def parse_config(text: str) -> tuple[str, str, dict[str, object]]:
    """``"cuda-k20=cuda:n_clusters=20,blur_parameter=0.3"`` -> ``("cuda-k20", "cuda", {...})``."""
    from uetransforms.cli import parse_param

    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise SystemExit(f"--config {text!r}: expected NAME=METHOD[:PARAM=VALUE,...]")
    method, _, plist = rest.partition(":")
    params = dict(parse_param(item) for item in plist.split(",") if item)
    return name, method, params


def purity(clusters, labels) -> float:
    """Share of images whose cluster's most common label is their own label."""
    import numpy as np

    c, y = np.asarray(clusters), np.asarray(labels)
    return float(sum(np.bincount(y[c == k]).max() for k in np.unique(c)) / len(y))


#: the bench-only config parameter of the noisy-true-label keys (see the module docstring)
KEY_PURITY = "key_purity"


def noisy_keys(labels, p: float, *, seed: int, num_classes: int = 10):
    """Each row's true label with probability ``p``, else a uniformly random other class (seeded)."""
    import numpy as np

    if not 0.0 <= p <= 1.0:
        raise SystemExit(f"{KEY_PURITY}={p}: expected a probability in [0, 1]")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keep = rng.random(len(y)) < p
    other = (y + rng.integers(1, num_classes, len(y))) % num_classes
    return np.where(keep, y, other)


def _setting_differs(old: dict, new: dict) -> str | None:
    """The first harness setting an earlier ``--out`` file was measured with that this run's differs
    in (``None`` when none does). Files written before ``--attacker`` existed trained from scratch."""
    for k in ("attacker", "epochs", "seed", "train_rows", "test_rows", "resolution", "backbone"):
        was = old.get(k, {"attacker": "scratch", "backbone": None, "resolution": new["resolution"]}.get(k))
        if k == "backbone":
            was = None if was is None else was.get("checkpoint_sha256")
            now = None if new[k] is None else new[k].get("checkpoint_sha256")
        else:
            now = new[k]
        if was != now:
            return f"{k} ({was!r}, this run {now!r})"
    return None


def _encoder_identity(bank) -> dict | None:
    """The encoder that keyed a label-free bank, as the bank records it, with what its file says it
    was trained on (``None`` for a bank keyed by a label column, e.g. a ``key_purity`` probe)."""
    enc = bank.info.get("surrogate") if bank.fitted_without_labels else None
    if not enc:
        return None
    out = {k: enc.get(k) for k in ("kind", "arch", "checkpoint", "checkpoint_sha256", "image_size", "weights")}
    path = enc.get("checkpoint_path")
    if path and os.path.isfile(path) and path.endswith(".safetensors"):
        from uetransforms.models.encoders import file_metadata

        meta = file_metadata(path)
        out["trained_on"], out["validation"] = meta.get("trained_on"), meta.get("validation")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoder", help="encoder file / name for ue.fit(..., encoder=) (not needed when every "
                   f"config sets {KEY_PURITY}=)")
    p.add_argument("--config", action="append", default=[], metavar="NAME=METHOD[:P=V,...]")
    p.add_argument("--bank", action="append", default=[], metavar="NAME=PATH", help="reuse a fitted bank")
    p.add_argument("--labellings", nargs="+", default=["true", "pairs"], choices=["true", "pairs"])
    p.add_argument("--attacker", default="scratch", choices=["scratch", "linear-probe", "finetune"],
                   help="who trains on the protected rows (ue.evaluate's attacker=); the pretrained ones need --backbone")
    p.add_argument("--backbone", default=None,
                   help="the pretrained attackers' backbone spec (ue.evaluate's backbone=), e.g. a small-cnn file")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-size", type=int, default=10_000)
    p.add_argument("--test-size", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--bank-seed", type=int, default=1234)
    p.add_argument("--bank-dir", default="/tmp/lf/banks")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.attacker == "scratch" and args.backbone is not None:
        raise SystemExit("--backbone is for --attacker linear-probe / finetune; --attacker scratch trains a "
                         "random-init cnn-small")
    if args.attacker != "scratch" and args.backbone is None:
        raise SystemExit(f"--attacker {args.attacker} starts from a pretrained model: pass --backbone <spec or file>")

    import datasets
    import numpy as np
    import torch

    import uetransforms as ue
    from uetransforms.algorithms import public_params
    from uetransforms.evaluation import labelfree, quality
    from uetransforms.models.assign import ClusterAssigner
    from uetransforms.models.backbones import load_backbone

    torch.set_num_threads(1)
    paths = {s: os.path.join(args.data, f"{s}-00000-of-00001.parquet") for s in ("train", "test")}
    train = datasets.Dataset.from_parquet(paths["train"]).select(range(args.train_size))
    test = datasets.Dataset.from_parquet(paths["test"]).select(range(args.test_size))
    labs = [lab for lab in labelfree.cifar10_labellings() if lab.name in args.labellings]
    # Loaded once and handed to every run (ue.evaluate copies it, so a fine-tune never starts from
    # another run's weights); its identity names the attacker's starting point in the JSON.
    backbone = None if args.backbone is None else load_backbone(args.backbone)
    harness = dict(image_column="img", label_column="label", arch="cnn-small", epochs=args.epochs, seed=args.seed,
                   attacker=args.attacker, backbone=backbone)
    side = train[0]["img"].size[0]
    setting = {"image_column": "img", "label_column": "label", "arch": "cnn-small", "epochs": args.epochs,
               "seed": args.seed, "attacker": args.attacker,
               "backbone": None if backbone is None else backbone.identity(), "resolution": side,
               "train_rows": [0, args.train_size], "test_rows": [0, args.test_size]}
    state = {"command": "python benchmarks/bench_labelfree.py " + " ".join(sys.argv[1:] if argv is None else argv),
             "harness": {**setting, "bank_seed": args.bank_seed, "threads": 1},
             "encoder": args.encoder, "clean": {}, "floors": {}, "results": [],
             "environment": {"uetransforms": ue.__version__, "torch": torch.__version__,
                             "python": platform.python_version()}}
    if args.resume and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        differs = _setting_differs(old.get("harness", {}), setting)
        if differs:
            raise SystemExit(f"--resume: {args.out} was measured with another {differs}; its clean rows are not "
                             "this run's: pass another --out")
        state["clean"], state["results"] = old.get("clean", {}), old.get("results", [])
        state["previous_commands"] = old.get("previous_commands", []) + [old.get("command")]

    def save() -> None:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(state, f, indent=2)

    for lab in labs:
        state["floors"][lab.name] = labelfree.majority_floor(test["label"], lab.label_map)
    missing = [lab for lab in labs if lab.name not in state["clean"]]
    if missing:
        t0 = time.perf_counter()
        state["clean"].update(labelfree.clean_baselines(test, clean_train=train, labellings=missing, **harness))
        print(f"clean: {state['clean']} ({time.perf_counter() - t0:.0f} s)", flush=True)
        save()
    saved = dict(b.split("=", 1) for b in args.bank)
    done = {r["name"] for r in state["results"]}
    true_labels = np.asarray(train["label"])
    for spec in args.config:
        name, method, params = parse_config(spec)
        if name in done:
            continue
        key_p = params.pop(KEY_PURITY, None)
        if key_p is None and args.encoder is None:
            raise SystemExit(f"--config {spec!r} is label-free and needs --encoder")
        t0 = time.perf_counter()
        if key_p is not None:  # class-keyed on noisy true labels: not label-free, a purity probe
            keys = noisy_keys(true_labels, float(key_p), seed=args.bank_seed)
            src = train.add_column("noisy_key", keys.tolist())
            fit_kw: dict[str, object] = dict(label_column="noisy_key")
        else:
            src, fit_kw = train, dict(label_column=None, encoder=args.encoder)
        if name in saved:
            bank = ue.NoiseBank.load(saved[name])
        else:
            bank = ue.fit(method, src, image_column="img", seed=args.bank_seed, **fit_kw, **params)
            os.makedirs(args.bank_dir, exist_ok=True)
            bank.save(os.path.join(args.bank_dir, f"{name}.bank.arrow"), overwrite=True)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prot = src.map(ue.Protect(bank, image_column="img", label_column=fit_kw["label_column"]), batched=True,
                       batch_size=256, desc=f"protecting ({name})")
        if key_p is not None:
            prot = prot.remove_columns("noisy_key")
        protect_s = time.perf_counter() - t0
        # the keys the noise was applied by (Protect's clusters, or the noisy labels), against the
        # labels the attacker may use
        imgs = np.stack([np.asarray(im.convert("RGB")).transpose(2, 0, 1) for im in train["img"]])
        applied = keys if key_p is not None else ClusterAssigner(bank)(list(imgs))
        pur = {lab.name: purity(applied, true_labels if lab.label_map is None else
                                np.asarray(lab.label_map)[true_labels]) for lab in labs}
        q = quality.summary(torch.from_numpy(imgs),
                            torch.from_numpy(np.stack([np.asarray(im).transpose(2, 0, 1) for im in prot["img"]])))
        rep = labelfree.run({name: prot}, test, clean_train=train, labellings=labs, clean=state["clean"], **harness)
        state["results"].append({
            "name": name, "method": method, "params": {k: v for k, v in params.items()}, "key_purity": key_p,
            # what the bank was fitted with (a default of the day included), so a record read later
            # never takes a later default for this row's
            "bank_params": public_params(bank.method, bank.params),
            "n_clusters": bank.num_keys if bank.keying == "cluster" else None, "keying": bank.keying,
            "fit_seconds": round(fit_s, 1), "protect_seconds": round(protect_s, 1), "purity": pur,
            "target_hit_rate": bank.info.get("target_hit_rate"), "quality": q, "encoder": _encoder_identity(bank),
            "rows": [r.__dict__ for r in rep.rows]})
        save()
        for r in rep.rows:
            print(f"{name:>12} / {r.labelling:<6} {r.protected_accuracy:.3f} vs clean {r.clean_accuracy:.3f} = "
                  f"{r.ratio:.2f}x (floor {r.floor:.3f} = {r.floor_ratio:.2f}x; purity {pur[r.labelling]:.3f}; "
                  f"fit {fit_s:.0f} s)", flush=True)
    save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
