"""Benchmark: one GRPO step with a LoRA policy vs full fine-tuning (beta 0.04), tiny and a wider "small" model.

Each configuration runs in its own worker process, so each peak RSS (`getrusage(RUSAGE_SELF).ru_maxrss`,
imports included) is its own. A worker builds the real `GRPOModule` (full fine-tune: policy + frozen
reference copy; LoRA: policy with adapters, the reference = adapters disabled), then runs the step of
`GRPOModule.training_step` with its own functions: rollout (shared-prefix generation, rewards, reference
log-probs) -> policy log-probs -> loss -> backward -> clip -> AdamW on the trainable parameters.
One warm-up step, then `--steps` timed steps; the median is reported.

    python experiments/bench/bench_lora.py                          # tiny + small, full + lora, 3 steps
    python experiments/bench/bench_lora.py --sizes tiny --steps 5
    python experiments/bench/bench_lora.py --out experiments/results/lora   # also write bench.{json,md}

Settings: B = 4 images of 112x112 x K = 4 completions of exactly 24 new tokens, fp32, one thread,
lr 1e-4, `model.lora={r: 16}` (defaults: attention + MLP projections of the language model, vision frozen).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# Sizes of the model written by prresq.models.build_tiny_model (TinySpec fields).
SIZES: dict[str, dict[str, int]] = {
    "tiny": {},  # TinySpec defaults: hidden 128, 2 layers (~1.3 M parameters)
    "small": dict(
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        vision_hidden_size=256,
        vision_intermediate_size=512,
    ),
}
MODES = ("full", "lora")
B, K, NEW_TOKENS, IMAGE = 4, 4, 24, 112


def rss_mib() -> float:
    """Peak RSS of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def current_rss_mib() -> float:
    """Resident set size now (MiB), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def build_module(model_dir: Path, mode: str, cache: Path) -> Any:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from prresq.module import GRPOModule

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=tiny_synthetic",
                f"grpo.k={K}",
                f"grpo.max_new_tokens={NEW_TOKENS}",
                f"grpo.min_new_tokens={NEW_TOKENS}",
                "loss.beta=0.04",
                "optim.lr=1e-4",
            ],
        )
    with open_dict(cfg):
        cfg.paths.root_dir = cfg.paths.output_dir = str(cache)
        cfg.model.name_or_path = str(model_dir)
        cfg.model.tiny = None
        cfg.model.lora = {"r": 16} if mode == "lora" else None
    plain = OmegaConf.to_container(cfg, resolve=True)
    return GRPOModule(**{k: plain[k] for k in ("model", "grpo", "loss", "reward", "optim", "lr_scheduler", "scoring")})


def make_batch(processor: Any, seed: int) -> dict[str, Any]:
    import numpy as np
    import torch
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8)) for _ in range(B)]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rate the quality."}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text] * B, images=images, return_tensors="pt", padding=True)
    return {
        "model_inputs": dict(inputs),
        "mos": torch.tensor(rng.uniform(1, 5, B), dtype=torch.float32),
        "dataset_ids": torch.zeros(B, dtype=torch.long),
    }


def grpo_step(module: Any, opt: Any, batch: dict[str, Any]) -> None:
    """`GRPOModule.training_step` without Lightning (num_iterations = 1)."""
    import torch

    ro = module.rollout(batch)
    n = ro.completion.shape[0]
    opt.zero_grad(set_to_none=True)
    for ps, sl in module.engine.micro_batches(n):
        logp = module.engine.logprobs(module.policy, ro.inputs, (ps, sl), ro.completion, ro.mask)
        loss, _ = module.loss_fn(logp, ro.advantages[sl], ro.mask[sl], ref_logp=ro.ref_logp[sl])
        (loss * (sl.stop - sl.start) / n).backward()
    params = [p for p in module.policy.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def worker(size: str, mode: str, steps: int, cache: Path) -> dict[str, Any]:
    import torch

    import prresq.module  # noqa: F401  (imports counted in the baseline)
    from prresq.lora import trainable_parameters
    from prresq.models import TinySpec, build_tiny_model

    torch.set_num_threads(1)
    model_dir = build_tiny_model(cache / f"model-{size}", TinySpec(**SIZES[size]))  # written by the parent
    rss_imports = rss_mib()
    torch.manual_seed(0)
    module = build_module(model_dir, mode, cache)
    rss_loaded = current_rss_mib()  # policy (+ reference copy) in memory, before any step
    opt = torch.optim.AdamW([p for p in module.policy.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(module.processor, 0)
    grpo_step(module, opt, batch)  # warm-up (also allocates the optimiser state)
    times = []
    for i in range(steps):
        batch = make_batch(module.processor, i + 1)
        start = time.perf_counter()
        grpo_step(module, opt, batch)
        times.append(time.perf_counter() - start)
    trainable, total = trainable_parameters(module.policy)
    copies = 0 if module.reference is None else sum(p.numel() for p in module.reference.parameters())
    return {
        "size": size,
        "mode": mode,
        "step_s_median": statistics.median(times),
        "step_s": times,
        "peak_rss_mib": rss_mib(),
        "rss_after_imports_mib": rss_imports,
        "rss_loaded_mib": rss_loaded,
        "rss_after_steps_mib": current_rss_mib(),
        "params_total": total,
        "params_trainable": trainable,
        "reference_copy_params": copies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "bench_lora"))
    parser.add_argument("--out", default=None, help="directory for bench.json and bench.md")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # "size:mode"
    args = parser.parse_args()
    cache = Path(args.cache)
    if args.worker:
        size, mode = args.worker.split(":")
        print(json.dumps(worker(size, mode, args.steps, cache)), flush=True)
        return
    from prresq.models import TinySpec, build_tiny_model

    load = os.getloadavg()[0]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    rows = []
    for size in args.sizes.split(","):
        build_tiny_model(cache / f"model-{size}", TinySpec(**SIZES[size]))
        for mode in MODES:
            cmd = [sys.executable, __file__, "--worker", f"{size}:{mode}", "--steps", str(args.steps)]
            proc = subprocess.run([*cmd, "--cache", str(cache)], env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"worker {size}:{mode} failed:\n{proc.stderr[-4000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(
                f"{size:>5} {mode:>4}: {rows[-1]['step_s_median']:.2f} s/step, peak RSS {rows[-1]['peak_rss_mib']:.0f} MiB"
            )
    lines = [
        "| model | policy | params | trainable | reference copy | step (s, median) | peak RSS (MiB) "
        "| RSS above imports (MiB) | RSS loaded / after steps (MiB) | LoRA / full peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        full = next(r for r in rows if r["size"] == row["size"] and r["mode"] == "full")
        ratio = row["peak_rss_mib"] / full["peak_rss_mib"]
        lines.append(
            f"| {row['size']} | {row['mode']} | {row['params_total'] / 1e6:.2f} M | {row['params_trainable'] / 1e6:.3f} M "
            f"| {row['reference_copy_params'] / 1e6:.2f} M | {row['step_s_median']:.2f} | {row['peak_rss_mib']:.0f} "
            f"| {row['peak_rss_mib'] - row['rss_after_imports_mib']:.0f} "
            f"| {row['rss_loaded_mib']:.0f} / {row['rss_after_steps_mib']:.0f} | {ratio:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        settings = {"B": B, "K": K, "new_tokens": NEW_TOKENS, "image": IMAGE, "steps": args.steps, "beta": 0.04}
        (out / "bench.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
        (out / "bench.md").write_text(
            f"`python experiments/bench/bench_lora.py --out {args.out} --steps {args.steps}` "
            f"(load average at start: {load:.1f})\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
