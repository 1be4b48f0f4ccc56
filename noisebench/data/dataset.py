"""The loaded Dataset: flattened uint8 images and int64 labels as CPU tensors."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from noisebench.errors import DataError


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: flattened uint8 images and int64 labels, on the CPU.

    Each row of `*_x` holds `num_features` = channels·H·W bytes; RGB rows are channel-first,
    so `x.view(-1, channels, H, W)` gives the images back. `valid_x`/`valid_y` exist only for
    an image folder with a valid/ partition; the training engine does not use them.
    """

    name: str
    source: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    image_shape: tuple[int, int]
    class_names: tuple[str, ...]
    channels: int = 1
    valid_x: torch.Tensor | None = None
    valid_y: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.channels * self.image_shape[0] * self.image_shape[1]

    def fingerprint(self) -> str:
        """Short sha256 (16 hex chars) over the shapes, dtypes and bytes of the four tensors
        (six when a validation partition is present)."""
        digest = hashlib.sha256()
        tensors = [self.train_x, self.train_y, self.test_x, self.test_y]
        if self.valid_x is not None and self.valid_y is not None:
            tensors += [self.valid_x, self.valid_y]
        for tensor in tensors:
            array = tensor.detach().cpu().contiguous().numpy()
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()[:16]


def check_usable(ds: Dataset) -> Dataset:
    """`ds` itself if a classifier can train and be tested on it: every class has a training
    image and the test set is not empty; else one DataError line naming the source."""
    if len(ds.test_y) == 0:
        raise DataError(f"{ds.source}: the test set is empty")
    counts = torch.bincount(ds.train_y, minlength=ds.num_classes)[: ds.num_classes].tolist()
    missing = [name for name, count in zip(ds.class_names, counts, strict=True) if count == 0]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise DataError(
            f"{ds.source}: the training set has images of {ds.num_classes - len(missing)} of "
            f"the {ds.num_classes} classes (none of {shown}); every class needs at least one"
        )
    return ds
