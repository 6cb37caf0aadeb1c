"""The anchors' training protocol (issue 22, items 2-4): the released KADID-10K split through the adapter
and the recipes' data module, the released MOS scaling (`mos_scaling: observed`) and each paper recipe's
batch geometry against its released launch script."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import compose_config
from hydra.utils import instantiate

from prresq.data.benchmarks import load_benchmark
from prresq.data.mirrors import generate_mirrors
from prresq.data.records import load_dataset
from prresq.data.sampler import SingleDatasetBatchSampler

KADID = Path(__file__).parent / "fixtures" / "benchmarks" / "kadid10k"
RELEASED_TEST_REFS = {f"I{i}.png" for i in (19, 29, 30, 34, 37, 38, 43, 50, 64, 71, 72, 73, 74, 78, 80, 81)}


def _real_kadid(tmp_path: Path) -> Path:
    """dmos.csv with KADID-10K's 10125 real names (81 references x 25 types x 5 levels), MOS from 1.00 to
    4.93 as in the release, one tiny image hard-linked under every name."""
    root = tmp_path / "kadid10k"
    (root / "images").mkdir(parents=True)
    src = KADID / "images" / "I01_01_01.png"
    rows = ["dist_img,ref_img,dmos,var"]
    for r in range(1, 82):
        for t in range(1, 26):
            for level in range(1, 6):
                name = f"I{r:02d}_{t:02d}_{level:02d}.png"
                (root / "images" / name).hardlink_to(src)
                mos = 4.93 if (r, t, level) == (81, 25, 5) else 1 + (r * 7 + t * 3 + level) % 39 / 10
                rows.append(f"{name},I{r:02d}.png,{mos:.2f},0.5")
    (root / "dmos.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def real_kadid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _real_kadid(tmp_path_factory.mktemp("real"))


def test_released_split_counts_through_the_adapter_and_the_recipes_data_module(real_kadid):
    """`benchmark: kadid10k` and `data: kadid` give exactly the released 6125 / 2000 / 2000 images (the
    project's seed-42 split by reference gave other references); the seed split stays an option."""
    counts = {s: len(load_benchmark("kadid10k", real_kadid, split=s)) for s in ("train", "val", "test")}
    assert counts == {"train": 6125, "val": 2000, "test": 2000}
    test_refs = {it.reference for it in load_benchmark("kadid10k", real_kadid, split="test").items}
    assert test_refs == RELEASED_TEST_REFS
    seeded = load_benchmark("kadid10k", real_kadid, split="test", split_source="reference_seed")
    assert len({it.reference for it in seeded.items}) == 16 and {it.reference for it in seeded.items} != test_refs
    cfg = compose_config("train", ["data=kadid", "+benchmark=[kadid10k]"], data_dir=real_kadid.parent)
    dm = instantiate(cfg.data, _recursive_=False)
    dm.setup()
    assert {s: len(dm.datasets[s]) for s in ("train", "val", "test")} == counts
    assert {r.id for r in dm.datasets["test"].records} == {
        it.id for it in load_benchmark("kadid10k", real_kadid, split="test").items
    }
    eval_bench = load_benchmark(
        "kadid10k", real_kadid, split=cfg.benchmark.kadid10k.split, **cfg.benchmark.kadid10k.options
    )
    assert len(eval_bench) == 2000


def test_observed_scaling_is_the_released_normalised_mos(tmp_path):
    """make_data.py maps MOS by the min and max of the whole label file: KADID-10K's 1.0 and 4.93 make
    4.57 -> 4.633587786259543 (the first row of KADID-10K_normalized_mos.txt), on every split; `fixed`
    keeps the native 1-5 range (4.57 stays 4.57)."""
    root = tmp_path / "kadid10k"
    (root / "images").mkdir(parents=True)
    rows = [("I01_01_01.png", "I01.png", 4.57), ("I01_01_05.png", "I01.png", 1.0), ("I19_01_01.png", "I19.png", 4.93),
            ("I07_01_01.png", "I07.png", 2.0), ("I01_02_01.png", "I01.png", 3.0)]  # fmt: skip
    for name, *_ in rows:
        (root / "images" / name).hardlink_to(KADID / "images/I01_01_01.png")
    pd.DataFrame(rows, columns=["dist_img", "ref_img", "dmos"]).to_csv(root / "dmos.csv", index=False)
    spec = {"name": "kadid10k", "benchmark": "kadid10k", "root": str(root), "split": "train"}
    observed = load_dataset({**spec, "mos_scaling": "observed"})
    assert observed.mos_range == (1.0, 4.93)  # over the whole file, not the train split's (1.0, 4.57)
    assert observed.records[0].mos_mapped == pytest.approx(4.633587786259543, abs=1e-12)
    assert [r.mos_mapped for r in load_dataset({**spec, "mos_scaling": "fixed"}).records][0] == pytest.approx(4.57)
    with pytest.raises(ValueError, match="mos_scaling='minmax'"):
        load_dataset({**spec, "mos_scaling": "minmax"})


def test_kadid_mirror_maps_mos_by_the_released_rule(tmp_path):
    """On the KADID-10K mirror through `data=kadid`, every mapped MOS is 1 + 4 (m - min) / (max - min)
    with min and max over the whole dmos.csv, as KADID-10K_normalized_mos.txt is made."""
    mirror = generate_mirrors(tmp_path / "mirror", ["kadid10k"])
    cfg = compose_config("train", ["data=kadid"], data_dir=mirror)
    dm = instantiate(cfg.data, _recursive_=False)
    dm.setup()
    every = pd.read_csv(mirror / "kadid10k/dmos.csv").set_index("dist_img")["dmos"]
    lo, hi = every.min(), every.max()
    assert hi - lo < 4  # the mirror's range is not 1-5, so the rule differs from the fixed mapping
    for split in ("train", "val", "test"):
        recs = dm.datasets[split].records
        assert recs and all(math.isclose(r.mos_mapped, 1 + 4 * (every[r.id] - lo) / (hi - lo)) for r in recs)


# recipe -> the released launch script's values: GPUs, completions per GPU (per_device_train_batch_size),
# num_generations K (stage 1, stage 2), epochs, and the training set size the steps are counted on
RELEASED_GEOMETRY = {
    "vq_r1_kadid": dict(gpus=8, completions=48, k=(6, 6), epochs=10, n_train=6125),  # one_node_run_kadid.sh
    "preresq_iqa_kadid": dict(gpus=4, completions=48, k=(6, 6), epochs=8, n_train=6125),  # ..._KADID_PreResIQA_R1.sh
    "preresq_vqa_lsvq": dict(
        gpus=4, completions=25, k=(5, 5), epochs=2, n_train=28000
    ),  # ..._LSVQ_PreResVQA_R1.sh; 28K videos
}


@pytest.mark.parametrize("recipe", sorted(RELEASED_GEOMETRY))
def test_recipe_batch_geometry_equals_the_released_script(recipe):
    """devices x images per device x K per stage x epochs of each recipe equal its released launch
    script; so do the global batch (images per step) and the full steps per epoch (the released
    sampler adds one partial step of the remainder: 45 of 64 images for VisualQuality-R1)."""
    rel = RELEASED_GEOMETRY[recipe]
    cfg = compose_config("train", [f"experiment={recipe}"])
    stages = (cfg.schedule.stage1.k, cfg.schedule.stage2.k) if cfg.schedule.get("enabled") else (cfg.grpo.k,) * 2
    assert tuple(stages) == rel["k"] and cfg.grpo.k == rel["k"][1]
    images_per_gpu = rel["completions"] // rel["k"][0]
    assert (cfg.trainer.devices, cfg.data.batch_size, cfg.trainer.max_epochs) == (
        rel["gpus"],
        images_per_gpu,
        rel["epochs"],
    )
    assert cfg.data.batch_size * stages[0] == rel["completions"] and cfg.trainer.get("accumulate_grad_batches", 1) == 1
    sampler = SingleDatasetBatchSampler([rel["n_train"]], cfg.data.batch_size, num_replicas=cfg.trainer.devices,
                                        drop_last=cfg.data.drop_last)  # fmt: skip
    global_batch = rel["gpus"] * rel["completions"] // rel["k"][0]
    assert sampler.global_batch_size == global_batch
    assert len(sampler) == rel["n_train"] // global_batch


def test_eval_released_scoring_preset_holds_the_released_inference_settings():
    """`prresq.eval scoring=eval_released`: one sampled answer, top-k 50, top-p 1, 512 new tokens, released rule."""
    sc = compose_config("eval", ["scoring=eval_released", "prompt=preresq_iqa"]).scoring
    assert (sc.mode, sc.n, sc.top_k, sc.top_p, sc.max_new_tokens) == ("sample", 1, 50, 1.0, 512)
    assert sc.answer_rule == "released" and sc.logistic is True
