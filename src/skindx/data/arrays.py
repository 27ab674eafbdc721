"""Resize images once into memory-mappable uint8 arrays, so training never decodes a JPEG.

Each split becomes one `.npy` file of shape (N, S, S, 3), written through `open_memmap` (the
full array never has to fit in memory) and read back with `np.load(path, mmap_mode="r")`.
Every image goes through `resize_to_contract`, the same function serving uses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from skindx.data.errors import DataError
from skindx.inference.images import apply_exif_orientation
from skindx.inference.preprocessing import PreprocessingContract, apply_draft, resize_to_contract


def load_resized(
    path: Path,
    contract: PreprocessingContract,
    transform: Callable[[Image.Image], Image.Image] | None = None,
) -> np.ndarray:
    """One image file as the contract's uint8 (S, S, 3). `transform`: applied to the decoded,
    upright image before the contract (skindx.evaluation.shift's colour cast)."""
    try:
        with Image.open(path) as image:
            apply_draft(image, contract)  # the contract's JPEG draft decode, as serving does
            # as serving does (skindx.inference.images): train on the orientation it will see
            upright = apply_exif_orientation(image)
            return resize_to_contract(
                upright if transform is None else transform(upright), contract
            )
    except OSError as exc:  # validation checks decoding; this guards a changed file
        raise DataError(f"cannot decode {path}: {exc} (run the validate stage)") from exc


def write_image_array(
    paths: Sequence[Path],
    contract: PreprocessingContract,
    out_path: Path,
    *,
    workers: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> Path:
    """Resize `paths` in order into a uint8 (N, S, S, 3) `.npy` at `out_path`."""
    size = contract.input_size
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    array = np.lib.format.open_memmap(
        out_path, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)
    )
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    # PIL releases the GIL while decoding and resizing, so threads use every core.
    with ThreadPoolExecutor(workers) as pool:
        resized = pool.map(lambda p: load_resized(Path(p), contract), paths)
        for i, pixels in enumerate(
            tqdm(
                resized,
                total=len(paths),
                desc=desc or f"resize {out_path.stem}",
                unit="img",
                disable=not progress,
                mininterval=1.0,
            )
        ):
            array[i] = pixels
    array.flush()
    del array
    return out_path
