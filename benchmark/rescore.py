"""Metrics recomputed from a run's stored codes and protocol, without refitting its method.

A record keeps the evaluation settings it was scored under (``evaluation_digest``) and the checksum of
the data it read (``data_checksum``). When a suite asks for other settings (more ``topk`` values,
another ``ties`` or ``no_relevant`` convention), :func:`rescore_record` ranks the stored query codes
against the stored database codes again, with the labels of the stored protocol. A method that ranks
by its own distance (:meth:`Hasher.uses_own_distance`) is rebuilt from its recorded parameters and
given back what its distance needs (``set_distance_state`` with the codes file's ``state__*`` arrays);
its stored query representations are ranked with it. Nothing is refitted, so rescoring a suite takes
seconds.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import replace

import numpy as np

from benchmark.codesfile import REPR_ARRAYS, split_state
from benchmark.datacache import load_dataset_cached
from benchmark.records import Record, RecordStore
from cmhcore.errors import DataFileError

__all__ = ["CannotRescore", "rescore_record", "needs_rescore"]


class CannotRescore(Exception):
    """The stored outputs do not allow rescoring (the run must be rerun); the message says why."""


def needs_rescore(rec: Record, digest: str) -> bool:
    """An ok record scored under other evaluation settings than ``digest``."""
    return rec.ok and rec.evaluation_digest != digest


def _distance_of(rec: Record, stored: dict):
    """The recorded method, rebuilt unfitted, with its distance state restored; its ``distance``."""
    from methods import get_method

    params = dict((rec.method or {}).get("params") or {})
    cls = get_method(rec.spec["method"])
    if "device" in params:
        params["device"] = "cpu"  # ranking stored arrays is host work
    method = cls(**params)
    restore = getattr(method, "set_distance_state", None)
    state = split_state(stored)
    if state and not callable(restore):
        raise CannotRescore(f"{rec.spec['method']} stored a distance state but has no set_distance_state")
    if callable(restore):
        method = restore(state) or method
    return method.distance


def rescore_record(store: RecordStore, rec: Record, config, data_root=None) -> Record:
    """``rec`` with metrics recomputed under ``config`` (an :class:`EvalConfig`) from its stored codes.

    Raises :class:`CannotRescore` when the codes, protocol or data do not allow it (missing or corrupt
    files, data whose checksum changed, an own-distance run without stored query representations).
    """
    from benchmark.evaluate import compute_metrics
    from datasets import Protocol

    t0 = time.perf_counter()
    try:
        stored = store.read_codes(rec.run_id, rec)
        proto_file = (rec.protocol or {}).get("file")
        if not proto_file:
            raise CannotRescore("its record names no protocol file")
        protocol = Protocol.load(store.root / proto_file)
    except DataFileError as exc:
        raise CannotRescore(str(exc)) from None
    data = load_dataset_cached(rec.spec["dataset"], data_root, rec.spec.get("dataset_options") or {})
    if rec.data_checksum != data.checksum:
        raise CannotRescore(f"the data changed since the run (checksum {str(rec.data_checksum)[:12]} -> "
                            f"{data.checksum[:12]})")
    own = bool((rec.method or {}).get("uses_own_distance"))
    if own:
        if any(name not in stored for name in REPR_ARRAYS):
            raise CannotRescore("its own-distance query representations were not stored")
        queries = {"image": stored["query_image_repr"], "text": stored["query_text_repr"]}
        try:
            distance = _distance_of(rec, stored)
        except CannotRescore:
            raise
        except Exception as exc:  # noqa: BLE001 - a method that cannot be rebuilt: rerun instead
            raise CannotRescore(f"its method cannot be rebuilt ({type(exc).__name__}: {exc})") from None
    else:
        queries = {"image": stored["query_image"], "text": stored["query_text"]}
        distance = None
    database = {"image": stored["db_image"], "text": stored["db_text"]}
    labels = np.asarray(data.labels)
    metrics = compute_metrics(queries, database, labels[protocol.query], labels[protocol.database], config, distance)
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")
    return replace(rec, metrics=metrics, evaluation=config.to_dict(), evaluation_digest=config.digest,
                   rescored_at=now, timings={**rec.timings, "rescore_s": time.perf_counter() - t0})
