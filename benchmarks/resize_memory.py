# Peak RSS of protecting one big image with a 10-class 32-px additive bank and size_mismatch="resize".
import resource, sys, numpy as np, torch
import uetransforms as ue
torch.set_num_threads(1)
side = int(sys.argv[1])
bank = ue.NoiseBank(method="random", kind="additive", keying="class", keys=np.arange(10),
                    tensors={"delta": np.random.default_rng(0).uniform(-8/255, 8/255, (10, 3, 32, 32)).astype(np.float32)},
                    params={"epsilon": 8/255}, info={"size_mismatch": "resize"})
from uetransforms.core.apply import Applier
img = np.zeros((3, side, side), np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
try:
    Applier(bank, size_mismatch="resize").protect([img], labels=[3])
    print(f"{side}x{side}: ok, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB (before {before:.2f} GB)")
except Exception as e:
    print(f"{side}x{side}: {type(e).__name__}: {e}")
