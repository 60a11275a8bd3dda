"""Figures (matplotlib, Agg; PNG and PDF) rendered from the tidy records frame.

Per dataset and direction:

* ``map_vs_bits``: MAP against code length, one panel per mask rate;
* ``map_vs_mask``: MAP against the label mask rate, one panel per code length;
* ``precision_at_n``: precision of the top N, panels = mask rates (rows) x code lengths (columns);
* ``pr_hamming``: precision against recall within growing Hamming radii (Hamming-ranked methods).

Lines are methods; points are means over seeds, error bars the standard deviation. Runs scored under
different conventions (ties, no-relevant rule, protocol) are never averaged together: each combination gets
its own figures, named like the tables (``..._average-exclude-unseen``) when there is more than one. The PDF
has no creation date, so the same records give the same files.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from benchmark.reports import (CONVENTIONS, DIRECTION_LABELS, convention_sets, dataset_labels, method_labels,
                               select_conventions)

__all__ = ["write_plots"]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "dataset"


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = path.with_suffix(".png"), path.with_suffix(".pdf")
    # Fixed margins instead of bbox_inches="tight": text layout dominates the cost of a figure.
    fig.savefig(png, dpi=110, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    return [png, pdf]


def _labels(frame: pd.DataFrame) -> list[str]:
    return method_labels(frame)


def _grid(n_rows: int, n_cols: int):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    width, height = 3.6 * n_cols + 1.8, 2.9 * n_rows + 0.7
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width, height), squeeze=False)
    # Room on the right for the legend, on top for the title; no tight_layout (slow text measuring).
    fig.subplots_adjust(left=0.7 / width, right=1 - 1.9 / width, bottom=0.55 / height, top=1 - 0.6 / height,
                        wspace=0.32, hspace=0.55)
    return plt, fig, axes


def _finish(plt, fig, axes, title: str) -> None:
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        right = fig.subplotpars.right
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(right + 0.01, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)


def _line_plot(sub: pd.DataFrame, x_col: str, panel_col: str, panel_name, xlabel: str, ylabel: str,
               title: str, path: Path, log_x: bool = False) -> list[Path]:
    """One panel per value of ``panel_col``; one line per method; mean +- std over seeds."""
    panels = sorted(sub[panel_col].unique())
    plt, fig, axes = _grid(1, len(panels))
    for ax, pv in zip(axes[0], panels):
        part = sub[sub[panel_col] == pv]
        for label in _labels(part):
            pts = part[part["label"] == label].groupby(x_col)["value"].agg(["mean", "std"]).sort_index()
            ax.errorbar(pts.index.to_numpy(dtype=float), pts["mean"], yerr=pts["std"].fillna(0.0),
                        marker="o", ms=3, capsize=2, lw=1, label=label)
        ax.set_title(panel_name(pv), fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if x_col == "n_bits":
            # Code lengths double: a log2 axis with a tick at each length spaces them evenly.
            ticks = sorted(int(b) for b in part["n_bits"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(ticks, [str(t) for t in ticks])
            ax.minorticks_off()
        elif log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    _finish(plt, fig, axes, title)
    files = _save(fig, path)
    plt.close(fig)
    return files


def _curve_grid(sub_x: pd.DataFrame, sub_y: pd.DataFrame | None, title: str, xlabel: str, ylabel: str,
                path: Path, log_x: bool = False) -> list[Path]:
    """Curves per (mask rate, bits) panel. Without ``sub_y``, x is the row's x; with it, x and y are
    both metric values matched on (run, x) (precision against recall)."""
    masks = sorted(sub_x["mask_rate"].unique())
    bits = sorted(sub_x["n_bits"].unique())
    plt, fig, axes = _grid(len(masks), len(bits))
    for i, m in enumerate(masks):
        for j, b in enumerate(bits):
            ax = axes[i][j]
            part = sub_x[(sub_x["mask_rate"] == m) & (sub_x["n_bits"] == b)]
            for label in _labels(part):
                rows = part[part["label"] == label]
                if sub_y is None:
                    curve = rows.groupby("x")["value"].mean().sort_index()
                    ax.plot(curve.index.to_numpy(dtype=float), curve.to_numpy(), marker=".", lw=1, label=label)
                else:
                    ys = sub_y[sub_y["run_id"].isin(rows["run_id"])]
                    both = rows.merge(ys[["run_id", "x", "value"]], on=["run_id", "x"], suffixes=("_x", "_y"))
                    curve = both.groupby("x")[["value_x", "value_y"]].mean().sort_index().dropna()
                    ax.plot(curve["value_x"].to_numpy(), curve["value_y"].to_numpy(), marker=".", lw=1, label=label)
            ax.set_title(f"{int(b)} bits, mask {m:g}", fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            if log_x:
                ax.set_xscale("log")
            ax.grid(alpha=0.3)
    _finish(plt, fig, axes, title)
    files = _save(fig, path)
    plt.close(fig)
    return files


def write_plots(frame: pd.DataFrame, out_dir: Path | str, metric: str = "map") -> list[Path]:
    """Every figure for ``frame``; returns the files written (PNG and PDF of each)."""
    out_dir = Path(out_dir)
    ok = frame[(frame["status"] == "ok") & frame["direction"].notna()]
    if ok.empty:
        return []
    written: list[Path] = []
    combos = convention_sets(ok, metric) or [None]
    for conv in combos:
        # a run's conventions are those of its `metric` rows; its curves follow the run
        runs = select_conventions(ok[ok["metric"] == metric], conv)["run_id"].unique() if conv else None
        part = ok if runs is None else ok[ok["run_id"].isin(runs)]
        suffix = "" if len(combos) == 1 else "_" + "-".join(str(conv[c]) for c in CONVENTIONS)
        note = "" if len(combos) == 1 else " (" + ", ".join(f"{c} {conv[c]}" for c in CONVENTIONS) + ")"
        written += _dataset_plots(part, out_dir, metric, suffix, note)
    return written


def _dataset_plots(ok: pd.DataFrame, out_dir: Path, metric: str, suffix: str, note: str) -> list[Path]:
    """The figures of one conventions combination (file stems end with ``suffix``, titles with ``note``)."""
    written: list[Path] = []
    for dlabel in dataset_labels(ok):
        for direction in ("i2t", "t2i"):
            sub = ok[(ok["dataset_label"] == dlabel) & (ok["direction"] == direction)]
            if sub.empty:
                continue
            stem = f"{_slug(dlabel)}_{direction}{suffix}"
            where = f"{dlabel}, {DIRECTION_LABELS[direction]}{note}"
            m = sub[sub["metric"] == metric]
            if m["n_bits"].nunique() > 1:
                written += _line_plot(m, "n_bits", "mask_rate", lambda v: f"mask rate {v:g}", "bits", metric.upper(),
                                      f"{metric.upper()} vs code length: {where}", out_dir / f"map_vs_bits_{stem}")
            if m["mask_rate"].nunique() > 1:
                written += _line_plot(m, "mask_rate", "n_bits", lambda v: f"{int(v)} bits", "label mask rate",
                                      metric.upper(), f"{metric.upper()} vs mask rate: {where}", out_dir / f"map_vs_mask_{stem}")
            pan = sub[sub["metric"] == "precision_at_n"]
            if not pan.empty:
                written += _curve_grid(pan, None, f"precision@N: {where}", "N", "precision",
                                       out_dir / f"precision_at_n_{stem}", log_x=True)
            rec = sub[sub["metric"] == "pr_recall"]
            if not rec.empty:
                prec = sub[sub["metric"] == "pr_precision"]
                written += _curve_grid(rec, prec, f"precision-recall within Hamming radius: {where}", "recall",
                                       "precision", out_dir / f"pr_hamming_{stem}")
    return written
