"""IQA benchmark adapters, one per dataset, each reading the dataset's native label files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from prresq.data.benchmarks.readers import (
    _as_list,
    _blank_cells,
    _categories,
    _col,
    _first_existing,
    _loadmat,
    _mat_key,
    _mat_strings,
    _MediaResolver,
    _name_mos_labels,
    _read_csv,
    _read_sheet,
    _require,
    _sqrt,
    _std,
    reference_split,
)
from prresq.data.benchmarks.registry import (
    ALL_SPLITS,
    BenchmarkItem,
    LabelFormatError,
    _Labels,
    _register,
    _rownums,
    _Rows,
    log,
)
from prresq.data.benchmarks.splits import SPLIT_SOURCES, assign_released
from prresq.data.label_checks import read_label_text

# ----------------------------------------------------------------------------- IQA adapters


@_register("kadid10k", task="iqa", mos_range=(1.0, 5.0), splits=("train", "val", "test"))
def read_kadid10k(
    root: Path,
    split: str | None,
    labels: str = "dmos.csv",
    media_dir: str | Sequence[str] = ("images", "distorted_images"),
    split_source: str = "released",
    seed: int = 42,
) -> _Labels:
    """KADID-10K (Lin et al. 2019): `dmos.csv` with columns dist_img, ref_img, dmos, var; images in `images/`.

    `dmos` is a 1-5 degradation-category MOS where 5 is best (already higher-is-better despite the
    name); `var` is the rating variance, so std = sqrt(var). Splits train/val/test by reference image:
    `split_source="released"` (default) is the split both anchors trained on (`released_split`:
    49 / 16 / 16 references, 6125 / 2000 / 2000 images); `"reference_seed"` is `reference_split`
    over `ref_img` (6:2:2, `seed`). Source: the dataset's dmos.csv header as read by IQA-PyTorch
    (scripts/process_kadid10k.py) and many loaders (`dist_img,ref_img,dmos,var`).
    """
    if split_source not in SPLIT_SOURCES:
        raise ValueError(f"kadid10k: split_source={split_source!r}; expected one of {list(SPLIT_SOURCES)}")
    path = _require(root / labels, root)
    df = _read_csv(path)
    c_dist, c_ref = _col(df, "dist_img", where=path), _col(df, "ref_img", where=path)
    c_mos, c_var = _col(df, "dmos", "mos", where=path), _col(df, "var", required=False)
    rows = _Rows(path)
    df = _blank_cells(df, {"dist_img": c_dist, "ref_img": c_ref, "dmos": c_mos}, rows, path)
    if split not in ALL_SPLITS:
        refs = df[c_ref].astype(str)
        if split_source == "released":
            assign = assign_released("kadid10k", list(refs), path)
        else:
            assign = reference_split(refs, seed=seed)
        df = df[refs.map(assign) == split]
    resolve = _MediaResolver(root, media_dir)
    variances = df[c_var] if c_var is not None else [None] * len(df)
    for r, n, ref, m, v in zip(_rownums(df), df[c_dist], df[c_ref], df[c_mos], variances):
        rows.add(str(n), resolve(str(n)), m, _sqrt(v), r, reference=str(ref))
    return rows.labels()


@_register("tid2013", task="iqa", mos_range=(0.0, 9.0))
def read_tid2013(
    root: Path,
    split: str | None,
    labels: str = "mos_with_names.txt",
    std_file: str = "mos_std.txt",
    media_dir: str | Sequence[str] = "distorted_images",
) -> _Labels:
    """TID2013 (Ponomarenko et al. 2015): `mos_with_names.txt`, one `<mos> <file name>` per line.

    MOS on 0-9 (higher is better; observed about 0.24-7.2). `mos_std.txt` (one value per line, same
    order) gives std when present. Images in `distorted_images/`; names are matched
    case-insensitively since the label file and the files disagree on case for image 25.
    Source: IQA-PyTorch scripts/process_tid.py and MATLAB readers (`textscan(fid, '%f %s')`).
    """
    path = _require(root / labels, root)
    rows = [ln.split() for ln in read_label_text(path, LabelFormatError).splitlines() if ln.strip()]
    stds: list[float | None] = []
    if std_file and (root / std_file).is_file():
        stds = [_std(s) for s in read_label_text(root / std_file, LabelFormatError).split()]
        if len(stds) != len(rows):
            warnings.warn(f"{root / std_file}: {len(stds)} values for {len(rows)} labels; std ignored", stacklevel=2)
            stds = []
    resolve = _MediaResolver(root, media_dir)
    out = _Rows(path)
    for i, row in enumerate(rows):
        if len(row) < 2:
            raise LabelFormatError(f"{path}:{i + 1}: expected '<mos> <name>', got {' '.join(row)!r}")
        out.add(row[1], resolve(row[1]), row[0], stds[i] if stds else None, i + 1)
    return out.labels()


def _per_file_rows(
    root: Path, folder: Path, media_dir: str | Sequence[str], file_name: str, expected: str, space_ok: bool
) -> _Rows:
    """Every `folder/*.txt` (one file per reference or content: PIPAL, SRIQA-Bench), one `<name>,<score>`
    line per rated image (comma; with `space_ok`, white space where a line has no comma); media found by name below
    `media_dir`. A line without a score is a `LabelFormatError` naming the file and row."""
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"expected label files {folder}/{file_name} (folder is empty)")
    resolve = _MediaResolver(root, media_dir, recursive=True)
    out = _Rows(folder)
    for f in files:
        for i, ln in enumerate(read_label_text(f, LabelFormatError).splitlines()):
            if not ln.strip():
                continue
            parts = [p.strip() for p in ln.split(",")] if "," in ln or not space_ok else ln.split()
            if len(parts) < 2:
                raise LabelFormatError(f"{f} row {i + 1}: expected {expected}, got {ln!r}")
            out.add(parts[0], resolve(parts[0]), parts[1], None, i + 1, path=f)
    return out


@_register("pipal", task="iqa", mos_range=None)
def read_pipal(
    root: Path,
    split: str | None,
    label_dir: str | Sequence[str] = ("Train_Label", "MOS_Scores_train"),
    media_dir: str | Sequence[str] = ("Train_Dis", "Distortion", ""),
) -> _Labels:
    """PIPAL (Gu et al. 2020, NTIRE 2021/22 release): one `<ref>.txt` per reference in `Train_Label/`.

    Each line is `<distorted name>,<Elo score>` (e.g. `A0001_00_00.bmp,1449.2`); Elo is higher-is-
    better with an open scale, so mos_range is the observed min/max. Distorted images live in
    `Train_Dis/` or in `Distortion/Distortion_1..4/`; files are found by name anywhere below the
    media folder. Source: PIPAL-dataset codes/data/README.md and IQA-PyTorch scripts/process_pipal.py.
    """
    dirs = [root / d for d in _as_list(label_dir)]
    folder = next((d for d in dirs if d.is_dir()), None)
    if folder is None:
        note = f" (the dataset root {root} does not exist)" if not root.exists() else ""
        raise FileNotFoundError(f"expected label folder of <ref>.txt files: {', '.join(map(str, dirs))}{note}")
    return _per_file_rows(root, folder, media_dir, "<ref>.txt", "'<name>,<elo>'", space_ok=False).labels()


_KONIQ_SETS = {
    "train": "training",
    "training": "training",
    "val": "validation",
    "validation": "validation",
    "test": "test",
}
# the `set` column of koniq10k_distributions_sets.csv (case-insensitive; train / val also read)
_KONIQ_SET_VALUES = {
    "training": "training",
    "validation": "validation",
    "test": "test",
    "train": "training",
    "val": "validation",
}
_KONIQ_SCORES = "koniq10k_scores_and_distributions.csv"
_KONIQ_SETS_FILE = "koniq10k_distributions_sets.csv"


def _koniq_sets(sets: pd.DataFrame, path: Path, checked: bool, rows: _Rows) -> dict[str, str]:
    """image_name -> training / validation / test from the sets file's `set` column; any other value
    of `set` stops, naming the file, row, value and the accepted spellings."""
    c_name, c_set = _col(sets, "image_name", where=path), _col(sets, "set", where=path)
    if not checked:
        sets = _blank_cells(sets, {"image_name": c_name}, rows, path)
    return dict(zip(sets[c_name].astype(str), _categories(sets, c_set, _KONIQ_SET_VALUES, path)))


@_register(
    "koniq10k",
    task="iqa",
    mos_range=(1.0, 5.0),
    splits=("train", "training", "val", "validation", "test"),
)
def read_koniq10k(
    root: Path,
    split: str | None,
    labels: str | Sequence[str] = (_KONIQ_SCORES, _KONIQ_SETS_FILE),
    sets_file: str = _KONIQ_SETS_FILE,
    score_column: str = "MOS",
    media_dir: str | Sequence[str] = ("1024x768", "512x384", "images"),
    seed: int = 42,
) -> _Labels:
    """KonIQ-10k (Hosu et al. 2020): the website's `koniq10k_scores_and_distributions.csv` or the
    official split file `koniq10k_distributions_sets.csv`, whichever is found first.

    - `koniq10k_scores_and_distributions.csv`: image_name, c1..c5, c_total, MOS (1-5), SD (its std
      on 1-5), MOS_zscore (0-100). `score_column="MOS_zscore"` gives the 0-100 score (no std).
    - `koniq10k_distributions_sets.csv` (github.com/subpic/koniq, metadata/): image_name, c1..c5,
      c_total, MOS (1-100), SD (on 1-5), set (training / validation / test). Read alone, MOS is on
      1-100 and std is left out (SD is on the other scale).

    Splits: wherever the sets file is present, train/val/test are its `set` column (the official
    split: training / validation / test, case-insensitive; any other value, or an image missing from the
    sets file, stops with the file and row); without it they come from `reference_split` over image_name (6:2:2, seed 42), with a
    warning. Images in `1024x768/` (or `512x384/`). Source: the koniq repository's metadata/ as
    read by IQA-PyTorch (scripts reading `koniq10k_distributions_sets.csv`: image name, MOS, SD,
    set) and loaders of `koniq10k_scores_and_distributions.csv` (`image_name`, `MOS`, `MOS_zscore`).
    """
    path = _first_existing(root, _as_list(labels))
    df = _read_csv(path)
    c_name = _col(df, "image_name", where=path)
    from_sets = _col(df, "set", required=False) is not None and _col(df, "MOS_zscore", required=False) is None
    c_mos = _col(df, score_column, where=path)
    zscore = str(c_mos).lower() == "mos_zscore"
    c_sd = None if zscore or from_sets else _col(df, "SD", required=False)
    rows = _Rows(path)
    df = _blank_cells(df, {"image_name": c_name, str(c_mos): c_mos}, rows, path)
    if split not in ALL_SPLITS:
        want = _KONIQ_SETS.get(split, split)
        sets_path = path if from_sets else root / sets_file
        if sets_path.is_file():
            which = _koniq_sets(df if from_sets else _read_csv(sets_path), sets_path, from_sets, rows)
            unknown = [r for r, n in zip(_rownums(df), df[c_name].astype(str)) if n not in which]
            if unknown:
                raise LabelFormatError(
                    f"{path}: {len(unknown)} image(s) have no row in {sets_path}, so their split is unknown "
                    f"(rows {unknown[:10]}{' ...' if len(unknown) > 10 else ''})"
                )
        else:
            log.warning("%s not found: KonIQ-10k split %r by reference_split (6:2:2, seed %d)", sets_path, split, seed)
            short = {"training": "train", "validation": "val", "test": "test"}
            which = {n: _KONIQ_SETS[s] for n, s in reference_split(df[c_name].astype(str), seed=seed).items()}
            want = _KONIQ_SETS[short.get(want, want)]
        df = df[df[c_name].astype(str).map(which) == want]
    resolve = _MediaResolver(root, media_dir)
    sds = df[c_sd] if c_sd is not None else [None] * len(df)
    for r, n, m, sd in zip(_rownums(df), df[c_name], df[c_mos], sds):
        rows.add(str(n), resolve(str(n)), m, _std(sd), r)
    return rows.labels(mos_range=(0.0, 100.0) if zscore else (1.0, 100.0) if from_sets else None)


@_register("spaq", task="iqa", mos_range=(0.0, 100.0), splits=("train", "val", "test"))
def read_spaq(
    root: Path,
    split: str | None,
    labels: str = "Annotations/MOS and Image attribute scores.xlsx",
    csv_export: str | Sequence[str] = (
        "Annotations/MOS and Image attribute scores.csv",
        "Annotations/MOS_and_Image_attribute_scores.csv",
    ),
    media_dir: str | Sequence[str] = ("TestImage", "TestImage_resized", "images"),
    seed: int = 42,
) -> _Labels:
    """SPAQ (Fang et al. 2020): `Annotations/MOS and Image attribute scores.xlsx`.

    Columns "Image name", "MOS" (0-100, higher is better), then Brightness, Colorfulness, Contrast,
    Noisiness, Sharpness. The .xlsx is read with openpyxl (a dependency); a CSV export of that
    sheet (same columns) is read instead when present. Images in `TestImage/` (e.g. 00001.jpg).
    Splits train/val/test: `reference_split` over the image names (each photo is its own
    content; 6:2:2, seed 42). Source: IQA-PyTorch scripts/process_spaq.py and loaders reading
    `info['Image name']`, `info['MOS']`.
    """
    df, path = _read_sheet(root, labels, _as_list(csv_export))
    c_name, c_mos = _col(df, "Image name", "image_name", where=path), _col(df, "MOS", where=path)
    rows = _Rows(path)
    df = _blank_cells(df, {"Image name": c_name, "MOS": c_mos}, rows, path)
    if split not in ALL_SPLITS:
        assign = reference_split(df[c_name].astype(str), seed=seed)
        df = df[df[c_name].astype(str).map(assign) == split]
    resolve = _MediaResolver(root, media_dir)
    for r, n, m in zip(_rownums(df), df[c_name], df[c_mos]):
        rows.add(str(n), resolve(str(n)), m, None, r)
    return rows.labels()


@_register("clive", task="iqa", mos_range=(0.0, 100.0), aliases={"live_challenge": None})
def read_clive(
    root: Path,
    split: str | None,
    names_file: str = "Data/AllImages_release.mat",
    mos_file: str = "Data/AllMOS_release.mat",
    std_file: str = "Data/AllStdDev_release.mat",
    media_dir: str | Sequence[str] = ("Images", "Images/trainingImages"),
    include_training_images: bool = False,
) -> _Labels:
    """LIVE In-the-Wild Image Quality Challenge (CLIVE, Ghadiyaram & Bovik 2016): MATLAB files in `Data/`.

    `AllImages_release.mat` (cell `AllImages_release`, 1169 names), `AllMOS_release.mat`
    (`AllMOS_release`, 1 x 1169, 0-100, higher is better), optional `AllStdDev_release.mat`.
    The first 7 entries are the training images shown to raters (`Images/trainingImages/`) and are
    dropped by the standard protocol (1162 images) unless `include_training_images`.
    Source: IQA-PyTorch scripts/process_livechallenge.py and loaders slicing `[7:1169]`.
    """
    names_path, mos_path = _require(root / names_file, root), _require(root / mos_file, root)
    names = _mat_strings(_mat_key(_loadmat(names_path), names_path, "AllImages_release"))
    mos = np.asarray(_mat_key(_loadmat(mos_path), mos_path, "AllMOS_release"), dtype=np.float64).reshape(-1)
    stds: list[float | None] = [None] * len(names)
    if std_file and (root / std_file).is_file():
        sd = np.asarray(_mat_key(_loadmat(root / std_file), root / std_file, "AllStdDev_release")).reshape(-1)
        stds = [_std(v) for v in sd]
    if not len(names) == len(mos) == len(stds):
        raise ValueError(f"{root / 'Data'}: {len(names)} names, {len(mos)} MOS, {len(stds)} std values")
    start = 0 if include_training_images else 7
    resolve = _MediaResolver(root, media_dir)
    items = [BenchmarkItem(n, resolve(n), float(m), s) for n, m, s in list(zip(names, mos, stds))[start:]]
    return _Labels(items, mos_path)


@_register("bid", task="iqa", mos_range=(0.0, 5.0))
def read_bid(
    root: Path,
    split: str | None,
    labels: str = "DatabaseGrades.xlsx",
    csv_export: str | Sequence[str] = ("DatabaseGrades.csv",),
    media_dir: str | Sequence[str] = ("ImageDatabase", ""),
) -> _Labels:
    """BID, Blurred Image Database (Ciancio et al. 2011): `DatabaseGrades.xlsx`, first sheet.

    Column 1 is the image number, column 2 the MOS (0-5, higher is better); a header row is
    expected. Number n is the file `DatabaseImage%04d.JPG` (a column 1 holding file names is used
    as is). A CSV export `DatabaseGrades.csv` (same columns) is read first; the .xlsx needs
    openpyxl. Source: public BID loaders (openpyxl cell(row, 1) / cell(row, 2), 586 images);
    column headers unconfirmed, so columns are taken by position.
    """
    df, path = _read_sheet(root, labels, _as_list(csv_export))
    rows = _Rows(path)
    df = _blank_cells(df, {"image number": df.columns[0], "MOS": df.columns[1]}, rows, path)
    resolve = _MediaResolver(root, media_dir)
    for r, key, mos in zip(_rownums(df), df.iloc[:, 0], df.iloc[:, 1]):
        try:
            name = f"DatabaseImage{int(float(key)):04d}.JPG"
        except ValueError:
            name = str(key).strip()
        rows.add(name, resolve(name), mos, None, r)
    return rows.labels()


@_register("agiqa3k", task="iqa", mos_range=(0.0, 5.0))
def read_agiqa3k(
    root: Path,
    split: str | None,
    labels: str = "data.csv",
    score_column: str = "mos_quality",
    std_column: str | None = "std_quality",
    media_dir: str | Sequence[str] = ("images", "Images", "AGIQA-3K", "AGIQA-3k", ""),
) -> _Labels:
    """AGIQA-3K (Li et al. 2023): `data.csv` with name, prompt, adj1, adj2, style, mos_quality,
    std_quality, mos_align, std_align.

    Perceptual quality is `mos_quality` (0-5 scale assumed, higher is better); `score_column=
    "mos_align"` with `std_column="std_align"` gives text-image alignment instead. Images by `name`
    under `images/` (layouts vary; several folders are tried). Source: AGIQA-3K loaders reading
    these columns; the 0-5 range is the assumption (observed values lie inside it).
    """
    path = _require(root / labels, root)
    df = _read_csv(path)
    c_name, c_mos = _col(df, "name", where=path), _col(df, score_column, where=path)
    c_std = _col(df, std_column, required=False) if std_column else None
    rows = _Rows(path)
    df = _blank_cells(df, {"name": c_name, score_column: c_mos}, rows, path)
    resolve = _MediaResolver(root, media_dir)
    sds = df[c_std] if c_std is not None else [None] * len(df)
    for r, n, m, sd in zip(_rownums(df), df[c_name], df[c_mos], sds):
        rows.add(str(n), resolve(str(n)), m, _std(sd), r)
    return rows.labels()


@_register("sriqa_bench", task="iqa", mos_range=None)
def read_sriqa_bench(
    root: Path,
    split: str | None,
    label_dir: str = "MOS",
    labels: str = "sriqa_bench_mos.txt",
    media_dir: str | Sequence[str] = ("images", ""),
    mos_range: Sequence[float] | None = None,
) -> _Labels:
    """SRIQA-Bench (super-resolution IQA, from the A-FINE work, Chen et al. CVPR 2025), as released.

    `MOS/<content>.txt`, one file per content, one `<image name>,<MOS>` line per rated image (comma
    or white space); the reference `<content>_Original.png` is one of the rated lines. Images live
    under `images/<method>/` and are found by name anywhere below `images/`. MOS is higher-is-
    better; the range is the observed min/max unless `mos_range` is given. Without a `MOS/`
    folder, the anchors' flat `name mos [std]` list (`labels`) is read instead.
    Source: the layout of the authors' release as users describe it; no public loader confirmed it.
    """
    folder = root / label_dir
    rng = (float(mos_range[0]), float(mos_range[1])) if mos_range is not None else None
    if not folder.is_dir():
        if (root / labels).is_file():
            return _name_mos_labels(root, labels, media_dir, mos_range)
        note = f" (the dataset root {root} does not exist)" if not root.exists() else ""
        raise FileNotFoundError(f"expected label files {folder}/<content>.txt or {root / labels}; neither found{note}")
    return _per_file_rows(root, folder, media_dir, "<content>.txt", "'<image name>,<MOS>'", space_ok=True).labels(
        mos_range=rng
    )
