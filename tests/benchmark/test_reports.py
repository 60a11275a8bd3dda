"""Reports: Table-1 layout, mean +- std over seeds, best in bold, LaTeX booktabs, byte-identical output."""
from __future__ import annotations

import pandas as pd
import pytest

from benchmark.records import records_to_frame
from benchmark.reports import (failed_table, map_cells, map_table_latex, map_table_markdown, timing_table,
                               write_reports)


def record(run_id, method, seed, i2t, t2i, n_bits=16, mask=0.0, dataset="synthetic", dlabel="syn", status="ok", fit=1.0):
    def direction(v):
        return {"map": v, "map_stable": v - 0.01, "n_queries": 5, "n_no_relevant": 0, "ties": "average",
                "no_relevant": "exclude", "precision_at_n": {"n": [1, 10], "precision": [v, v / 2]},
                "pr_hamming": {"radius": [0, 1, 2], "precision": [0.0, v, v / 2], "recall": [0.0, 0.5, 1.0]}}
    return {
        "run_id": run_id, "status": status,
        "spec": {"method": method, "label": method, "params": {}, "dataset": dataset, "dataset_label": dlabel,
                 "dataset_options": {}, "n_bits": n_bits, "mask_rate": mask, "seed": seed},
        "timings": {"fit_s": fit, "encode_s": fit / 10, "evaluate_s": 0.1}, "memory": {"peak_rss_mb": 300.0},
        "device": {"resolved": "cpu", "threads": 1}, "mask": {"n_train": 10, "n_labeled": 10},
        "metrics": {"i2t": direction(i2t), "t2i": direction(t2i)} if status == "ok" else None,
        "error": None if status == "ok" else {"message": "RuntimeError: boom"},
    }


@pytest.fixture
def frame():
    recs = []
    for seed, v in enumerate([0.5, 0.6, 0.7]):
        recs.append(record(f"s{seed}", "scm-orth", seed, v, 0.3))
        recs.append(record(f"r{seed}", "random", seed, 0.1, 0.35 + seed * 0.01))
        recs.append(record(f"b{seed}", "scm-orth", seed, 0.4, 0.2, n_bits=32))
        recs.append(record(f"m{seed}", "scm-orth", seed, 0.2, 0.1, mask=0.7))
    recs.append(record("w0", "random", 0, 0.11, 0.12, dataset="wiki", dlabel="wiki", fit=3.0))
    recs.append(record("f0", "scm-seq", 0, 0, 0, status="failed"))
    return records_to_frame(recs)


def test_cells_are_mean_and_sample_std_over_seeds(frame):
    cells = map_cells(frame, 0.0)
    c = cells[(cells["label"] == "scm-orth") & (cells["direction"] == "i2t") & (cells["n_bits"] == 16)].iloc[0]
    assert c["mean"] == pytest.approx(0.6) and c["std"] == pytest.approx(0.1) and c["n"] == 3
    md = map_table_markdown(frame, 0.0)
    assert "**0.6000 ± 0.1000**" in md  # best of its column, bold
    assert "0.1000 ± 0.0000" in md  # random, i2t 16 bits: not bold
    assert "**0.3600 ± 0.0100**" in md  # random wins t2i 16 bits
    assert "**0.1100**" in md and "0.1100 ±" not in md  # one seed: the mean alone


def test_table1_layout_rows_methods_columns_dataset_direction_bits(frame):
    md = map_table_markdown(frame, 0.0).splitlines()
    header = [h.strip() for h in md[0].strip("|").split("|")]
    # datasets in registry order (wiki before synthetic), then direction, then bits
    assert header == ["method", "wiki I→T 16", "wiki T→I 16", "syn I→T 16", "syn I→T 32", "syn T→I 16", "syn T→I 32"]
    rows = [line.split("|")[1].strip() for line in md[2:]]
    assert rows == ["random", "scm-orth"]  # registry order: the random floor first; failed scm-seq absent


def test_one_table_per_mask_rate(frame):
    masked = map_table_markdown(frame, 0.7)
    assert "**0.2000 ± 0.0000**" in masked and "random" not in masked
    assert map_table_markdown(frame, 0.3) == ""


def test_latex_is_booktabs_with_bold_best(frame):
    tex = map_table_latex(frame, 0.0, label="tab:x")
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\multicolumn", r"\label{tab:x}", "Image vs. Text"):
        assert token in tex
    line = next(l for l in tex.splitlines() if l.startswith("scm-orth"))
    assert r"\bfseries 0.6000 $\pm$ 0.1000" in line
    line = next(l for l in tex.splitlines() if l.startswith("random"))
    assert r"\bfseries 0.1000" not in line


def test_timing_table_means_per_method_and_dataset(frame):
    t = timing_table(frame)
    assert t.loc["random", ("wiki", "fit s")] == "3"
    assert t.loc["random", ("syn", "fit s")] == "1" and t.loc["random", ("syn", "runs")] == "3"
    assert t.loc["scm-orth", ("syn", "runs")] == "9"


def test_failed_runs_are_listed(frame):
    failed = failed_table(frame)
    assert failed["run_id"].tolist() == ["f0"] and failed["error"].item() == "RuntimeError: boom"


def test_tables_are_written_and_byte_identical_when_rewritten(frame, tmp_path):
    written = write_reports(frame, tmp_path / "a", plots=False)
    names = sorted(p.relative_to(tmp_path / "a").as_posix() for p in written)
    assert names == ["results.csv", "results.md", "table_map_mask0.7.md", "table_map_mask0.7.tex", "table_map_mask0.md",
                     "table_map_mask0.tex", "table_timing.md", "table_timing.tex"]
    write_reports(frame.sample(frac=1.0, random_state=0), tmp_path / "b", plots=False)  # row order must not matter
    for n in names:
        assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    text = (tmp_path / "a" / "results.md").read_text()
    assert "## Failed runs" in text and "f0" in text


@pytest.mark.slow
def test_plots_per_dataset_and_direction_png_and_pdf_reproducible(frame, tmp_path):
    one = frame[(frame["dataset"] == "synthetic") & (frame["direction"] == "i2t")]  # keeps the test fast
    written = write_reports(one, tmp_path / "a")
    plots = sorted(p.name for p in written if p.parent.name == "plots")
    assert plots == sorted(f"{kind}_syn_i2t.{ext}" for kind in ("map_vs_bits", "map_vs_mask", "precision_at_n", "pr_hamming")
                           for ext in ("png", "pdf"))
    write_reports(one, tmp_path / "b")
    for name in plots:
        assert (tmp_path / "a" / "plots" / name).read_bytes() == (tmp_path / "b" / "plots" / name).read_bytes(), name


def test_stale_generated_files_are_replaced(frame, tmp_path):
    out = tmp_path / "r"
    write_reports(frame, out, plots=False)
    assert (out / "table_map_mask0.7.md").exists()
    (out / "notes.txt").write_text("mine")
    write_reports(frame[frame["mask_rate"] == 0.0], out, plots=False)
    assert not (out / "table_map_mask0.7.md").exists() and (out / "notes.txt").read_text() == "mine"


def test_empty_frame_gives_no_tables():
    empty = records_to_frame([])
    assert isinstance(empty, pd.DataFrame) and map_table_markdown(empty, 0.0) == ""


def test_captions_name_the_image_input_of_each_method_on_pixel_datasets(tmp_path):
    from benchmark.records import Record
    from benchmark.records import image_input as of_record

    def image_input(rec):
        return of_record(Record.from_dict(rec))

    gist = {"name": "mini", "image": [10, 512], "image_kind": "features", "image_features": "gist",
            "image_features_params": '{"image_size": 128}'}
    pixels = {"name": "mini", "image": [10, 128, 128, 3], "image_kind": "pixels"}
    recs = [record("g", "scm-seq", 0, 0.6, 0.6, dataset="mini", dlabel="mini"),
            record("p", "rdcmh", 0, 0.55, 0.6, dataset="mini", dlabel="mini"),
            record("w", "random", 0, 0.1, 0.1, dataset="wiki", dlabel="wiki")]
    recs[0]["dataset"] = gist
    recs[1]["dataset"] = pixels
    recs[1]["method"] = {"params": {"image_backbone": "auto", "image_size": 64, "image_weights": None}}
    recs[2]["dataset"] = {"name": "wiki", "image": [10, 128], "image_kind": "features"}
    assert image_input(recs[0]) == "gist 512-d (128 px)"
    assert image_input(recs[1]) == "pixels 64 px, cnnf from scratch"
    recs[1]["method"]["params"]["image_weights"] = "imagenet-vgg-f.mat"
    assert image_input(recs[1]) == "pixels 64 px, cnnf pretrained"
    frame = records_to_frame(recs)
    write_reports(frame, tmp_path, plots=False)
    text = (tmp_path / "results.md").read_text()
    assert "Image input on mini: gist 512-d (128 px) (scm-seq); pixels 64 px, cnnf pretrained (rdcmh)." in text
    assert "Image input on wiki" not in text  # every method read Wiki's own feature vectors
    assert "Image input on mini" in (tmp_path / "table_map_mask0.tex").read_text()


def test_captions_state_each_conventions_and_cells_never_mix_them(tmp_path):
    """A suite scored with ties: stable, no_relevant: zero beside the default gets its own table and caption."""
    def conv(rec, ties, no_relevant):
        for m in rec["metrics"].values():
            m["ties"], m["no_relevant"] = ties, no_relevant
        return rec

    recs = [record("d0", "random", 0, 0.2, 0.2), record("d1", "scm-orth", 0, 0.5, 0.5),
            conv(record("z0", "random", 1, 0.1, 0.1), "stable", "zero"),
            conv(record("z1", "scm-orth", 1, 0.4, 0.4), "stable", "zero")]
    frame = records_to_frame(recs)
    assert set(frame.loc[frame["metric"] == "map", "ties"]) == {"average", "stable"}
    assert set(frame.loc[frame["metric"] == "map_stable", "ties"]) == {"stable"}
    written = {p.name for p in write_reports(frame, tmp_path, plots=False)}
    assert {"table_map_mask0_average-exclude-None.md", "table_map_mask0_stable-zero-None.md"} <= written
    text = (tmp_path / "results.md").read_text()
    assert "Tie-aware (expected over the orders of items at equal distance); queries with no relevant database " \
           "item excluded from the mean (and counted)." in text
    assert "Ties broken by database order; queries with no relevant database item scored 0." in text
    default = (tmp_path / "table_map_mask0_average-exclude-None.md").read_text()
    stable = (tmp_path / "table_map_mask0_stable-zero-None.md").read_text()
    assert "0.5000" in default and "0.4000" not in default  # one seed each: never averaged together
    assert "0.4000" in stable and "0.5000" not in stable
    tex = (tmp_path / "table_map_mask0_stable-zero-None.tex").read_text()
    assert "ties broken by database order" in tex.lower() and "tie-aware" not in tex.lower()
    import pandas as pd

    csv = pd.read_csv(tmp_path / "results.csv")
    assert len(csv) == 2 * 4 and {"ties", "no_relevant", "protocol", "map"} <= set(csv.columns)
    assert sorted(csv.loc[csv["run_id"] == "z0", "no_relevant"]) == ["zero", "zero"]


def test_plots_never_average_runs_scored_under_different_conventions(tmp_path, monkeypatch):
    """Figures split by conventions like the tables: one set of files per combination, values never mixed."""
    import benchmark.plots as plots

    def conv(rec, ties, no_relevant):
        for m in rec["metrics"].values():
            m["ties"], m["no_relevant"] = ties, no_relevant
        return rec

    recs = []
    for bits in (16, 32):
        recs += [record(f"d{bits}", "random", 0, 0.2, 0.2, n_bits=bits),
                 conv(record(f"z{bits}", "random", 1, 0.9, 0.9, n_bits=bits), "stable", "zero")]
    frame = records_to_frame(recs)
    seen = []
    original = plots._line_plot

    def spy(sub, *args, **kwargs):
        seen.append((args[-1].name, set(sub["ties"]), sorted(sub["value"])))
        return original(sub, *args, **kwargs)

    monkeypatch.setattr(plots, "_line_plot", spy)
    names = {p.name for p in plots.write_plots(frame, tmp_path)}
    assert {"map_vs_bits_syn_i2t_average-exclude-None.png", "map_vs_bits_syn_i2t_stable-zero-None.png"} <= names
    by_name = {name: (ties, values) for name, ties, values in seen}
    assert by_name["map_vs_bits_syn_i2t_average-exclude-None"] == ({"average"}, [0.2, 0.2])
    assert by_name["map_vs_bits_syn_i2t_stable-zero-None"] == ({"stable"}, [0.9, 0.9])
    one = records_to_frame([r for r in recs if r["run_id"].startswith("d")])
    assert "map_vs_bits_syn_i2t.png" in {p.name for p in plots.write_plots(one, tmp_path / "one")}
