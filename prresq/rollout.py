"""`Rollout`: the record of one rollout batch that the GRPO update and the step's logs read.

Generation and log-probs live in `prresq.engine` (batch rows, plain, shared prefix); the names below
are re-exported from there for old imports.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from prresq.engine.plain import (
    completion_logprobs,
    completion_mask,
    gathered_parameters,
    generate_completions,
    generation_mode,
    split_completions,
)
from prresq.engine.rows import TOKEN_KEYS, VisionIds, expand_inputs, slice_inputs

__all__ = [
    "TOKEN_KEYS",
    "Rollout",
    "VisionIds",
    "completion_logprobs",
    "completion_mask",
    "expand_inputs",
    "gathered_parameters",
    "generate_completions",
    "generation_mode",
    "slice_inputs",
    "split_completions",
]


@dataclass
class Rollout:
    """One rollout batch of B prompts x K completions: what the policy update and the step's logs read.

    Completion rows i*K .. i*K+K-1 belong to prompt i. `inputs` holds the prompt rows the log-prob passes
    score: B rows on the shared-prefix path, B*K (each prompt repeated K times) on the plain path.
    """

    inputs: dict[str, Tensor]  # processor batch of the prompts (B or B*K rows, see above)
    completion: Tensor  # [B*K, T] sampled token ids, padding after the first EOS
    mask: Tensor  # [B*K, T] 1 on completion tokens up to and including the first EOS
    texts: list[str]  # [B*K] decoded completions
    scores: Tensor  # [B, K] parsed scores, NaN where an answer does not parse
    mos: Tensor  # [B] the MOS the rewards compared with (permuted under grpo.shuffle_mos)
    total: Tensor  # [B, K] weighted reward sum (VisualQuality-R1 Eq. 1-3, the reward mix)
    terms: dict[str, Tensor]  # {term: [B, K]} each reward term before weighting
    advantages: Tensor  # [B*K] group-standardised rewards (Eq. 4)
    old_logp: Tensor | None  # [B*K, T] policy log-probs at sampling time; None when num_iterations = 1
    ref_logp: Tensor | None  # [B*K, T] reference log-probs; None when beta = 0
