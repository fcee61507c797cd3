"""What makes a resumed run bit-identical to an uninterrupted one.

Two gaps in the stock ``Trainer`` (transformers 5.x) break exact resume:

- the length-grouped sampler draws its permutation from the *global* torch RNG when an epoch
  starts, so a run resumed inside epoch 2 shuffles epoch 2 from a different RNG state than the
  straight run did. :class:`EpochSeededSampler` makes each epoch's order a function of
  ``(seed, epoch)`` only (what accelerate's seedable sampler does for plain random sampling);
- a ``KeyboardInterrupt`` can land in the middle of the next step's forward pass, after dropout
  has already drawn from the RNG, so the checkpoint written afterwards would carry a later RNG
  state than the step it records. :class:`RngSnapshot` keeps the RNG state as of the end of the
  last finished step, and the interrupt path restores it before saving.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler


class EpochSeededSampler(Sampler):
    """A length-grouped sampler whose order depends on ``(seed, epoch)``, not on global RNG."""

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner = inner
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate / the Trainer each epoch
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Any:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(
            get_length_grouped_indices(self.inner.lengths, self.inner.batch_size, generator=gen)
        )


def install_seeded_sampler(trainer: Any, seed: int) -> None:
    """Wrap the Trainer's length-grouped samplers (per instance: a user's Trainer subclass
    keeps its own ``_get_train_sampler``).

    Training batches get :class:`EpochSeededSampler`. Evaluation runs in the eval set's own
    order: the engine sorted it by length (less padding than length-grouped batches), and the
    task can then tell which row each prediction belongs to (the example predictions).
    """
    from torch.utils.data import SequentialSampler
    from transformers.trainer_pt_utils import LengthGroupedSampler

    original = trainer._get_train_sampler
    original_eval = trainer._get_eval_sampler

    def get_train_sampler(train_dataset: Any = None) -> Any:
        sampler = original(train_dataset)
        if type(sampler) is LengthGroupedSampler and sampler.generator is None:
            return EpochSeededSampler(sampler, seed)
        return sampler

    def get_eval_sampler(eval_dataset: Any) -> Any:
        sampler = original_eval(eval_dataset)
        if type(sampler) is LengthGroupedSampler:
            return SequentialSampler(eval_dataset)
        return sampler

    trainer._get_train_sampler = get_train_sampler
    trainer._get_eval_sampler = get_eval_sampler


class RngSnapshot:
    """The RNG states (python, numpy, torch CPU and CUDA) as of the end of a training step."""

    def __init__(self) -> None:
        self.step: int | None = None
        self._states: dict[str, Any] = {}

    def take(self, step: int) -> None:
        self.step = step
        self._states = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self._states["cuda"] = torch.cuda.get_rng_state_all()

    def restore(self, step: int) -> bool:
        """Put the states back if they belong to ``step``; False when there is none."""
        if self.step != step or not self._states:
            return False
        random.setstate(self._states["python"])
        np.random.set_state(self._states["numpy"])
        torch.random.set_rng_state(self._states["cpu"])
        if "cuda" in self._states:
            torch.cuda.set_rng_state_all(self._states["cuda"])
        return True
