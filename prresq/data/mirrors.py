"""Native-layout mirrors: the synthetic IQA / VQA sets written in the on-disk layout of real datasets.

A mirror lets the paper recipes run unchanged on a CPU: point `paths.data_dir` at it and the
`data` configs read it through the same benchmark adapters as the real downloads. What each folder
holds (the layout the adapter docstrings in `prresq.data.benchmarks` describe):

- `kadid10k/`: `dmos.csv` (dist_img, ref_img, dmos, var) + `images/I<ref>_<type>_<level>.png`;
  one reference per synthetic (photo, crop), named after real KADID-10K references drawn 3:1:1 from
  the released split (so `split_source=released` gives all three splits), MOS on 1-5, `var` 0.
- `spaq/`: `Annotations/MOS and Image attribute scores.xlsx` ("Image name", MOS on 0-100 and the
  five attribute columns, here copies of the MOS) + `TestImage/<nnnnn>.jpg`.
- `koniq10k/`: `koniq10k_scores_and_distributions.csv` (image_name, c1..c5, c_total, MOS 1-5, SD,
  MOS_zscore) and `koniq10k_distributions_sets.csv` (..., MOS 1-100, SD, set) + `1024x768/<id>.jpg`;
  the rating counts are 100 votes binned around the synthetic MOS, MOS and SD computed from them.
- `lsvq/`: `labels_train_test.csv` (the official columns, `is_test`) and `labels_test_1080p.csv`
  + `<name>.mp4` with names like `ia-batch1/<clip>`; MOS on 0-100.

The IQA images come from `prresq.data.synthetic` (KADID and KonIQ: white noise; SPAQ: Gaussian
blur), the videos from `prresq.data.synthetic_video`; both are cached under `<out>/_synthetic/`.
Sets are split by reference photo where the native layout carries a split (KonIQ `set`, LSVQ
`is_test`), with `reference_split` (6:2:2, seed 42).

    python -m prresq.data.mirrors --out .cache/data_mirror              # all four datasets
    python -m prresq.data.mirrors --out DIR --datasets kadid10k spaq --crops-per-photo 2
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from prresq.data.benchmarks import reference_split, released_split

log = logging.getLogger(__name__)

DATASETS = ("kadid10k", "spaq", "koniq10k", "lsvq")
_PATCH = ("left", "right", "top", "bottom", "start", "end")
LSVQ_COLUMNS = (
    ["name", "p1", "p2", "p3", "height", "width", "mos_p1", "mos_p2", "mos_p3", "mos", "frame_number", "fn_last_frame"]
    + [f"{c}_p{p}" for p in (1, 2, 3) for c in _PATCH]
    + ["top_vid", "left_vid", "bottom_vid", "right_vid", "start_vid", "end_vid", "is_test", "is_valid"]
)
SPAQ_ATTRIBUTES = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")
DONE = ".mirror.json"
LAYOUT = 2  # bumped when a writer changes what it writes (2: KADID-10K references named from the released split)


def _rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of a synthetic set (all splits), in a stable order."""
    rows = []
    for name in ("prior", "train", "val", "test"):
        path = folder / f"{name}.jsonl"
        if path.is_file():
            rows += [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return sorted(rows, key=lambda r: r["id"])


def _mos(row: dict[str, Any]) -> float:
    return float(row["conversations"][-1]["value"])


def _done(out: Path, options: dict[str, Any]) -> bool:
    path = out / DONE
    return path.is_file() and json.loads(path.read_text()) == options


def _mark(out: Path, options: dict[str, Any]) -> None:
    (out / DONE).write_text(json.dumps(options))


def _fresh(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)


def kadid_reference_names(n: int) -> list[str]:
    """`n` names of real KADID-10K references, drawn train, train, train, val, test, ... from the released
    split (`released_split("kadid10k")`), so a mirror of any size has all three splits at about 6:2:2."""
    assign = released_split("kadid10k")
    if n > len(assign):
        raise ValueError(f"a KADID-10K mirror holds at most {len(assign)} references (KADID-10K's), asked for {n}")
    pools = {s: sorted(r for r, v in assign.items() if v == s) for s in ("train", "val", "test")}
    order = ["train", "train", "train", "val", "test"]
    names: list[str] = []
    i = 0
    while len(names) < n:
        pool = pools[order[i % len(order)]]
        if pool:
            names.append(pool.pop(0))
        i += 1
    return names


def write_kadid10k(src: Path, out: Path) -> None:
    """`dmos.csv` + `images/I<ref>_<type>_<level>.png`, one reference per synthetic (photo, crop), named
    after real KADID-10K references so the released split applies (`kadid_reference_names`)."""
    _fresh(out)
    (out / "images").mkdir()
    rows = _rows(src)
    keys = sorted({(r["reference"], r["crop"]) for r in rows})
    refs = dict(zip(keys, (Path(n).stem for n in kadid_reference_names(len(keys)))))
    types = {t: i + 1 for i, t in enumerate(sorted({r["distortion"] for r in rows}))}
    table = []
    for r in rows:
        ref = refs[(r["reference"], r["crop"])]
        name = f"{ref}_{types[r['distortion']]:02d}_{int(r['level']):02d}.png"
        shutil.copyfile(src / r["image"][0], out / "images" / name)
        table.append({"dist_img": name, "ref_img": f"{ref}.png", "dmos": round(_mos(r), 2), "var": 0.0})
    pd.DataFrame(table).to_csv(out / "dmos.csv", index=False)


def write_spaq(src: Path, out: Path) -> None:
    """`Annotations/MOS and Image attribute scores.xlsx` + `TestImage/<nnnnn>.jpg` (MOS 0-100)."""
    _fresh(out)
    (out / "TestImage").mkdir()
    (out / "Annotations").mkdir()
    table = []
    for i, r in enumerate(_rows(src), start=1):
        name = f"{i:05d}.jpg"
        Image.open(src / r["image"][0]).convert("RGB").save(out / "TestImage" / name, quality=95)
        mos = round((_mos(r) - 1.0) / 4.0 * 100.0, 2)
        table.append({"Image name": name, "MOS": mos, **{a: mos for a in SPAQ_ATTRIBUTES}})
    pd.DataFrame(table).to_excel(out / "Annotations/MOS and Image attribute scores.xlsx", index=False)


def _votes(mos: float, total: int = 100, spread: float = 0.6) -> np.ndarray:
    """`total` ratings on 1..5 binned from a normal around `mos` (counts sum to `total`)."""
    p = np.exp(-((np.arange(1, 6) - mos) ** 2) / (2 * spread**2))
    counts = np.floor(p / p.sum() * total).astype(int)
    counts[int(np.argmax(p))] += total - counts.sum()
    return counts


def write_koniq10k(src: Path, out: Path, seed: int = 42) -> None:
    """Both KonIQ-10k label files + `1024x768/<id>.jpg`; `set` by reference photo."""
    _fresh(out)
    (out / "1024x768").mkdir()
    rows = _rows(src)
    sets = {"train": "training", "val": "validation", "test": "test"}
    split = reference_split([r["reference"] for r in rows], seed=seed)
    scores, official = [], []
    for i, r in enumerate(rows):
        name = f"{10_000_000_000 + i}.jpg"
        Image.open(src / r["image"][0]).convert("RGB").save(out / "1024x768" / name, quality=95)
        c = _votes(_mos(r))
        frac = c / c.sum()
        levels = np.arange(1, 6)
        mos = float((frac * levels).sum())
        sd = float(np.sqrt((frac * (levels - mos) ** 2).sum()))
        zscore = (mos - 1.0) / 4.0 * 100.0
        counts = {f"c{k}": int(v) for k, v in zip(levels, c)}
        scores.append(
            {"image_name": name, **counts, "c_total": int(c.sum()), "MOS": mos, "SD": sd, "MOS_zscore": zscore}
        )
        official.append(
            {
                "image_name": name,
                **{k: v / c.sum() for k, v in counts.items()},
                "c_total": int(c.sum()),
                "MOS": 1.0 + zscore * 0.99,
                "SD": sd,
                "set": sets[split[r["reference"]]],
            }
        )
    pd.DataFrame(scores).to_csv(out / "koniq10k_scores_and_distributions.csv", index=False)
    pd.DataFrame(official).to_csv(out / "koniq10k_distributions_sets.csv", index=False)


def write_lsvq(src: Path, out: Path, seed: int = 42) -> None:
    """`labels_train_test.csv` + `labels_test_1080p.csv` + `<name>.mp4` (MOS 0-100)."""
    _fresh(out)
    rows = _rows(src)
    split = reference_split([r["reference"] for r in rows], seed=seed)
    main_rows, hd_rows = [], []
    for i, r in enumerate(rows):
        test = split[r["reference"]] == "test"
        name = f"ia-batch{1 + i % 3}/{r['id']}"
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / r["video"][0], out / f"{name}.mp4")
        mos = round((_mos(r) - 1.0) / 4.0 * 100.0, 2)
        row = dict.fromkeys(LSVQ_COLUMNS, 0)
        row.update(name=name, p1=1, p2=2, p3=3, height=112, width=160, mos_p1=mos, mos_p2=mos, mos_p3=mos, mos=mos)
        row.update(frame_number=16, fn_last_frame=16, bottom_vid=112, right_vid=160, end_vid=16)
        row.update(is_test=test, is_valid=True)
        main_rows.append(row)
        if test:
            hd = dict(row, name=f"yfcc-batch9/{r['id']}")
            (out / "yfcc-batch9").mkdir(exist_ok=True)
            shutil.copyfile(src / r["video"][0], out / f"{hd['name']}.mp4")
            hd_rows.append(hd)
    pd.DataFrame(main_rows, columns=list(LSVQ_COLUMNS)).to_csv(out / "labels_train_test.csv", index=False)
    pd.DataFrame(hd_rows, columns=list(LSVQ_COLUMNS)).to_csv(out / "labels_test_1080p.csv", index=False)


def generate_mirrors(
    out_dir: str | Path,
    datasets: Sequence[str] = DATASETS,
    crops_per_photo: int = 1,
    size: int = 112,
    levels: int = 5,
    video_types: Sequence[str] = ("compression", "blur"),
    video_levels: int = 2,
    photos: Sequence[str] | None = None,
    seed: int = 42,
) -> Path:
    """Write (or reuse, when written with the same options) the mirrors of `datasets` under `out_dir`."""
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        raise ValueError(f"unknown mirror datasets {unknown}; known: {list(DATASETS)}")
    out = Path(out_dir)
    cache = out / "_synthetic"
    iqa = dict(size=size, crops_per_photo=crops_per_photo, levels=levels, seed=seed, photos=photos, progress=False)
    for name in datasets:
        options = dict(iqa, video_types=list(video_types), video_levels=video_levels, dataset=name, layout=LAYOUT)
        if _done(out / name, options):
            continue
        if name == "lsvq":
            from prresq.data.synthetic_video import generate_synthetic_vqa

            src = generate_synthetic_vqa(
                cache / "vqa", types=video_types, levels=video_levels, seed=seed, photos=photos, progress=False
            )
            write_lsvq(src, out / name, seed)
        else:
            from prresq.data.synthetic import generate_synthetic_iqa

            types = ["gaussian_blur"] if name == "spaq" else ["white_noise"]
            src = generate_synthetic_iqa(cache / f"iqa_{types[0]}", types=types, **iqa)
            {"kadid10k": write_kadid10k, "spaq": write_spaq, "koniq10k": write_koniq10k}[name](src, out / name)
        _mark(out / name, options)
        log.info("mirror %s written to %s", name, out / name)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the synthetic sets in the native layout of real datasets.")
    parser.add_argument("--out", type=Path, required=True, help="the mirror root (use it as paths.data_dir)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--crops-per-photo", type=int, default=1)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    generate_mirrors(args.out, args.datasets, crops_per_photo=args.crops_per_photo, size=args.size, seed=args.seed)
    print(args.out)


if __name__ == "__main__":
    main()
