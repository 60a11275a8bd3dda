"""Tables (Markdown and LaTeX) rendered from the tidy records frame, never from anything else.

* MAP tables in the layout of the RDCMH paper's Table 1: rows are methods; columns are
  dataset x direction (Image vs. Text = image queries, text database; Text vs. Image) x bits. One
  table per label mask rate: mask 0 is Table 1, every other rate a Table 2 counterpart.
* Cells are mean +- sample standard deviation over seeds (the mean alone for one seed); the best
  mean of each column, at the displayed precision, is bold.
* A timing table: fit and encode seconds and peak memory per method and dataset.

Output depends only on the records, so ``report`` reproduces the same files byte for byte.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DIRECTION_LABELS", "CONVENTIONS", "map_cells", "map_table_markdown", "map_table_latex", "timing_table",
    "failed_table", "conventions_text", "runs_table", "write_reports", "print_tables", "method_labels",
    "dataset_labels",
]

DIRECTION_LABELS = {"i2t": "I→T", "t2i": "T→I"}
DIRECTION_LABELS_LONG = {"i2t": "Image vs. Text", "t2i": "Text vs. Image"}
METRIC_NAMES = {"map": "MAP@all", "map_stable": "MAP@all", "ndcg": "NDCG"}
# The evaluation conventions each value of the frame carries; cells never average across them.
CONVENTIONS = ("ties", "no_relevant", "protocol")
_TIES_TEXT = {"average": "tie-aware (expected over the orders of items at equal distance)",
              "stable": "ties broken by database order"}
_NO_RELEVANT_TEXT = {"exclude": "queries with no relevant database item excluded from the mean (and counted)",
                     "zero": "queries with no relevant database item scored 0"}
_PROTOCOL_TEXT = {"standard": "database holds the training items", "unseen": "database holds no training item"}
# Files this module writes; anything else in the reports folder is left alone.
_GENERATED = ("results.md", "results.csv", "table_*.md", "table_*.tex", "plots/*.png", "plots/*.pdf")


# ---------------------------------------------------------------------------------------- ordering
def _order_key(order, name: str, label: str):
    """Recorded registry position first (plug-ins, with none, after), then name; the bare name before
    its labelled variants."""
    missing = order is None or pd.isna(order)
    return (missing, 0 if missing else int(order), name, label != name, label)


def _ordered(frame: pd.DataFrame, label_col: str, name_col: str, order_col: str) -> list[str]:
    """Labels in the order the records carry (``method_order`` / ``dataset_order``)."""
    cols = [label_col, name_col] + ([order_col] if order_col in frame else [])
    triples = frame[cols].drop_duplicates([label_col, name_col]).itertuples(index=False)
    keyed = sorted(triples, key=lambda t: _order_key(t[2] if len(t) > 2 else None, t[1], t[0]))
    out: list[str] = []
    for t in keyed:
        if t[0] not in out:
            out.append(t[0])
    return out


def method_labels(frame: pd.DataFrame) -> list[str]:
    return _ordered(frame, "label", "method", "method_order")


def dataset_labels(frame: pd.DataFrame) -> list[str]:
    return _ordered(frame, "dataset_label", "dataset", "dataset_order")


def _fmt(mean: float, std: float, n: int, pm: str) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    cell = f"{mean:.4f}"
    if n > 1 and std is not None and not math.isnan(std):
        cell += f" {pm} {std:.4f}"
    return cell


# ---------------------------------------------------------------------------------------- MAP tables
def select_conventions(frame: pd.DataFrame, conventions: dict | None) -> pd.DataFrame:
    """The rows of ``frame`` computed under ``conventions`` (a dict of :data:`CONVENTIONS`; None: all)."""
    if not conventions:
        return frame
    keep = np.ones(len(frame), dtype=bool)
    for col, value in conventions.items():
        keep &= frame[col].isna().to_numpy() if value is None or value is pd.NA else (frame[col] == value).fillna(False).to_numpy()
    return frame[keep]


def convention_sets(frame: pd.DataFrame, metric: str) -> list[dict]:
    """The distinct (ties, no_relevant, protocol) combinations of ``metric``'s values, in a fixed order."""
    ok = frame[(frame["status"] == "ok") & (frame["metric"] == metric)]
    combos = ok[list(CONVENTIONS)].drop_duplicates()
    out = [{c: (None if pd.isna(v) else v) for c, v in zip(CONVENTIONS, row)} for row in combos.itertuples(index=False)]
    return sorted(out, key=lambda d: tuple(str(d[c]) for c in CONVENTIONS))


def conventions_text(conventions: dict) -> str:
    """One sentence naming the conventions of a table's values, built from the frame's columns."""
    parts = []
    if conventions.get("ties"):
        parts.append(_TIES_TEXT.get(conventions["ties"], f"ties: {conventions['ties']}"))
    if conventions.get("no_relevant"):
        parts.append(_NO_RELEVANT_TEXT.get(conventions["no_relevant"], f"no_relevant: {conventions['no_relevant']}"))
    if conventions.get("protocol"):
        parts.append(f"{conventions['protocol']} protocol ("
                     f"{_PROTOCOL_TEXT.get(conventions['protocol'], conventions['protocol'])})")
    return ("; ".join(parts)[:1].upper() + "; ".join(parts)[1:] + ".") if parts else ""


def map_cells(frame: pd.DataFrame, mask_rate: float, metric: str = "map", conventions: dict | None = None) -> pd.DataFrame:
    """Aggregated cells for one mask rate: one row per (label, dataset_label, direction, n_bits) and
    evaluation conventions (ties, no_relevant, protocol), so no cell mixes conventions;
    ``conventions`` keeps one combination only.

    Columns: mean, std (ddof=1), n (seeds), best (the column's best mean at 4 decimals).
    """
    frame = select_conventions(frame, conventions)
    ok = frame[(frame["status"] == "ok") & (frame["metric"] == metric) & np.isclose(frame["mask_rate"], mask_rate)]
    keys = ["method", "label", "method_order", "dataset", "dataset_label", "dataset_order", *CONVENTIONS,
            "direction", "n_bits"]
    if ok.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n", "best"])
    agg = ok.groupby(keys, dropna=False, sort=True)["value"].agg(mean="mean", std="std", n="count").reset_index()
    rounded = agg["mean"].round(4)
    col_best = agg.assign(_r=rounded).groupby(["dataset_label", "direction", "n_bits", *CONVENTIONS],
                                              dropna=False)["_r"].transform("max")
    agg["best"] = (rounded == col_best) & rounded.notna()
    return agg


def _layout(cells: pd.DataFrame, pm: str, bold) -> pd.DataFrame:
    """Cells -> methods x (dataset, direction, bits) frame of display strings."""
    rows = method_labels(cells)
    dsets = dataset_labels(cells)
    columns = []
    for d in dsets:
        sub = cells[cells["dataset_label"] == d]
        for direction in ("i2t", "t2i"):
            for b in sorted(sub.loc[sub["direction"] == direction, "n_bits"].unique()):
                columns.append((d, direction, int(b)))
    table = pd.DataFrame("", index=pd.Index(rows, name="method"),
                         columns=pd.MultiIndex.from_tuples(columns, names=["dataset", "direction", "bits"]))
    for c in cells.itertuples(index=False):
        text = _fmt(c.mean, c.std, int(c.n), pm)
        table.loc[c.label, (c.dataset_label, c.direction, int(c.n_bits))] = bold(text) if c.best else text
    return table


def _inputs_note(frame: pd.DataFrame | None, cells: pd.DataFrame) -> str:
    """" Image input on D: A (methods); B (methods)." for each dataset whose methods read different inputs
    (pixels for the deep methods, extracted features for the others); empty when every method read the
    dataset's own feature vectors."""
    if frame is None or "image_input" not in frame or cells.empty:
        return ""
    notes = []
    for d in dataset_labels(cells):
        labels = set(cells.loc[cells["dataset_label"] == d, "label"])
        runs = frame[(frame["dataset_label"] == d) & frame["label"].isin(labels)]
        kinds = runs.groupby("image_input", sort=True)["label"].agg(lambda s: ", ".join(sorted(set(s))))
        if len(kinds) == 1 and str(kinds.index[0]).startswith("features"):
            continue
        notes.append(f"image input on {d}: " + "; ".join(f"{k} ({v})" for k, v in kinds.items()))
    return (" " + ". ".join(n[0].upper() + n[1:] for n in notes) + ".") if notes else ""


def _caption(metric: str, mask_rate: float, cells: pd.DataFrame, frame: pd.DataFrame | None = None) -> str:
    seeds = sorted(set(int(n) for n in cells["n"])) if len(cells) else []
    seeds_text = "/".join(map(str, seeds)) if seeds else "0"
    name = METRIC_NAMES.get(metric, metric)
    conv = _cells_conventions(cells)
    text = conventions_text(conv)
    return (f"{name}, {mask_rate:.0%} of training labels masked; mean ± std over {seeds_text} seed(s); "
            f"best per column in bold." + (f" {text}" if text else "") + _inputs_note(frame, cells))


def _cells_conventions(cells: pd.DataFrame) -> dict:
    combos = cells[list(CONVENTIONS)].drop_duplicates() if len(cells) else pd.DataFrame(columns=list(CONVENTIONS))
    if len(combos) > 1:
        raise ValueError(f"cells under {len(combos)} evaluation conventions; pass conventions= to pick one")
    if combos.empty:
        return {}
    return {c: (None if pd.isna(v) else v) for c, v in zip(CONVENTIONS, next(combos.itertuples(index=False)))}


def map_table_markdown(frame: pd.DataFrame, mask_rate: float, metric: str = "map",
                       conventions: dict | None = None) -> str:
    cells = map_cells(frame, mask_rate, metric, conventions)
    _cells_conventions(cells)
    if cells.empty:
        return ""
    table = _layout(cells, "±", lambda s: f"**{s}**")
    flat = table.copy()
    flat.columns = [f"{d} {DIRECTION_LABELS[r]} {b}" for d, r, b in table.columns]
    return flat.to_markdown(colalign=["left"] + ["right"] * flat.shape[1]) + "\n"


def map_table_latex(frame: pd.DataFrame, mask_rate: float, metric: str = "map", label: str | None = None,
                    conventions: dict | None = None) -> str:
    cells = map_cells(frame, mask_rate, metric, conventions)
    if cells.empty:
        return ""
    plain = _layout(cells, r"$\pm$", lambda s: s)
    boldmask = _layout(cells, "", lambda s: "B").map(lambda s: s == "B")
    plain.columns = pd.MultiIndex.from_tuples(
        [(d, DIRECTION_LABELS_LONG[r], b) for d, r, b in plain.columns], names=["Dataset", "Task", "Bits"])
    boldmask.columns = plain.columns
    plain.index.name = None
    css = pd.DataFrame(np.where(boldmask.to_numpy(), "font-weight: bold;", ""), index=plain.index, columns=plain.columns)
    styler = plain.style.apply(lambda _: css, axis=None)
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    caption = _caption(metric, mask_rate, cells, frame).replace("±", r"$\pm$").replace("%", r"\%")
    return styler.to_latex(
        hrules=True, convert_css=True, multicol_align="c", column_format="l" + "r" * plain.shape[1],
        caption=caption, label=label, position_float="centering",
    )


# ---------------------------------------------------------------------------------------- other tables
def _runs(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates("run_id")


def timing_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean fit / encode seconds and peak memory per method (rows) and dataset, over all successful runs."""
    runs = _runs(frame[frame["status"] == "ok"])
    if runs.empty:
        return pd.DataFrame()
    agg = runs.groupby(["method", "label", "method_order", "dataset", "dataset_label", "dataset_order"], sort=True,
                       dropna=False).agg(
        fit_s=("fit_s", "mean"), encode_s=("encode_s", "mean"), peak_rss_mb=("peak_rss_mb", "max"),
        runs=("run_id", "count")).reset_index()
    rows = method_labels(agg)
    dsets = dataset_labels(agg)
    stats = [("fit_s", "fit s"), ("encode_s", "encode s"), ("peak_rss_mb", "peak MB"), ("runs", "runs")]
    cols = pd.MultiIndex.from_tuples([(d, name) for d in dsets for _, name in stats], names=["dataset", "stat"])
    table = pd.DataFrame("", index=pd.Index(rows, name="method"), columns=cols)
    for r in agg.itertuples(index=False):
        for key, name in stats:
            v = getattr(r, key)
            table.loc[r.label, (r.dataset_label, name)] = (
                str(int(v)) if key == "runs" else ("–" if v is None or pd.isna(v) else f"{v:.3g}"))
    return table


def runs_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The tidy frame with one row per run and direction: scalar metrics as columns, conventions kept."""
    scalar = frame[frame["x"].isna() & frame["metric"].notna()
                   & ~frame["metric"].isin(["precision_at_n", "pr_precision", "pr_recall"])]
    run_cols = [c for c in frame.columns if c not in ("metric", "x", "value", "ties", "topk")]
    wide = scalar.pivot_table(index=["run_id", "direction"], columns="metric", values="value", aggfunc="first",
                              dropna=False)
    wide.columns = [str(c) for c in wide.columns]
    ties = scalar[scalar["metric"] == "map"].set_index(["run_id", "direction"])["ties"].rename("ties")
    base = frame[run_cols].drop_duplicates(["run_id", "direction"]).set_index(["run_id", "direction"])
    out = base.join(ties).join(wide).reset_index()
    return out.sort_values(["run_id", "direction"], na_position="first", kind="mergesort").reset_index(drop=True)


def failed_table(frame: pd.DataFrame) -> pd.DataFrame:
    runs = _runs(frame[frame["status"] != "ok"])
    cols = ["run_id", "label", "dataset_label", "n_bits", "mask_rate", "seed", "error"]
    return runs[cols].sort_values(["label", "dataset_label", "n_bits", "mask_rate", "seed", "run_id"]).reset_index(drop=True)


def _timing_markdown(table: pd.DataFrame) -> str:
    flat = table.copy()
    flat.columns = [f"{d} {s}" for d, s in table.columns]
    return flat.to_markdown(colalign=["left"] + ["right"] * flat.shape[1]) + "\n"


def _timing_latex(table: pd.DataFrame) -> str:
    t = table.copy()
    t.index.name = None
    t.columns = t.columns.set_names(["Dataset", "Method"])
    styler = t.style.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(hrules=True, multicol_align="c", column_format="l" + "r" * t.shape[1],
                           caption="Mean fit and encode seconds and peak resident memory (MB) per method and dataset, over all successful runs.",
                           position_float="centering")


def _mask_rates(frame: pd.DataFrame) -> list[float]:
    ok = frame[frame["status"] == "ok"]
    return sorted(float(r) for r in ok["mask_rate"].dropna().unique())


def _mask_name(rate: float) -> str:
    return f"{rate:g}"


# ---------------------------------------------------------------------------------------- writing
def _remove_generated(reports_dir: Path) -> None:
    for pattern in _GENERATED:
        for p in reports_dir.glob(pattern):
            if p.is_file():
                p.unlink()


def _write(path: Path, text: str) -> None:
    from benchmark.records import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def write_reports(frame: pd.DataFrame, reports_dir: Path | str, *, metric: str = "map", plots: bool = True) -> list[Path]:
    """Write every table (and plot) for ``frame`` into ``reports_dir``; returns the files written."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    _remove_generated(reports_dir)
    written: list[Path] = []
    sections = ["# Cross-modal hashing benchmark results", ""]
    runs = _runs(frame)
    n_ok = int((runs["status"] == "ok").sum())
    sections += [f"{len(runs)} run(s): {n_ok} ok, {len(runs) - n_ok} failed.", ""]
    sections += [
        "Relevance = sharing at least one label. I→T: image queries against the text database; T→I: the "
        "reverse. Each table's caption states the conventions its values were computed under.",
        "",
    ]
    combos = convention_sets(frame, metric)
    for rate in _mask_rates(frame):
        for conv in combos:
            md = map_table_markdown(frame, rate, metric, conv)
            if not md:
                continue
            # one combination keeps the plain file name; several get the conventions in theirs
            suffix = "" if len(combos) == 1 else "_" + "-".join(str(conv[c]) for c in CONVENTIONS)
            name = f"table_{metric}_mask{_mask_name(rate)}{suffix}"
            title = "Table 1 counterpart" if rate == 0 else "Table 2 counterpart"
            cells = map_cells(frame, rate, metric, conv)
            sections += [f"## {title}: {METRIC_NAMES.get(metric, metric)}, mask rate {_mask_name(rate)}", "",
                         _caption(metric, rate, cells, frame), "", md]
            _write(reports_dir / f"{name}.md", md)
            _write(reports_dir / f"{name}.tex", map_table_latex(frame, rate, metric, label=f"tab:{name[6:]}",
                                                                conventions=conv))
            written += [reports_dir / f"{name}.md", reports_dir / f"{name}.tex"]
    _write(reports_dir / "results.csv", runs_table(frame).to_csv(index=False))
    written.append(reports_dir / "results.csv")
    timing = timing_table(frame)
    if not timing.empty:
        md = _timing_markdown(timing)
        sections += ["## Timing", "", "Mean fit and encode seconds and peak resident memory (MB) per method "
                     "and dataset, over all successful runs (all code lengths, mask rates and seeds).", "", md]
        _write(reports_dir / "table_timing.md", md)
        _write(reports_dir / "table_timing.tex", _timing_latex(timing))
        written += [reports_dir / "table_timing.md", reports_dir / "table_timing.tex"]
    failed = failed_table(frame)
    if not failed.empty:
        sections += ["## Failed runs", "", failed.to_markdown(index=False) + "\n"]
    if plots:
        from benchmark.plots import write_plots

        figures = write_plots(frame, reports_dir / "plots", metric=metric)
        written += figures
        if figures:
            sections += ["## Plots", ""] + [f"- [{p.name}](plots/{p.name})" for p in figures if p.suffix == ".png"] + [""]
    _write(reports_dir / "results.md", "\n".join(sections))
    written.append(reports_dir / "results.md")
    return written


def print_tables(frame: pd.DataFrame, metric: str = "map", out=None) -> None:
    """The MAP tables of ``frame`` as Markdown on ``out`` (stdout by default)."""
    import sys

    out = out or sys.stdout
    for rate in _mask_rates(frame):
        for conv in convention_sets(frame, metric):
            md = map_table_markdown(frame, rate, metric, conv)
            if md:
                text = conventions_text(conv)
                print(f"\n{METRIC_NAMES.get(metric, metric)}, mask rate {_mask_name(rate)}"
                      + (f" ({text.rstrip('.')})" if text else "") + ":\n", file=out)
                print(md, file=out)
                note = _inputs_note(frame, map_cells(frame, rate, metric, conv))
                if note:
                    print(note.strip() + "\n", file=out)
