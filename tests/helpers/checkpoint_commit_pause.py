"""`python checkpoint_commit_pause.py CKPT MARKER [default]`: a real Trainer writes CKPT and pauses at the rename.

The rename (`os.replace`, and fsspec's `shutil.move` for Lightning's default writer) touches MARKER and
sleeps, so a test can kill -9 the process exactly while a checkpoint is being committed.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import lightning as L
import torch

from prresq.checkpointing import LocalCheckpointIO


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(256, 256)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def pause(*args, **kwargs):
    Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(600)


if __name__ == "__main__":
    ckpt = Path(sys.argv[1])
    plugins = None if sys.argv[3:] == ["default"] else [LocalCheckpointIO()]
    trainer = L.Trainer(
        max_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=ckpt.parent,
        plugins=plugins,
    )
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 256)), batch_size=2)
    trainer.fit(Tiny(), data)
    os.replace = shutil.move = pause
    trainer.save_checkpoint(ckpt)
