"""Finding every missing or corrupt image of a dataset before a long run, decoding in parallel."""
from __future__ import annotations

from typing import Optional

import torch

from .image_list import ImageList, read_image


class _Decode(torch.utils.data.Dataset):
    def __init__(self, images: ImageList) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> str:
        source = self.images.sources[i] if self.images.sources is not None else None
        try:
            read_image(self.images.path(i), self.images.mode, source)
        except (FileNotFoundError, ValueError) as err:  # CorruptImageError is a ValueError
            return str(err)
        return ""


def find_bad_images(images: ImageList, workers: Optional[int] = None, progress: bool = False) -> list[str]:
    """Decodes every image of `images` (with `workers` processes; default: one per CPU core) and
    returns one message per missing or undecodable file, in list order."""
    import os

    workers = max(0, (os.cpu_count() or 1)) if workers is None else workers
    if workers < 0:
        raise ValueError(f"--workers must be >= 0, got {workers}")
    loader = torch.utils.data.DataLoader(_Decode(images), batch_size=16, num_workers=workers, collate_fn=list,
                                         generator=torch.Generator())
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="decode", unit="batch", leave=False)
    return [msg for batch in loader for msg in batch if msg]
