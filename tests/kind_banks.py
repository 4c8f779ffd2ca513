"""Every bank kind on mixed image sizes, and the reference they are checked against.

Shared by the Protect, publish and Ray tests (tests/ is on sys.path through its conftest): the
key rule and the kernels written out one image at a time, not through the Applier.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from datasets import ClassLabel, Dataset, Features, Image, Value

from uetransforms.core import kernels
from uetransforms.core.bank import NoiseBank
from uetransforms.core.images import content_id

EPS = 8 / 255
H, W = 8, 8  # the class banks' own size; the mixed-size images below are resized to it


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(buf, format=fmt)
    return buf.getvalue()


def class_bank(channels=3, keys=(0, 1, 2), seed=0) -> NoiseBank:
    rng = np.random.default_rng(seed)
    delta = rng.uniform(-EPS, EPS, (len(keys), channels, H, W)).astype("float32")
    return NoiseBank(method="random", kind="additive", keying="class", keys=list(keys),
                     tensors={"delta": delta}, params={"epsilon": EPS, "norm": "linf"})

SIZES = [(8, 8), (6, 10), (8, 8), (8, 8), (6, 10), (9, 7), (8, 8)]


def _kind_banks() -> dict[str, NoiseBank]:
    rng = np.random.default_rng(5)
    resize = {"size_mismatch": "resize"}
    uids = [f"id-{i:03d}" for i in range(len(SIZES))]
    return {
        "additive-class": class_bank().replace(info=resize),
        "additive-cluster": NoiseBank(
            method="clusters", kind="additive", keying="cluster", keys=[0, 1, 2], info=resize,
            tensors={"delta": rng.uniform(-EPS, EPS, (3, 3, H, W)).astype("float32"),
                     "centroid": np.eye(3, dtype=np.float32)}),
        "additive-sample": NoiseBank(
            method="em", kind="additive", keying="sample", keys=uids, info=resize,
            tensors={"delta": rng.uniform(-EPS, EPS, (len(uids), 3, H, W)).astype("float32")}),
        "conv-class": NoiseBank(method="cuda", kind="conv", keying="class", keys=[0, 1, 2], image_shape=(3, H, W),
                                tensors={"weight": rng.uniform(0, 1, (3, 3, 3, 3)).astype("float32")}),
        "pixel-class": NoiseBank(method="ops", kind="pixel", keying="class", keys=[0, 1, 2], info=resize,
                                 tensors={"mask": rng.uniform(size=(3, 1, H, W)) < 0.3,
                                          "value": rng.integers(0, 256, (3, 3, H, W), dtype=np.uint8)}),
        "convadd-class": NoiseBank(method="cudatap", kind="convadd", keying="class", keys=[0, 1, 2], info=resize,
                                   tensors={"weight": rng.uniform(0, 1, (3, 3, 3, 3)).astype("float32"),
                                            "delta": rng.uniform(-EPS, EPS, (3, 3, H, W)).astype("float32")}),
        "synth-class": NoiseBank(method="ar", kind="synth", keying="class", keys=[0, 1, 2], image_shape=(3, H, W),
                                 info=resize, params={"synth": "ar", "epsilon": 1.0, "norm": "l2", "salt": 9},
                                 tensors={"coef": (lambda a: (a / np.abs(a).sum(-1, keepdims=True) * 0.9))(
                                     rng.uniform(-1, 1, (3, 3, 8))).astype("float32")}),
    }


KIND_BANKS = list(_kind_banks())


def mixed_ds() -> Dataset:
    rng = np.random.default_rng(8)
    n = len(SIZES)
    return Dataset.from_dict(
        {"image": [{"bytes": _encode(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "PNG"), "path": None}
                   for h, w in SIZES],
         "label": [i % 3 for i in range(n)], "cluster": [(2 * i + 1) % 3 for i in range(n)],
         "uid": [f"id-{i:03d}" for i in range(n)]},
        features=Features({"image": Image(), "label": ClassLabel(num_classes=3), "cluster": Value("int64"),
                           "uid": Value("string")}))


def reference_kernel(bank: NoiseBank, hwc: np.ndarray, *, label: int, cluster: int, uid: str) -> np.ndarray:
    """One image through the primitive kernels, with the key rule written out (not the Applier)."""
    import torch
    import torch.nn.functional as F

    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    x = torch.from_numpy(chw[None].copy())
    key = {"class": label, "cluster": cluster, "sample": uid}[bank.keying]
    row = list(bank.keys).index(key)
    hw = chw.shape[1:]

    def sized(t, mode):
        if tuple(t.shape[-2:]) == hw:
            return t
        kw = {} if mode == "nearest" else {"align_corners": False}
        return F.interpolate(t.to(torch.float32), size=hw, mode=mode, **kw).to(t.dtype)

    if bank.kind == "additive":
        d = torch.from_numpy(bank.tensors["delta"][row : row + 1].astype(np.float32)).mul_(255)
        out = kernels.add_delta(x, sized(d, "bilinear"))
    elif bank.kind == "conv":
        out = kernels.convolve(x, torch.from_numpy(bank.tensors["weight"][row : row + 1].copy()))
    elif bank.kind == "convadd":  # the conv kind's filter, then the additive kind's delta on its uint8 output
        filtered = kernels.convolve(x, torch.from_numpy(bank.tensors["weight"][row : row + 1].copy()))
        d = torch.from_numpy(bank.tensors["delta"][row : row + 1].astype(np.float32)).mul_(255)
        out = kernels.add_delta(filtered, sized(d, "bilinear"))
    elif bank.kind == "pixel":
        mask = sized(torch.from_numpy(bank.tensors["mask"][row : row + 1].copy()), "nearest")
        value = sized(torch.from_numpy(bank.tensors["value"][row : row + 1].copy()), "nearest")
        out = kernels.blend_pixels(x, mask, value)
    else:
        seed = kernels.sample_seed(bank.params["salt"], content_id(chw))
        delta = kernels.synth_ar(bank.tensors["coef"][row : row + 1], [seed], bank.image_shape,
                             epsilon=bank.params["epsilon"], norm=bank.params["norm"])
        out = kernels.add_delta(x, sized(torch.from_numpy(delta).mul_(255), "bilinear"))
    return out[0].numpy().transpose(1, 2, 0)


def _options(name: str) -> dict:
    return {"additive-cluster": {"label_column": "cluster"}, "additive-sample": {"id_column": "uid"}}.get(name, {})


def _want(bank: NoiseBank, src: Dataset) -> list[np.ndarray]:
    return [reference_kernel(bank, np.asarray(im), label=lab, cluster=cl, uid=uid)
            for im, lab, cl, uid in zip(src["image"], src["label"], src["cluster"], src["uid"])]
