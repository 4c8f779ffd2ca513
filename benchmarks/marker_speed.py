# map(Protect) on 5000 CIFAR-10 train images (32 px), random bank eps 8/255, batch 256, 1 thread; best of 3.
import time, datasets, numpy as np, torch, uetransforms as ue, sys
torch.set_num_threads(1)
datasets.disable_caching(); datasets.disable_progress_bars()
ds = datasets.Dataset.from_parquet("/work/shared/data/cifar10/train-00000-of-00001.parquet").select(range(5000))
bank = ue.fit("random", ds.select(range(500)), image_column="img", label_column="label", seed=1)
best = 1e9
for _ in range(3):
    t = time.perf_counter()
    ds.map(ue.Protect(bank, image_column="img", threads=1), batched=True, batch_size=256)
    best = min(best, time.perf_counter() - t)
print(f"{sys.argv[1]}: {best / len(ds) * 1e6:.1f} us per image (best of 3)")
