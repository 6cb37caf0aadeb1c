"""Old import path of the shared-prefix functions: they live in `prresq.engine.shared`."""

from prresq.engine.shared import completion_logprobs_shared, generate_completions_shared, micro_batches

__all__ = ["completion_logprobs_shared", "generate_completions_shared", "micro_batches"]
