"""Benchmark: one GRPO training step, prresq (plain and shared-prefix rollouts) vs TRL's GRPOTrainer.

Each implementation runs in its own worker process (so each peak RSS is its own) on the same tiny
Qwen2.5-VL (`prresq.models.build_tiny_model`), fp32, `torch.set_num_threads(2)`, B images of
448x448 x K completions of exactly N new tokens (min_new_tokens = max_new_tokens), beta = 0.04,
AdamW (same lr, betas, eps, no weight decay), gradient clipping at 1.0, the same cheap reward, no
gradient checkpointing, one optimiser step per rollout (num_iterations = 1: no old-policy pass, in
prresq as in TRL). A step is, for every implementation:

    processor call (chat template + image preprocessing) -> generation -> decode + reward + group
    advantages -> reference log-probs -> policy log-probs -> loss -> backward -> clip -> AdamW step

prresq's step is `GRPOModule.training_step` written out with the same functions (`plain`:
`generate_completions` + `expand_inputs` + `completion_logprobs`; `shared`: `prresq.prefix`),
TRL's is a real `GRPOTrainer.train()` step (loss_type "grpo" = prresq's "sequence" aggregation,
`generation_kwargs={"min_new_tokens": N}`), timed by a callback from step begin to step end.
After one warm-up step per worker, the parent runs the timed steps round-robin (plain, shared,
TRL, plain, ...), so load on the machine affects all three alike, and prints the median step
time of each, the ratios, each worker's peak RSS and the split of a prresq step.

    .venv/bin/pip install -e .[bench]          # trl, accelerate, psutil
    .venv/bin/python experiments/bench/bench_grpo_step.py [--steps 5] [--images 4] [--k 6] [--new-tokens 128]
    .venv/bin/python experiments/bench/bench_grpo_step.py --only plain,shared   # without TRL
    python experiments/bench/bench_grpo_step.py --device cuda --model small --json out.json   # on a GPU

On CUDA each worker also reports its peak GPU memory (`torch.cuda.max_memory_allocated`, the
whole worker: both model copies, optimiser state, activations), and the split of a prresq step
is timed with a device synchronisation at the end of each part. `--model small` is a wider and
deeper text model (`MODEL_SIZES`), so that a GPU step is not all launch overhead.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROMPT = "Rate the quality of this image."
SIZE = 448
LR = 1e-6
BETA = 0.04
MAX_GRAD_NORM = 1.0
WORKERS = ("plain", "shared", "trl")
# TinySpec overrides: "tiny" is the embedded default; "small" has a 1024-wide, 8-layer text model
# (about 100 M parameters) and the same vision tower. The GPU kit trains this size too.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": {},
    "small": {
        "hidden_size": 1024,
        "intermediate_size": 2816,
        "num_hidden_layers": 8,
        "num_attention_heads": 16,
        "num_key_value_heads": 4,
    },
}


# ----------------------------------------------------------------------------- shared pieces
def cheap_reward(text: str) -> float:
    """A deterministic, fast, non-constant reward (the benchmark measures the step, not the reward)."""
    return (sum(map(ord, text)) % 97) / 96.0


def make_images(n: int, seed: int = 0) -> list[Any]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)) for _ in range(n)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_gpu_mib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else float("nan")


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write("@@" + json.dumps(payload) + "\n")
    sys.stdout.flush()


def wait_for_step() -> None:
    line = sys.stdin.readline()
    if line.strip() != "step":
        raise SystemExit(f"worker: unexpected command {line!r}")


# ----------------------------------------------------------------------------- prresq worker
def run_prresq(args: argparse.Namespace, shared: bool) -> None:
    import torch

    from prresq.loss import GRPOLoss
    from prresq.models import load_policy, load_processor, load_reference, vision_token_ids
    from prresq.prefix import completion_logprobs_shared, generate_completions_shared
    from prresq.rollout import VisionIds, completion_logprobs, expand_inputs, generate_completions
    from prresq.sampling import GenerationTokens, SamplingConfig
    from prresq.scoring import decode

    torch.manual_seed(0)
    device = torch.device(args.device)
    policy = load_policy(args.model_dir).to(device)
    reference = load_reference(policy).to(device)
    processor = load_processor(args.model_dir)
    tok = processor.tokenizer
    eos_ids = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    tokens = GenerationTokens(eos_ids, tok.pad_token_id, vision_token_ids(tok))
    ids = VisionIds.from_config(policy.config)
    loss_fn = GRPOLoss(beta=BETA, eps_low=0.2, eps_high=0.2, aggregation="sequence")
    opt = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    images = make_images(args.images * 2)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    k, n_new = args.k, args.new_tokens

    def logprobs(model: torch.nn.Module, inputs: dict, expanded: dict, completion: Any, mask: Any) -> Any:
        if shared:
            return completion_logprobs_shared(model, inputs, k, completion, mask)
        return completion_logprobs(model, expanded, completion, mask)

    emit({"ready": True, "rss_mb": rss_mb()})
    for step in range(args.steps + 1):
        wait_for_step()
        cpu0 = time.process_time()
        split: dict[str, float] = {}
        clock = _Clock(split)
        policy.train()
        with clock("collate"):
            batch = images[(step % 2) * args.images : (step % 2 + 1) * args.images]
            inputs = dict(processor(text=[text] * len(batch), images=batch, return_tensors="pt", padding=True))
            inputs = {key: v.to(device) for key, v in inputs.items()}
        with clock("generation"):
            gen = generate_completions_shared if shared else generate_completions
            sampling = SamplingConfig(temperature=1.0, max_new_tokens=n_new, min_new_tokens=n_new)
            completion, mask = gen(policy, inputs, k, tokens, sampling)
        with clock("reward"):
            rewards = torch.tensor([cheap_reward(t) for t in decode(processor, completion)], device=device).view(-1, k)
            adv = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).reshape(-1)
        with clock("logprobs"):
            expanded = None if shared else expand_inputs(inputs, k, ids)
            with torch.no_grad():
                ref_logp = logprobs(reference, inputs, expanded, completion, mask)
            logp = logprobs(policy, inputs, expanded, completion, mask)
        with clock("backward_optim"):
            opt.zero_grad(set_to_none=True)
            loss, _ = loss_fn(logp, adv, mask, old_logp=None, ref_logp=ref_logp)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), MAX_GRAD_NORM)
            opt.step()
        cpu = time.process_time() - cpu0
        emit({"time": sum(split.values()), "cpu": cpu, "split": split, "len": float(mask.sum(1).float().mean())})
    emit({"peak_rss_mb": peak_rss_mb(), "peak_gpu_mib": peak_gpu_mib()})


class _Clock:
    """`with clock(name):` adds the block's wall time to split[name]."""

    def __init__(self, split: dict[str, float]) -> None:
        self.split = split

    def __call__(self, name: str) -> _Clock:
        self.name = name
        return self

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        synchronize()
        self.split[self.name] = self.split.get(self.name, 0.0) + time.perf_counter() - self.t0


# ----------------------------------------------------------------------------- TRL worker
def run_trl(args: argparse.Namespace) -> None:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prresq.models import load_policy, load_processor

    torch.manual_seed(0)
    model = load_policy(args.model_dir)
    processor = load_processor(args.model_dir)
    n_prompts = args.images
    images = make_images(n_prompts * 2)
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": PROMPT}]] * len(images), "image": images})

    def reward(completions: list, **_: Any) -> list[float]:
        return [cheap_reward(c[0]["content"] if isinstance(c, list) else c) for c in completions]

    class Gate(TrainerCallback):
        """Run one step per parent command; report its wall time (step begin -> optimiser step done)."""

        def __init__(self) -> None:
            self.logs: dict[str, float] = {}

        def on_step_begin(self, *a: Any, **kw: Any) -> None:
            wait_for_step()
            self.t0, self.cpu0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *a: Any, **kw: Any) -> None:
            synchronize()
            self.dt, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.cpu0

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **kw: Any) -> None:
            if logs and "completions/mean_length" in logs:
                emit({"time": self.dt, "cpu": self.cpu, "len": float(logs["completions/mean_length"])})

    out_dir = tempfile.mkdtemp(prefix="bench_trl_")
    config = GRPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=n_prompts * args.k,
        gradient_accumulation_steps=1,
        num_generations=args.k,
        generation_batch_size=n_prompts * args.k,
        max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens},
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=BETA,
        loss_type="grpo",
        scale_rewards="group",
        num_iterations=1,
        learning_rate=LR,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        optim="adamw_torch",
        max_grad_norm=MAX_GRAD_NORM,
        max_steps=args.steps + 1,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        pad_to_multiple_of=None,
        use_cpu=args.device == "cpu",
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=processor
    )
    gate = Gate()
    trainer.add_callback(gate)
    emit({"ready": True, "rss_mb": rss_mb()})
    trainer.train()
    emit({"peak_rss_mb": peak_rss_mb(), "peak_gpu_mib": peak_gpu_mib()})


# ----------------------------------------------------------------------------- parent
class Worker:
    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        cmd = [sys.executable, __file__, "--worker", name, "--model-dir", str(args.model_dir)]
        cmd += ["--steps", str(args.steps), "--images", str(args.images), "--k", str(args.k)]
        cmd += ["--new-tokens", str(args.new_tokens), "--device", args.device]
        env = dict(os.environ, OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
        env["TRANSFORMERS_VERBOSITY"] = "error"
        self.log = open(Path(tempfile.gettempdir()) / f"bench_grpo_step_{name}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        self.ready = self.read()
        self.steps: list[dict[str, Any]] = []

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"{self.name} worker exited (rc={self.proc.wait()}); see {self.log.name}")

    def step(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self.read()

    def finish(self) -> tuple[float, float]:
        """(peak RSS MB, peak GPU MiB)."""
        last = self.read()
        self.proc.wait(timeout=120)
        self.log.close()
        return float(last["peak_rss_mb"]), float(last.get("peak_gpu_mib", float("nan")))


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per implementation (after 1 warm-up)")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--only", default=",".join(WORKERS), help="comma-separated subset of plain,shared,trl")
    parser.add_argument("--model", choices=sorted(MODEL_SIZES), default="tiny", help="model size (MODEL_SIZES)")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="default: .cache/<model>-<family>/<spec digest> (the folder model=tiny* uses)",
    )
    parser.add_argument(
        "--family", default=None, help="model family of the tiny model (prresq.models; default: its default)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    if args.worker:
        runners: dict[str, Callable[[], None]] = {
            "plain": lambda: run_prresq(args, shared=False),
            "shared": lambda: run_prresq(args, shared=True),
            "trl": lambda: run_trl(args),
        }
        runners[args.worker]()
        return

    from prresq.models import build_tiny_model, get_family, tiny_model_path

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False")
    family = get_family(args.family)
    default_dir = (
        f".cache/{args.model}-qwen2.5-vl" if family.name == "qwen2_5_vl" else f".cache/{args.model}-{family.name}"
    )
    spec = family.spec_class(**MODEL_SIZES[args.model])
    # the default folder is a tiny-model folder as `model=tiny*` uses it (one subfolder per spec digest), so the
    # bench and `make train` share it; an explicit --model-dir is the model folder itself
    model_dir = args.model_dir or tiny_model_path(default_dir, spec)
    args.model_dir = build_tiny_model(model_dir, spec, family=family.name)
    names = [n for n in WORKERS if n in args.only.split(",")]
    setting = (
        f"{args.model} {family.title}, {args.images} images {SIZE}x{SIZE} x K={args.k}, {args.new_tokens} new tokens "
        f"(min = max), beta={BETA}, fp32, {args.device}, AdamW lr={LR}; 1 warm-up + {args.steps} timed steps each, "
        f"interleaved"
    )
    print(f"GRPO step, {setting}", flush=True)
    t_start = time.perf_counter()
    workers: list[Worker] = []
    for name in names:  # one at a time: load + warm-up step, so set-ups do not compete for the CPU
        w = Worker(name, args)
        warm = w.step()
        print(f"  {name:6s} loaded ({w.ready['rss_mb']:.0f} MB RSS), warm-up step {warm['time']:.2f} s", flush=True)
        workers.append(w)
    for _ in range(args.steps):
        for w in workers:
            w.steps.append(w.step())
    finished = {w.name: w.finish() for w in workers}
    peaks = {name: rss for name, (rss, _) in finished.items()}
    gpu_peaks = {name: gpu for name, (_, gpu) in finished.items()}

    print(
        "\n| implementation | median step (s) | min step (s) | median CPU (s) | completion len "
        "| peak RSS (MB) | RSS after load (MB) | peak GPU memory (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    med, cpu = {}, {}
    for w in workers:
        times = [s["time"] for s in w.steps]
        med[w.name], cpu[w.name] = _median(times), _median([s["cpu"] for s in w.steps])
        lens = {round(s["len"], 1) for s in w.steps}
        print(
            f"| {w.name} | {med[w.name]:.2f} | {min(times):.2f} | {cpu[w.name]:.2f} "
            f"| {'/'.join(map(str, sorted(lens)))} | {peaks[w.name]:.0f} | {w.ready['rss_mb']:.0f} "
            f"| {gpu_peaks[w.name]:.0f} |"
        )
    print()
    pairs = [(n, "trl") for n in ("plain", "shared")] + [("shared", "plain")]
    for a, b in pairs:
        if a in med and b in med:
            print(
                f"{a} / {b}: step time {med[a] / med[b]:.2f}x, CPU time {cpu[a] / cpu[b]:.2f}x, "
                f"peak RSS {peaks[a] / peaks[b]:.2f}x"
            )
    parts = ("collate", "generation", "reward", "logprobs", "backward_optim")
    rows = [w for w in workers if w.name != "trl"]
    if rows:
        print("\nSplit of a prresq step (median seconds; logprobs = reference pass + policy forward):")
        print("| implementation | " + " | ".join(parts) + " |")
        print("|---|" + "---|" * len(parts))
        for w in rows:
            cells = [f"{_median([s['split'][p] for s in w.steps]):.2f}" for p in parts]
            print(f"| {w.name} | " + " | ".join(cells) + " |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        results = {
            w.name: {
                "median_step_s": med[w.name],
                "min_step_s": min(s["time"] for s in w.steps),
                "peak_rss_mb": peaks[w.name],
                "peak_gpu_mib": gpu_peaks[w.name],
                "completion_len": sorted({round(s["len"], 1) for s in w.steps}),
            }
            for w in workers
        }
        from prresq import strict_json

        # strict JSON: a CPU run's peak GPU memory (NaN) is null
        args.json.write_text(strict_json.dumps({"setting": setting, "workers": results}))


if __name__ == "__main__":
    main()
