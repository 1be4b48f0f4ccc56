"""The pack trainer: many runs of one architecture trained as one stacked MLP.

Parameters carry a leading run dimension [R, ...]; each step is a handful of batched matmuls
and one optimizer update for all runs. Every run draws its initialisation, data order, label
noise and pixel noise from its own generators, so its numbers do not depend on its pack.

What a step costs, and why it is written this way (bench/PERFORMANCE.md has the profiles):
- The backward pass and the optimizer are written out by hand (no autograd): the weight
  gradient of each layer is accumulated straight into the SGD momentum buffer by one
  `baddbmm_` (beta = momentum), then the weights take one `add_`. That is the least memory
  traffic over the [R, 784, 128] first layer, which dominates everything but the matmuls.
- Images stay uint8 until the batch is gathered; the 1/255 scaling is folded into the first
  layer's matmuls (`alpha`), so pixels are never rescaled.
- Pixel noise costs one 16-bit draw and one table lookup per pixel (see noise/pixels.py);
  runs are ordered so that noisy runs are contiguous slices.
- Logits are computed transposed, [R, C, b]: softmax over a short middle axis is ~20x faster
  on CPU than over a short last axis. Scratch tensors are reused across steps.
- Evaluation runs the whole pack at once: the shared test images are a stride-0 batch
  (never copied per run), and shards evaluate in parallel.
- On a CPU with T threads the pack is cut into min(R, T) shards of whole runs, each trained by
  its own Python thread with single-threaded ops (torch releases the GIL inside ops). No op
  then waits at an OpenMP barrier for a thread that another process has taken off its core:
  on a shared 2-core machine this is ~3x faster than 2-thread ops under load, and as fast
  when idle. Every other op of a pack (building it, measuring it) is single-threaded too,
  whatever the thread count or NOISEBENCH_SHARDS: a run's numbers are then bit-identical in
  every process and whatever its pack (alone, or in a pack of any size or shard count), and
  checkpoints resume across them.
- Every batched matmul writes into a tensor whose runs' slabs are 64-byte aligned with a gap
  after each (model.stacked_empty): MKL's result depends on its output's alignment, and on
  whether torch calls one batched gemm or one gemm per run. So torch multiplies run by run,
  each run the same gemm into the same alignment as alone, whatever the batch shape (a
  last batch of one, an odd validation set) and the run's place in its shard.
- The model and training options (ModelSpec.batchnorm, dropout, loss; TrainSpec.schedule) are
  branches off this path, by hand as well (norm.py, backward.py, optimizer.py); when they are
  off, a step runs exactly the operations it ran before they existed.

Modules, in the order data flows: trainset (what each run trains on: hold-out, balanced
subset, its labels), inputs (each step's batch, pixel noise applied), model (the stacked MLP
and its evaluation), norm (batchnorm), backward (the losses and the backward pass), methods
(which loss each run trains with: study.Method, the remedies for label noise), optimizer
(SGD, Adam, schedules), trainer (one shard's step: forward, loss gradient, backward, update),
threads (shards), metrics (calibration, robustness, label issues, memorisation of a trained
pack), measure (what is measured when, per epoch and after training), stopping (early
stopping, accuracy targets), pack (build, epochs, checkpoints), timing (for bench/),
label_issues (cleanlab on a run's predicted probabilities, scored against the true labels).
"""

from .model import BYTE, StackedMLP, evaluate, parameter_count
from .pack import CHECKPOINT_FORMAT, RunResult, train_pack
from .threads import shard_count
from .timing import PackTiming, time_pack

__all__ = [
    "BYTE",
    "CHECKPOINT_FORMAT",
    "PackTiming",
    "RunResult",
    "StackedMLP",
    "evaluate",
    "parameter_count",
    "shard_count",
    "time_pack",
    "train_pack",
]
