"""Command line: ``python -m benchmark {run,rescore,report,list,check,prepare}`` (also installed as ``cmh-bench``).

Exit codes: 0 ok; 1 some runs (or checks) failed, the rest still ran and were recorded; 2 bad usage
or bad input (the one-line reason is printed, no traceback).
"""
from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from pathlib import Path

from benchmark.errors import InputError

__all__ = ["main", "build_parser"]

PROG = "python -m benchmark"

EXAMPLES = {
    None: f"""
        examples:
          {PROG} run                               # default suite on the bundled Wiki data
          {PROG} run --suite quick --jobs 2        # seconds-long synthetic suite, two processes
          {PROG} report                            # tables and plots from the records that exist
          {PROG} list                              # methods, datasets and suites
          {PROG} check scm-orth                    # common checks on a method (or a plug-in)
          {PROG} prepare mirflickr25k --images Z --annotations A --out DIR   # MIRFlickr from its official files
        """,
    "run": f"""
        examples:
          {PROG} run
          {PROG} run --suite full --jobs 4 --data-root /data/cmh
          {PROG} run --suite quick --methods random,scm-orth --bits 16 --seeds 0
          {PROG} run --suite my_suite.yaml --device cuda --timeout 3600
          {PROG} run --suite quick --dry-run       # list the runs, run nothing
        A run whose record exists is skipped (use --force). Records go to RESULTS_DIR/records/,
        codes to RESULTS_DIR/codes/, logs to RESULTS_DIR/logs/. Exit status 1 when a run of the
        suite failed, now or before (rerun those with --retry-failed); 2 for bad input.
        """,
    "report": f"""
        examples:
          {PROG} report
          {PROG} report --results-dir results --reports-dir reports
          {PROG} report --suite quick --metric map_stable --no-plots
        Writes reports/results.md, table_*.md / table_*.tex and plots/*.png|pdf from the records
        alone; the same records always give the same files.
        """,
    "list": f"""
        examples:
          {PROG} list
          {PROG} list --data-root /data/cmh
        """,
    "check": f"""
        examples:
          {PROG} check random
          {PROG} check mypackage.hashers:MyHasher
        Runs the common checks (code dtype/shape/values, determinism in one process and across two
        fresh processes, inputs never written (they are read-only), pickling, batch = one-by-one
        encoding, masked labels never read, beating the random floor) with the method's check_params.
        Each failure is one line: the check, what failed, and the fix.
        """,
    "prepare": f"""
        examples:
          {PROG} prepare mirflickr25k --images mirflickr25k.zip --annotations mirflickr25k_annotations_v080.zip \\
              --lall mirflickr25k-lall.mat --yall mirflickr25k-yall.mat --out data/mirflickr25k
          {PROG} prepare mirflickr25k --images mirflickr/ --annotations annotations/ --out out --rows 0:730 --size 32
        Writes mirflickr25k-iall.npy (uint8 n x S x S x 3), -lall.mat, -yall.mat, -imageids.csv and a manifest
        with the sha256 of every input and output. Rows follow the DCMH release (bundled row -> image-id map).
        Results are compared with --lall/--yall where given; differences are reported (exit 0 with a warning,
        1 with --strict). An interrupted run resumes; a changed input starts over. Tags are read from
        meta/tags in --images unless --tags is given.
        """,
}


def _shipped_suites() -> list[str]:
    """Names of the suite files shipped in benchmark/suites (read from disk, so help never goes stale)."""
    from benchmark.suites import list_suites

    return list_suites()


def _epilog(name):
    return textwrap.dedent(EXAMPLES[name]).strip("\n")


def _formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def _split(values, convert, flag: str):
    """Comma-separated and/or repeated values -> list, or None when the flag is absent.

    An empty item (``--bits ,`` or ``--bits 16,,32``) is an error: a flag given must select something."""
    if values is None:
        return None
    what = {int: "integers", float: "numbers", str: "names"}.get(convert, f"{convert.__name__} values")
    out = []
    for chunk in values:
        for item in chunk.split(","):
            item = item.strip()
            if not item:
                raise InputError(f"{flag} {chunk!r} is invalid (an empty item); valid: a comma-separated list of {what}")
            try:
                out.append(convert(item))
            except ValueError:
                raise InputError(f"{flag} {item!r} is invalid; valid: a comma-separated list of {what}") from None
    return out


# ---------------------------------------------------------------------------------------- run
def _check_run_args(args, filters: dict) -> None:
    """Every argument that cannot work fails here, in one line, before the suite is even read."""
    import math

    from benchmark.runner import MAX_TIMEOUT_S, check_writable_dir

    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs} is invalid; valid: a positive integer")
    if args.cluster_jobs is not None and (args.cluster is None or args.cluster_jobs < 1):
        raise InputError(f"--cluster-jobs {args.cluster_jobs} is invalid; valid: a positive integer, with --cluster")
    if args.cluster is not None:  # the value's form (and a jobqueue file) is checked before the suite is read
        from benchmark.cluster import parse_cluster

        parse_cluster(args.cluster, jobs=args.cluster_jobs, threads=args.threads or 1)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads} is invalid; valid: a positive integer")
    if args.timeout is not None and not (math.isfinite(args.timeout) and 0 < args.timeout <= MAX_TIMEOUT_S):
        raise InputError(f"--timeout {args.timeout} is invalid; valid: a positive finite number of seconds up to "
                         f"{MAX_TIMEOUT_S:.0f}")
    for flag, values, ok, what in (("--bits", filters["bits"], lambda v: v > 0, "positive integers"),
                                   ("--seeds", filters["seeds"], lambda v: v >= 0, "non-negative integers"),
                                   ("--mask-rates", filters["mask_rates"], lambda v: 0 <= v < 1, "numbers in [0, 1)")):
        bad = [v for v in values or () if not ok(v)]
        if bad:
            raise InputError(f"{flag} {bad[0]} is invalid; valid: {what}")
    if args.data_root is not None:
        if not str(args.data_root).strip():
            raise InputError("--data-root '' is invalid; valid: a directory (omit it for $CMH_DATA_ROOT or ./data)")
        if not Path(args.data_root).is_dir():
            raise InputError(f"--data-root {str(args.data_root)!r} is not a directory; valid: an existing directory")
    if not args.dry_run:
        check_writable_dir(args.results_dir, "--results-dir")
        if not args.no_report:
            check_writable_dir(args.reports_dir, "--reports-dir")


def _cmd_run(args) -> int:
    from benchmark.evaluate import EvalConfig
    from benchmark.records import RecordStore, load_frame
    from benchmark.runner import RunSettings, available_cores, resolve_run_device, run_suite
    from benchmark.suites import expand_suite, filter_specs

    filters = dict(
        methods=_split(args.methods, str, "--methods"),
        datasets=_split(args.datasets, str, "--datasets"),
        bits=_split(args.bits, int, "--bits"),
        mask_rates=_split(args.mask_rates, float, "--mask-rates"),
        seeds=_split(args.seeds, int, "--seeds"),
    )
    _check_run_args(args, filters)
    # A module:Class plug-in named by --methods joins the suite's grid (README: "runs it in any suite").
    plugins = [m for m in filters["methods"] or () if ":" in m]
    expansion = expand_suite(args.suite, data_root=args.data_root, extra_methods=plugins)
    name = expansion.suite.name
    config = EvalConfig.from_dict(expansion.evaluation, f"suite {name}: evaluation")
    for dname in filters["datasets"] or ():
        if dname in expansion.skipped_datasets and not any(s.dataset == dname for s in expansion.specs):
            raise InputError(f"--datasets {dname}: {expansion.skipped_datasets[dname]}")
    specs = expansion.specs
    if specs:
        specs = filter_specs(specs, suite_name=f"suite {name}", **filters)
    if not specs:
        why = "; ".join(expansion.skipped) or "its grid is empty"
        raise InputError(f"suite {name}: nothing to run ({why})")
    for line in expansion.skipped:
        print(line, file=sys.stderr)
    device = resolve_run_device(specs, args.device)
    threads = args.threads or max(1, available_cores() // args.jobs)
    store = RecordStore(args.results_dir)
    if args.dry_run:
        for s in specs:
            rec = store.read(s.run_id)
            state = "to run" if rec is None or args.force else f"recorded ({rec.status})"
            print(f"{s.run_id}  {s.describe()}  [{state}]")
        print(f"suite {name}: {len(specs)} run(s)", file=sys.stderr)
        return 0
    print(f"suite {name}: {len(specs)} run(s); device {device}, jobs {args.jobs}, threads per run {threads}; "
          f"records in {args.results_dir}", file=sys.stderr)
    settings = RunSettings(
        results_dir=str(args.results_dir),
        data_root=None if args.data_root is None else str(args.data_root),
        device=device, threads=threads, timeout=args.timeout, evaluation=config.to_dict(),
    )
    summary = run_suite(specs, settings, jobs=args.jobs, force=args.force, retry_failed=args.retry_failed,
                        progress=args.progress, label=f"suite {name}", cluster=args.cluster,
                        cluster_jobs=args.cluster_jobs)
    if not args.quiet:
        from benchmark.reports import print_tables

        print_tables(load_frame(args.results_dir, run_ids=[s.run_id for s in specs]))
    if not args.no_report:
        from benchmark.reports import write_reports

        # Records of other suites in the same directory: a corrupt one is reported, not fatal here
        # (`report` still refuses it, so that a report never silently drops a result).
        everything = load_frame(args.results_dir, on_corrupt=lambda line: print(line, file=sys.stderr))
        written = write_reports(everything, args.reports_dir, plots=not args.no_plots)
        print(f"reports: {len(written)} file(s) written to {args.reports_dir}/ (results.md, tables, plots)", file=sys.stderr)
    if summary.elsewhere:
        print(f"suite {name}: {len(summary.elsewhere)} run(s) are running in another process on the same results "
              f"directory and are not recorded yet; rerun or `report` once they finish", file=sys.stderr)
    failed = summary.failed
    if failed:
        print(f"suite {name}: {len(failed)} of {summary.total} run(s) failed or did not finish; "
              f"logs in {Path(args.results_dir) / 'logs'}", file=sys.stderr)
        return 1
    ran = sum(o.status not in ("running elsewhere", "done elsewhere") for o in summary.outcomes)
    print(f"suite {name}: {summary.total - len(summary.elsewhere)} run(s) ok ({ran} ran now, "
          f"{summary.total - len(summary.elsewhere) - ran} already recorded)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------- rescore
def _cmd_rescore(args) -> int:
    from benchmark.evaluate import EvalConfig
    from benchmark.records import RecordStore
    from benchmark.runner import RunSettings, check_writable_dir, plan_runs, rescore_runs
    from benchmark.suites import expand_suite

    check_writable_dir(args.results_dir, "--results-dir")
    expansion = expand_suite(args.suite, data_root=args.data_root)
    name = expansion.suite.name
    config = EvalConfig.from_dict(expansion.evaluation, f"suite {name}: evaluation")
    settings = RunSettings(results_dir=str(args.results_dir), data_root=args.data_root, evaluation=config.to_dict())
    store = RecordStore(args.results_dir)
    plan = plan_runs(expansion.specs, store, settings=settings)
    done, cannot = rescore_runs(plan.rescore, store, settings)
    missing = [s for s in plan.todo if store.read(s.run_id) is None]
    print(f"suite {name}: {len(done)} run(s) rescored from stored codes, {len(plan.skipped)} already current, "
          f"{len(cannot) + len(plan.todo) - len(missing)} need a rerun (stored outputs unusable or data changed), "
          f"{len(missing)} not recorded; `run` reruns them", file=sys.stderr)
    return 1 if cannot or len(plan.todo) else 0


# ---------------------------------------------------------------------------------------- report
def _cmd_report(args) -> int:
    from benchmark.records import load_frame
    from benchmark.reports import print_tables, write_reports
    from benchmark.runner import check_writable_dir

    if not str(args.results_dir).strip():
        raise InputError("--results-dir '' is invalid; valid: the directory a suite wrote its records to")
    check_writable_dir(args.reports_dir, "--reports-dir")

    run_ids = labels = None
    if args.suite is not None:
        from benchmark.suites import expand_suite

        specs = expand_suite(args.suite, data_root=args.data_root).specs
        run_ids = [s.run_id for s in specs]
        # A run is its resolved spec, not its label: a record written by another suite (or before a
        # default changed) that resolves to the same run is shown under this suite's label.
        labels = {s.run_id: (s.label, s.dataset_label) for s in specs}
    frame = load_frame(args.results_dir, run_ids=run_ids)
    if frame.empty:
        raise InputError(f"no records in {args.results_dir}/records" + (f" for suite {args.suite}" if args.suite else "")
                         + "; run a suite first")
    if labels:
        frame["label"] = frame["run_id"].map(lambda r: labels[r][0])
        frame["dataset_label"] = frame["run_id"].map(lambda r: labels[r][1])
    if args.metric not in set(frame["metric"].dropna()):
        valid = sorted(m for m in set(frame["metric"].dropna()) if m not in ("precision_at_n", "pr_precision", "pr_recall"))
        raise InputError(f"--metric {args.metric!r} is not in the records; valid: {', '.join(valid)}")
    written = write_reports(frame, args.reports_dir, metric=args.metric, plots=not args.no_plots)
    if not args.quiet:
        print_tables(frame, metric=args.metric)
    print(f"reports: {len(written)} file(s) written to {args.reports_dir}/", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------- list
def _cmd_list(args) -> int:
    import datasets
    from methods import list_methods

    from benchmark.suites import list_suites, load_suite

    print("methods:")
    for info in list_methods():
        state = "available" if info.available else f"unavailable: {info.reason}"
        print(f"  {info.name:<12} {info.target:<44} {state}")
    root = datasets.resolve_data_root(args.data_root)
    print(f"datasets (data root: {root}):")
    for name in datasets.list_datasets():
        try:
            present, reason = datasets.dataset_status(name, args.data_root)
            state = "files present" if present else f"files absent: {reason}"
        except ImportError as exc:
            state = f"loader unavailable: {exc}"
        except InputError as exc:
            state = f"files absent: {exc}"
        print(f"  {name:<18} {state}")
    print("suites:")
    for name in list_suites():
        try:
            desc = load_suite(name).description
        except InputError as exc:
            desc = f"invalid: {exc}"
        print(f"  {name:<12} {desc}")
    return 0


# ---------------------------------------------------------------------------------------- check
def _cmd_check(args) -> int:
    from methods import get_method

    get_method(args.method)  # unknown name / bad plug-in -> InputError (exit 2) before any check
    try:
        from benchmark.checks import check_hasher
    except ImportError as exc:
        print(f"error: the common checks cannot be imported ({exc})", file=sys.stderr)
        return 1
    kwargs = {}
    if "verbose" in inspect.signature(check_hasher).parameters:
        kwargs["verbose"] = not args.quiet
    try:
        check_hasher(args.method, **kwargs)
    except InputError:
        raise
    except Exception as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"check {args.method}: FAILED: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1
    print(f"check {args.method}: all common checks passed")
    return 0


# ---------------------------------------------------------------------------------------- prepare
def _cmd_prepare(args) -> int:
    from datasets.prepare_mirflickr import prepare

    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers} is invalid; valid: a positive integer")
    result = prepare(args.images, args.annotations, args.out, tags=args.tags, lall=args.lall, yall=args.yall,
                     size=args.size, rows=args.rows, chunk=args.chunk, workers=args.workers, strict=args.strict,
                     progress=args.progress)
    return 1 if args.strict and not result.ok else 0


# ---------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_formatter, epilog=_epilog(None),
        description="Benchmark of cross-modal hashing methods (image<->text retrieval by Hamming ranking).",
    )
    try:
        from importlib.metadata import version

        ver = version("cmh-bench")
    except Exception:
        ver = "unknown"
    parser.add_argument("--version", action="version", version=f"cmh-bench {ver}")
    sub = parser.add_subparsers(dest="command", metavar="{run,rescore,report,list,check,prepare}")
    sub.required = True

    common_dirs = argparse.ArgumentParser(add_help=False)
    common_dirs.add_argument("--results-dir", default="results", metavar="DIR",
                             help="where records, codes, logs and protocols live (default: results)")
    common_dirs.add_argument("--reports-dir", default="reports", metavar="DIR",
                             help="where tables and plots are written (default: reports)")
    data_root = argparse.ArgumentParser(add_help=False)
    data_root.add_argument("--data-root", default=None, metavar="DIR",
                           help="dataset files (default: $CMH_DATA_ROOT, else ./data; Wiki is bundled)")

    run = sub.add_parser("run", parents=[common_dirs, data_root], formatter_class=_formatter, epilog=_epilog("run"),
                         help="run a suite (default: the default suite on Wiki)",
                         description="Run a suite, print the MAP tables and write the reports.")
    run.add_argument("--suite", default="default", metavar="NAME|FILE",
                     help=f"a shipped suite ({', '.join(_shipped_suites())}) or a YAML file (default: default)")
    run.add_argument("--methods", action="append", metavar="A,B", help="only these methods (names or labels)")
    run.add_argument("--datasets", action="append", metavar="A,B", help="only these datasets")
    run.add_argument("--bits", action="append", metavar="16,32", help="only these code lengths")
    run.add_argument("--mask-rates", action="append", metavar="0,0.7", help="only these label mask rates")
    run.add_argument("--seeds", action="append", metavar="0,1", help="only these seeds")
    run.add_argument("--jobs", type=int, default=1, metavar="N", help="runs in parallel (processes; default 1)")
    run.add_argument("--threads", type=int, default=None, metavar="T",
                     help="BLAS/torch threads per run (default: cores // jobs); give the same T to compare "
                          "--jobs settings bit for bit")
    run.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"],
                     help="device of torch methods (default: auto = GPU when present)")
    run.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="time limit per run in seconds; a run over it is recorded as failed")
    run.add_argument("--cluster", default=None, metavar="local[:N]|tcp://HOST:PORT|FILE.yaml",
                     help="run on a Dask cluster: N local workers, an existing scheduler, or a dask-jobqueue file")
    run.add_argument("--cluster-jobs", type=int, default=None, metavar="N",
                     help="with --cluster: how many cluster jobs (workers) to scale to")
    run.add_argument("--force", action="store_true", help="rerun runs that already have a record")
    run.add_argument("--retry-failed", action="store_true", help="rerun runs whose record says failed")
    run.add_argument("--dry-run", action="store_true", help="list the runs and whether they are recorded; run nothing")
    run.add_argument("--no-report", action="store_true", help="do not write the reports folder")
    run.add_argument("--no-plots", action="store_true", help="write the report tables but no plots")
    run.add_argument("--quiet", action="store_true", help="do not print the result tables")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar with ETA (default: when stderr is a terminal)")
    run.set_defaults(func=_cmd_run)

    report = sub.add_parser("report", parents=[common_dirs, data_root], formatter_class=_formatter,
                            epilog=_epilog("report"), help="render tables and plots from existing records",
                            description="Render tables and plots from the records that exist, running nothing.")
    report.add_argument("--suite", default=None, metavar="NAME|FILE", help="only the runs of this suite")
    report.add_argument("--metric", default="map", metavar="NAME",
                        help="metric of the tables and plots (map, map_stable, map@K, ndcg; default map)")
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.add_argument("--quiet", action="store_true", help="do not print the tables")
    report.set_defaults(func=_cmd_report)

    rescore = sub.add_parser("rescore", parents=[common_dirs, data_root], formatter_class=_formatter,
                             help="recompute a suite's metrics from stored codes (no fit)",
                             description="Recompute the metrics of a suite's recorded runs under the suite's "
                                         "evaluation settings, from their stored codes and protocols.")
    rescore.add_argument("--suite", default="default", metavar="NAME|FILE", help="the suite (default: default)")
    rescore.set_defaults(func=_cmd_rescore)

    lst = sub.add_parser("list", parents=[data_root], formatter_class=_formatter, epilog=_epilog("list"),
                         help="methods (available or why not), datasets (files present?), suites",
                         description="List methods with their availability, datasets with their files, and suites.")
    lst.set_defaults(func=_cmd_list)

    check = sub.add_parser("check", formatter_class=_formatter, epilog=_epilog("check"),
                           help="run the common checks on a method or plug-in",
                           description="Run the common checks on a registered method or a module:Class plug-in.")
    check.add_argument("method", metavar="METHOD|module:Class")
    check.add_argument("--quiet", action="store_true", help="print only the outcome")
    check.set_defaults(func=_cmd_check)

    prep = sub.add_parser("prepare", formatter_class=_formatter, epilog=_epilog("prepare"),
                          help="build a dataset's files from its official distribution (mirflickr25k)",
                          description="Build the DCMH MIRFlickr-25K set (20,015 pairs) from the official distribution.")
    prep.add_argument("dataset", choices=["mirflickr25k"], help="the dataset to build")
    prep.add_argument("--images", required=True, metavar="DIR|ZIP", help="mirflickr25k.zip or its folder (im1.jpg ...)")
    prep.add_argument("--annotations", required=True, metavar="DIR|ZIP",
                      help="mirflickr25k_annotations_v080.zip or its folder (<concept>.txt)")
    prep.add_argument("--tags", default=None, metavar="DIR|ZIP",
                      help="tags<N>.txt files (default: meta/tags inside --images, when present)")
    prep.add_argument("--lall", default=None, metavar="FILE", help="the release's mirflickr25k-lall.mat, to compare with")
    prep.add_argument("--yall", default=None, metavar="FILE",
                      help="the release's mirflickr25k-yall.mat, to compare with and to resolve ambiguous rows")
    prep.add_argument("--out", required=True, metavar="DIR", help="output folder (created when absent)")
    prep.add_argument("--size", type=int, default=224, metavar="S", help="images are resized to S x S (default 224)")
    prep.add_argument("--rows", default=None, metavar="A:B", help="only DCMH rows A..B-1 (0-based; default all 20,015)")
    prep.add_argument("--chunk", type=int, default=256, metavar="N", help="images per resumable chunk (default 256)")
    prep.add_argument("--workers", type=int, default=None, metavar="N", help="decoding threads (default min(4, cores))")
    prep.add_argument("--strict", action="store_true", help="exit 1 when a check against LAll/YAll does not pass")
    prep.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="progress bar (default: when stderr is a terminal)")
    prep.set_defaults(func=_cmd_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", None)  # benchmark.runner.Terminated: SIGTERM or SIGHUP
        if signum is not None:
            import signal

            print(f"stopped by {signal.Signals(signum).name}; rerun the same command to resume", file=sys.stderr)
            return 128 + int(signum)
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
