# Measures the content test of double protection (issue 23): uetransforms.core.kernels.carried_score / carried
# on CIFAR-10 test images. Usage: PYTHONPATH=. python benchmarks/double_protection_content_test.py N_IMAGES N_BANKS(1-3)
# The rule as shipped (kernels.carried) on CIFAR-10 test images, through the real Applier.
import numpy as np, torch, datasets, uetransforms as ue, sys, time
from uetransforms.core.apply import Applier
from uetransforms.core.kernels import carried, carried_score
torch.set_num_threads(1)
N = int(sys.argv[1])
tr = datasets.Dataset.from_parquet("/work/shared/data/cifar10/train-00000-of-00001.parquet")
te = datasets.Dataset.from_parquet("/work/shared/data/cifar10/test-00000-of-00001.parquet")
fitset = tr.select(range(2000)); sub = te.select(range(N))
x = torch.from_numpy(np.stack([np.asarray(im) for im in sub["img"]])).permute(0, 3, 1, 2).contiguous()
y = np.asarray(sub["label"])
for m, kw in [("random", {}), ("lsp", {}), ("lsp", {"patch_size": 4})][:int(sys.argv[2])]:
    bank = ue.fit(m, fitset, image_column="img", label_column="label", seed=1, **kw)
    other = ue.fit(m, fitset, image_column="img", label_column="label", seed=2, **kw)
    app = Applier(bank)
    def scores(imgs, labels):
        rows, _ = app.rows_and_seeds(imgs, labels)
        return carried_score(imgs, app.sized_rows("delta", rows, (32, 32), mode="bilinear")).numpy()
    s_clean = np.concatenate([scores(x, [(int(l) + k) % 10 for l in y]) for k in range(10)])  # every row
    s_prot = scores(ue.apply(bank, x, list(y)), list(y))
    s_other = scores(ue.apply(other, x, list(y)), list(y))
    print(f"== {m} {kw} eps={bank.params['epsilon']:.4f} ({N} CIFAR-10 test images; clean scored against all 10 rows)")
    for n in (1, 16, 256):
        def rate(s):
            k = len(s) // n
            return sum(carried(s[i * n:(i + 1) * n]) for i in range(k)), k
        a, b = rate(s_clean); c, d = rate(s_other); e, f = rate(s_prot)
        print(f"  batches of {n:3d}: refused clean {a}/{b}, protected-by-another-seed {c}/{d}; missed protected {f - e}/{f}")
z = torch.zeros(256, 3, 32, 32); x256 = x[:256].contiguous()
t = time.perf_counter()
for _ in range(20):
    carried_score(x256, z)
print(f"carried_score: {(time.perf_counter() - t) / 20 / 256 * 1e6:.1f} us per 32-px image (1 thread)")
xb = torch.randint(0, 255, (16, 3, 384, 384), dtype=torch.uint8)
zb = torch.zeros(16, 3, 384, 384)
t = time.perf_counter()
for _ in range(20):
    carried_score(xb, zb)
print(f"carried_score: {(time.perf_counter() - t) / 20 / 16 * 1e6:.1f} us per 384-px image (1 thread, 64-px crop)")
