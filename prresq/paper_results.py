"""The papers' reported numbers (`prresq/data/paper_results.csv`, facts with their source) beside an eval table.

    python -m prresq.eval ... paper=VisualQuality-R1        # prints and writes eval/results_vs_paper.md

`paper_results(model)` reads one model's rows; `beside_paper(table, model)` joins an eval results table
(benchmark, srcc, plcc, ...) with them by benchmark name (`conf/benchmark/*.yaml` names; the average row too).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PAPER_RESULTS = Path(__file__).with_name("data") / "paper_results.csv"


def paper_results(model: str) -> pd.DataFrame:
    """benchmark, paper_srcc, paper_plcc, source of `model`'s reported numbers; unknown model: a ValueError naming them."""
    df = pd.read_csv(PAPER_RESULTS, comment="#")
    known = sorted(df["model"].unique())
    if model not in known:
        raise ValueError(f"paper={model!r}: no reported numbers; {PAPER_RESULTS.name} has {known}")
    rows = df[df["model"] == model]
    wide = rows.pivot(index="benchmark", columns="metric", values="value").add_prefix("paper_")
    wide["source"] = rows.groupby("benchmark")["source"].first()
    return wide.reset_index()


def beside_paper(table: pd.DataFrame, model: str) -> pd.DataFrame:
    """The eval table's benchmark, srcc, plcc next to the paper's, with the differences (ours - paper)."""
    ours = table[["benchmark", "srcc", "plcc"]]
    out = ours.merge(paper_results(model), on="benchmark", how="left")
    out["d_srcc"] = out["srcc"] - out["paper_srcc"]
    out["d_plcc"] = out["plcc"] - out["paper_plcc"]
    return out[["benchmark", "srcc", "paper_srcc", "d_srcc", "plcc", "paper_plcc", "d_plcc", "source"]]
