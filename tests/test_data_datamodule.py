"""QualityDataModule end to end on a generated synthetic set, resume (also through Lightning), and the configs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from prresq.data.dataflow import ImageFlow
from prresq.data.datamodule import QualityDataModule
from prresq.models import load_processor

CONF = Path(__file__).resolve().parents[1] / "conf"
PROMPT = "Rate the overall image visual quality."


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    return load_processor(tiny_model_dir, min_pixels=56 * 56, max_pixels=56 * 56)


def _spec(root: Path, split: str, name: str = "synthetic_iqa") -> dict:
    return {"name": name, "jsonl": str(root / f"{split}.jsonl"), "mos_range": [1, 5]}


def _dm(root: Path, processor, **kw) -> QualityDataModule:
    args = dict(
        train=[_spec(root, "train"), _spec(root, "prior", "other")],
        val=[_spec(root, "val")],
        test=[_spec(root, "test")],
        prior=[_spec(root, "prior")],
        batch_size=4,
        eval_batch_size=7,
        seed=3,
    )
    return QualityDataModule(**{**args, **kw}).attach(processor, PROMPT, ImageFlow())


def test_end_to_end_batches(synthetic_iqa, processor):
    dm = _dm(synthetic_iqa, processor)
    assert dm.dataset_names == {0: "synthetic_iqa", 1: "other"}
    dm.setup("fit")
    loader = dm.train_dataloader()
    n_train = len(dm.datasets["train"])
    assert len(loader) == sum(n // 4 for n in dm.datasets["train"].sizes)
    ids_seen = set()
    for step, batch in enumerate(loader):
        mi = batch["model_inputs"]
        assert mi["input_ids"].shape[0] == 4 and batch["mos"].shape == (4,)
        assert batch["dataset_ids"].unique().numel() == 1  # never two datasets in one batch
        assert ((batch["mos"] >= 1) & (batch["mos"] <= 5)).all()
        ids_seen.update(batch["ids"])
        if step == 5:
            break
    assert ids_seen and n_train > 24
    val = dm.val_dataloader()
    ids = [i for b in val for i in b["ids"]]
    assert ids == [r.id for r in dm.datasets["val"].records]  # file order, nothing dropped
    assert dm.test_dataloader().batch_size == 7


def test_prior_loader_for_supervised_warmup(synthetic_iqa, processor):
    dm = _dm(synthetic_iqa, processor)
    batch = next(iter(dm.prior_dataloader(answer_fn=lambda r: f"<think>ok</think><answer>{r.mos_mapped:.2f}</answer>")))
    labels = batch["model_inputs"]["labels"]
    assert labels.shape == batch["model_inputs"]["input_ids"].shape and (labels == -100).any()
    assert "labels" not in next(iter(dm.val_dataloader()))["model_inputs"]  # evaluation never gets answers


def test_prompt_config_mapping_pool_for_training_text_for_eval(synthetic_iqa, processor):
    dm = _dm(synthetic_iqa, processor)
    dm.attach(processor, {"text": "main prompt", "pool": ["main prompt", "other wording"]})
    assert dm.collator("train").pool == ["main prompt", "other wording"]
    assert dm.collator("val").pool == ["main prompt"]
    with pytest.raises(RuntimeError, match="attach"):
        QualityDataModule(train=[_spec(synthetic_iqa, "train")]).collator("train")


def test_state_dict_resumes_at_the_next_batch(synthetic_iqa, processor):
    dm = _dm(synthetic_iqa, processor)
    full = [b["ids"] for b in dm.train_dataloader()]
    dm2 = _dm(synthetic_iqa, processor)
    it = iter(dm2.train_dataloader())
    first = [next(it)["ids"] for _ in range(3)]
    state = dm2.state_dict()
    assert state["sampler"]["batches_yielded"] == 3
    dm3 = _dm(synthetic_iqa, processor)
    dm3.load_state_dict(state)  # before the loader exists, as Lightning restores it
    rest = [b["ids"] for b in dm3.train_dataloader()]
    assert first + rest == full


def test_state_counts_consumed_batches_not_worker_prefetch(synthetic_iqa, processor):
    dm = _dm(synthetic_iqa, processor, num_workers=1)
    loader = dm.train_dataloader()
    it = iter(loader)
    next(it)
    next(it)
    assert loader.batch_sampler.batches_yielded > 2  # the worker ran ahead
    assert dm.state_dict()["sampler"]["batches_yielded"] == 2
    del it


class _Recorder(L.LightningModule):
    """Trains one scalar; records the ids of every training batch it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[str]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["ids"])
        return (self.w - batch["mos"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp: Path, dm: QualityDataModule, max_steps: int, ckpt: str | None = None) -> _Recorder:
    from lightning.pytorch.callbacks import ModelCheckpoint

    module = _Recorder()
    trainer = L.Trainer(
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=tmp,
        callbacks=[ModelCheckpoint(dirpath=tmp / "ckpt", every_n_train_steps=2, save_last=True)],
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module


@pytest.mark.filterwarnings("ignore:.*validation_step:UserWarning", "ignore:.*exists and is not empty:UserWarning")
def test_lightning_checkpoint_resumes_at_the_same_batch(synthetic_iqa, processor, tmp_path):
    full = _fit(tmp_path / "full", _dm(synthetic_iqa, processor), max_steps=4).seen
    _fit(tmp_path / "part", _dm(synthetic_iqa, processor), max_steps=2)
    resumed = _fit(tmp_path / "part", _dm(synthetic_iqa, processor), 4, str(tmp_path / "part" / "ckpt" / "last.ckpt"))
    assert len(full) == 4 and resumed.seen == full[2:]


def _compose(name: str, data_dir: Path):
    return compose_config("train", [f"data={name}"], data_dir=data_dir)


def test_synthetic_config_instantiates_and_generates(tmp_path, processor, monkeypatch):
    cfg = _compose("synthetic_iqa", tmp_path)
    cfg.data.synthetic.crops_per_photo = 1
    cfg.data.synthetic.size = 56
    dm = instantiate(cfg.data, _recursive_=False)
    assert isinstance(dm, QualityDataModule)
    assert (dm.min_pixels, dm.max_pixels) == (112 * 112, 128 * 128) and dm.seed == 42
    dm.prepare_data()
    assert (tmp_path / "synthetic_iqa" / "prior.jsonl").exists()
    dm.attach(processor, PROMPT, instantiate(OmegaConf.load(CONF / "dataflow" / "image.yaml")))
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "prior", "val", "test"} and dm.dataset_names == {0: "synthetic_iqa"}
    assert next(iter(dm.train_dataloader()))["mos"].shape == (8,)


@pytest.mark.parametrize("name", ["kadid", "kadid_spaq"])
def test_real_dataset_configs_instantiate(tmp_path, name):
    dm = instantiate(_compose(name, tmp_path).data, _recursive_=False)
    spec = dm.specs["train"][0]
    assert (spec.benchmark, spec.root, spec.split) == ("kadid10k", str(tmp_path / "kadid10k"), "train")
    assert dm.min_pixels == 3136 and dm.max_pixels == 401408
    names = set(dm.dataset_names.values())
    assert names == ({"kadid10k", "spaq"} if name == "kadid_spaq" else {"kadid10k"})
