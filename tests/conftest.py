"""Suite-wide settings: one intra-op torch thread per test process.

The suite runs with one pytest worker per core (`make test`), and its tensors are small, so
extra intra-op threads only contend for the same cores.
"""

import torch

torch.set_num_threads(1)
