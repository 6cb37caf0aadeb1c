"""VQA benchmark adapters, one per dataset, each reading the dataset's native label files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from prresq.data.benchmarks.readers import (
    _as_list,
    _blank_cells,
    _categories,
    _col,
    _drop_empty,
    _first_existing,
    _loadmat,
    _mat_key,
    _mat_strings,
    _MediaResolver,
    _read_csv,
    _read_sheet,
    _require,
    _std,
)
from prresq.data.benchmarks.registry import BenchmarkItem, _Labels, _register, _rownums, _Rows

# ----------------------------------------------------------------------------- VQA adapters


@_register("konvid1k", task="vqa", mos_range=(1.0, 5.0))
def read_konvid1k(
    root: Path,
    split: str | None,
    labels: str | Sequence[str] = ("KoNViD_1k_attributes.csv", "KoNViD_1k_mos.csv"),
    media_dir: str | Sequence[str] = ("KoNViD_1k_videos", "videos", ""),
) -> _Labels:
    """KoNViD-1k (Hosu et al. 2017): `KoNViD_1k_attributes.csv` (flickr_id, ..., MOS, SD, ...) or
    `KoNViD_1k_mos.csv` (flickr_id, mos), whichever is found first (also in `KoNViD_1k_metadata/`).

    MOS on 1-5, higher is better. Videos are `<flickr_id>.mp4` in `KoNViD_1k_videos/`.
    Source: VSFA-style loaders (`info['flickr_id']`, `info['MOS']`) and KoNViD_1k_mos.csv readers.
    """
    cands = [c for n in _as_list(labels) for c in (n, f"KoNViD_1k_metadata/{n}")]
    path = _first_existing(root, cands)
    df = _read_csv(path)
    c_id, c_mos = _col(df, "flickr_id", where=path), _col(df, "MOS", where=path)
    c_sd = _col(df, "SD", required=False)
    rows = _Rows(path)
    df = _blank_cells(df, {"flickr_id": c_id, "MOS": c_mos}, rows, path)
    resolve = _MediaResolver(root, media_dir, suffixes=(".mp4", ""))
    sds = df[c_sd] if c_sd is not None else [None] * len(df)
    for r, fid, m, sd in zip(_rownums(df), df[c_id], df[c_mos], sds):
        vid = str(int(fid)) if isinstance(fid, float | np.floating) and float(fid).is_integer() else str(fid)
        rows.add(vid, resolve(vid), m, _std(sd), r)
    return rows.labels()


@_register("live_vqc", task="vqa", mos_range=(0.0, 100.0))
def read_live_vqc(
    root: Path,
    split: str | None,
    labels: str = "data.mat",
    media_dir: str | Sequence[str] = ("Video", "videos", ""),
) -> _Labels:
    """LIVE-VQC (Sinno & Bovik 2018): `data.mat` with `video_list` (cell of names, e.g. A001.mp4) and
    `mos` (0-100, higher is better); videos in `Video/`.

    Source: loaders reading `loadmat('data.mat')['video_list']` and `['mos']`.
    """
    path = _require(root / labels, root)
    mat = _loadmat(path)
    names = _mat_strings(_mat_key(mat, path, "video_list"))
    mos = np.asarray(_mat_key(mat, path, "mos", "MOS"), dtype=np.float64).reshape(-1)
    if len(names) != len(mos):
        raise ValueError(f"{path}: {len(names)} names but {len(mos)} MOS values")
    resolve = _MediaResolver(root, media_dir)
    return _Labels([BenchmarkItem(n, resolve(n), float(m)) for n, m in zip(names, mos)], path)


# LSVQ's `is_test` column (pandas reads True/False, or 1/0, 1.0/0.0 where a cell is empty); case-insensitive
_IS_TEST = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False, "yes": True, "no": False}


@_register(
    "lsvq",
    task="vqa",
    mos_range=(0.0, 100.0),
    splits=("train", "test", "test_1080p"),
    default_split="test",
    aliases={"lsvq_test": "test", "lsvq_1080p": "test_1080p"},
)
def read_lsvq(
    root: Path,
    split: str | None,
    media_dir: str | Sequence[str] = ("", "videos"),
) -> _Labels:
    """LSVQ (Ying et al. 2021): label CSVs with columns name, p1..p3, height, width, mos_p1..mos_p3,
    mos, frame_number, ...; `name` is the video path without extension (e.g. `ia-batch1/xyz`).

    Files per split, first found wins (every name tried is listed when none is found):
    - "test": `labels_test.csv`, `LSVQ_whole_test.csv` (the per-split copy most VQA code ships),
      else the rows of `labels_train_test.csv` with `is_test` true (`is_test` reads true/false, 1/0,
      yes/no, case-insensitive; any other value stops, naming the file and row);
    - "test_1080p": `labels_test_1080p.csv` or `LSVQ_whole_test_1080p.csv` (no `is_test` column);
    - "train": `labels_train.csv`, `LSVQ_whole_train.csv`, else the non-test rows.
    MOS 0-100, higher is better. Videos at `<root>/<name>.mp4`. Source: the official release notes
    (github.com/baidut/PatchVQ) and VQA loaders reading `LSVQ_whole_{train,test,test_1080p}.csv`.
    """
    own = {
        "test": ["labels_test.csv", "LSVQ_whole_test.csv"],
        "train": ["labels_train.csv", "LSVQ_whole_train.csv"],
        "test_1080p": ["labels_test_1080p.csv", "LSVQ_whole_test_1080p.csv"],
    }.get(split or "", [])
    found = next((root / f for f in own if (root / f).is_file()), None)
    path = found or _first_existing(root, own if split == "test_1080p" else [*own, "labels_train_test.csv"])
    df = _read_csv(path)
    c_name, c_mos = _col(df, "name", where=path), _col(df, "mos", where=path)
    rows = _Rows(path)
    df = _blank_cells(df, {"name": c_name, "mos": c_mos}, rows, path)
    if found is None and split in ("test", "train"):
        is_test = pd.Series(
            _categories(df, _col(df, "is_test", where=path), _IS_TEST, path), index=df.index, dtype=bool
        )
        df = df[is_test if split == "test" else ~is_test]
    resolve = _MediaResolver(root, media_dir, suffixes=(".mp4", ""))
    for r, n, m in zip(_rownums(df), df[c_name], df[c_mos]):
        rows.add(str(n), resolve(str(n)), m, None, r)
    return rows.labels()


@_register("youtube_ugc", task="vqa", mos_range=(1.0, 5.0))
def read_youtube_ugc(
    root: Path,
    split: str | None,
    labels: str = "original_videos_MOS_for_YouTube_UGC_dataset.xlsx",
    csv_export: str | Sequence[str] = ("original_videos_MOS_for_YouTube_UGC_dataset.csv",),
    sheet: str | int = "MOS",
    score_column: str = "MOS full",
    media_dir: str | Sequence[str] = ("original_videos", "videos", ""),
    suffixes: Sequence[str] = (".mkv", ".mp4", "_crf_10_ss_00_t_20.0.mp4"),
) -> _Labels:
    """YouTube-UGC (Wang et al. 2019): `original_videos_MOS_for_YouTube_UGC_dataset.xlsx`, sheet "MOS".

    Columns category, resolution, vid, "MOS full" (1-5, higher is better), per-chunk MOS, ...
    A CSV export of that sheet is read first; the .xlsx needs openpyxl. Videos are found by `vid`
    anywhere below the media folder, as the original `<vid>.mkv` or common transcodes
    (`<vid>.mp4`, `<vid>_crf_10_ss_00_t_20.0.mp4`). Rows with a vid and no MOS (videos the release
    lists unrated) are left out and logged; a row without a vid is a bad row.
    Source: loaders reading `pd.read_excel(..., sheet_name='MOS')['vid']` / `['MOS full']`.
    """
    df, path = _read_sheet(root, labels, _as_list(csv_export), sheet=sheet)
    c_vid, c_mos = _col(df, "vid", where=path), _col(df, score_column, where=path)
    rows = _Rows(path)
    df = _drop_empty(_blank_cells(df, {"vid": c_vid}, rows, path), [c_mos], path)
    resolve = _MediaResolver(root, media_dir, suffixes=suffixes, recursive=True)
    for r, v, m in zip(_rownums(df), df[c_vid], df[c_mos]):
        rows.add(str(v), resolve(str(v)), m, None, r)
    return rows.labels()
