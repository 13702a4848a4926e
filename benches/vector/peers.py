#!/usr/bin/env python3
"""hnswlib and faiss (IndexHNSWFlat) on the data set `cargo bench --bench vector_ann` wrote,
with the same metric / m / ef_construction / ef sweep, then one markdown table with inferd's
results.

`peers.py DIR` reads base.npy, queries.npy, gt.npy and inferd.json from DIR (one set's
directory, e.g. ~/.cache/inferd/bench/vector/synthetic). Builds use every core (as inferd's
do); queries run on one thread, as one batch per ef (no Python call per query), recall@10
against the brute-force ground truth; each ef's time is the fastest of 5 passes. Cosine sets hold unit vectors, so faiss searches them by
inner product.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

K = 10


def recall(ids: np.ndarray, gt: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(ids, gt)]))


def best_of(search, repeats=5):
    """The fastest of `repeats` timed passes over all queries (as inferd's bench does), and
    the ids it returned."""
    best, ids = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        ids = search()
        best = min(best, time.perf_counter() - t)
    return best, ids


def run_hnswlib(base, queries, gt, metric, m, efc, efs, threads):
    import hnswlib

    idx = hnswlib.Index(space={"l2": "l2", "cosine": "cosine", "dot": "ip"}[metric], dim=base.shape[1])
    idx.init_index(max_elements=base.shape[0], ef_construction=efc, M=m, random_seed=100)
    idx.set_num_threads(threads)
    t = time.perf_counter()
    idx.add_items(base, np.arange(base.shape[0]))
    build = time.perf_counter() - t
    idx.set_num_threads(1)
    sweep = []
    for ef in efs:
        idx.set_ef(ef)
        idx.knn_query(queries[:100], k=K)
        secs, ids = best_of(lambda: idx.knn_query(queries, k=K)[0])
        sweep.append({"ef": ef, "recall": recall(ids, gt), "qps": len(queries) / secs})
    return {"engine": f"hnswlib {hnswlib.__version__ if hasattr(hnswlib, '__version__') else ''}".strip(),
            "build_s": build, "sweep": sweep}


def run_faiss(base, queries, gt, metric, m, efc, efs, threads):
    import faiss

    kind = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    idx = faiss.IndexHNSWFlat(base.shape[1], m, kind)
    idx.hnsw.efConstruction = efc
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    idx.add(base)
    build = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    sweep = []
    for ef in efs:
        idx.hnsw.efSearch = ef
        idx.search(queries[:100], K)
        secs, ids = best_of(lambda: idx.search(queries, K)[1])
        sweep.append({"ef": ef, "recall": recall(ids, gt), "qps": len(queries) / secs})
    return {"engine": f"faiss-cpu {faiss.__version__} (IndexHNSWFlat)", "build_s": build, "sweep": sweep}


def at_target(r, target=0.95):
    ok = [s for s in r["sweep"] if s["recall"] >= target]
    return max(ok, key=lambda s: s["qps"]) if ok else None


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: peers.py DIR (a set's directory, written by cargo bench --bench vector_ann)", file=sys.stderr)
        return 2
    d = Path(sys.argv[1])
    ours = json.loads((d / "inferd.json").read_text())
    base = np.load(d / "base.npy")
    queries = np.load(d / "queries.npy")
    gt = np.load(d / "gt.npy")
    m, efc, threads = ours["m"], ours["ef_construction"], ours["build_threads"]
    efs = [s["ef"] for s in ours["sweep"]]
    print(f"peers: {base.shape[0]} x {base.shape[1]}, m={m}, ef_construction={efc}", file=sys.stderr)
    metric = ours["metric"]
    results = [
        ours,
        run_hnswlib(base, queries, gt, metric, m, efc, efs, threads),
        run_faiss(base, queries, gt, metric, m, efc, efs, threads),
    ]

    print(f"{ours['about']}; {len(queries):,} queries, recall@10 against brute force; m = {m}, "
          f"ef_construction = {efc}; builds on {threads} threads, queries on 1 thread.")
    print()
    print("| engine | build s | " + " | ".join(f"ef={e}" for e in efs) + " | QPS at recall@10 ≥ 0.95 |")
    print("|---|---:|" + "---:|" * len(efs) + "---:|")
    for r in results:
        cells = [f"{s['recall']:.3f} / {s['qps']:,.0f}" for s in r["sweep"]]
        best = at_target(r)
        best_cell = f"{best['qps']:,.0f} (ef={best['ef']}, {best['recall']:.3f})" if best else "not reached"
        print(f"| {r['engine']} | {r['build_s']:.1f} | " + " | ".join(cells) + f" | {best_cell} |")
    print()
    print("Cells: recall@10 / queries per second.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
