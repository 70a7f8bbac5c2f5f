"""Speed goals of the frozen-feature protocols, measured (not asserted).

(a) A linear-probe grid of >= 24 heads costs at most 2x one head trained for the same epochs.
(b) That grid is >= 10x faster than scikit-learn's LogisticRegression fitted separately per grid
    point (24 L-BFGS fits, one per C), at comparable validation AUROC.
(c) kNN works in chunks, so memory stays bounded with 100k x 768 training features.

Measured on real BreastMNIST features (DINOv2-S/14 at 112 px: CLS, CLS + mean patch and last-4
CLS; MobileNetV2 at 224 px: pooled) extracted by the medfm runner (``extract_features``) with
the real weights from ``../shared/assets``, and on a synthetic 100k x 768 set (features with a
power-law covariance spectrum, eigenvalue i proportional to 1/i as in real embeddings, and a
linear binary class signal with Bayes AUROC 0.90). Timings are the minimum over repeats, so
that load from other processes on the machine inflates them as little as possible, and use one
thread by default on both sides of each comparison (``--threads``).

Usage: python benchmarks/bench_protocols.py [--assets ../shared/assets] [--quick]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medfm import Predictions, ProtocolOutput, ProtocolSpec, hookimpl
from medfm.plugins import load_entry_point_plugins, make_plugin_manager
from medfm.registry import Registry
from medfm.runner import Runner
from medfm_plugins.protocols._common import KindFeatures, load_kinds
from medfm_plugins.protocols._heads import training_targets
from medfm_plugins.protocols.knn import knn_topk, votes_from_neighbours
from medfm_plugins.protocols.linear_probe import DEFAULT_KINDS, train_grid

from _results import update_section
from breastmnist_protocols import config as breastmnist_config

ROOT = Path(__file__).resolve().parents[1]
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
WDS = [0.0, 1e-4, 1e-3, 1e-2]
GRID = [(lr, wd) for lr in LRS for wd in WDS]  # the linear probe's default: 24 heads per feature kind
ONE_HEAD = [(1e-3, 1e-4)]
SK_CS = list(np.logspace(-4, 2, len(GRID)))  # one scikit-learn fit per grid point


# ------------------------------------------------------------------ data
class Capture:
    """A protocol plugin that hands the runner's cached features to the benchmark."""

    plugin_name = "bench_capture"

    def __init__(self) -> None:
        self.got: dict[str, dict[str, Any]] = {}

    @hookimpl
    def register_protocols(self, register):
        def run(ctx):
            kinds, _ = load_kinds(ctx, DEFAULT_KINDS)
            self.got[ctx.backbone_spec.name] = {"kinds": kinds, "labels": {s: kinds[0].sets[s].labels
                                                                             for s in ("train", "val", "test")}}
            test = kinds[0].sets["test"]
            return ProtocolOutput(Predictions(test.ids, test.labels, np.full((len(test.ids), 2), 0.5), test.groups))

        register(ProtocolSpec(name="bench_capture", run=run, defaults={"feature_kinds": DEFAULT_KINDS}))


def breastmnist(assets: Path, cache: Path) -> dict[str, dict[str, Any]]:
    """Real features of both backbones (extracted once by the runner, then read from its cache)."""
    capture = Capture()
    pm = make_plugin_manager()
    infos = load_entry_point_plugins(pm)
    pm.register(capture, name=capture.plugin_name)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = breastmnist_config(assets, Path(tmp) / "r", cache, bootstrap=10)
        cfg.protocols = ["bench_capture"]
        outcomes = Runner(Registry.from_plugin_manager(pm, infos), cfg).run()
        assert all(o.status == "ok" for o in outcomes), [o.message for o in outcomes]
    return capture.got


def synthetic(n_train: int, dim: int = 768, n_val: int = 10_000, n_test: int = 10_000, seed: int = 0,
              delta: float = 1.8) -> dict[str, Any]:
    """Binary features ``x = (z + delta*y*u) diag(s) Q``: power-law spectrum, Bayes AUROC Phi(delta/sqrt 2)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    s = (1 / np.sqrt(np.arange(1, dim + 1))).astype(np.float32)
    q = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)
    tensors, labels = {}, {}
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        y = rng.integers(0, 2, n)
        z = rng.normal(size=(n, dim)).astype(np.float32) + (delta * y[:, None] * u).astype(np.float32)
        tensors[split], labels[split] = torch.from_numpy((z * s) @ q), y
    return {"kinds": [KindFeatures("synthetic", {}, tensors, False)], "labels": labels}


# ------------------------------------------------------------------ measurements
def best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Minimum wall time over ``repeats`` calls, and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def grid_run(data: dict, kinds: list[KindFeatures], grid: list, epochs: int, batch: int, eval_every: int,
             patience: int) -> dict:
    """Train a grid with the linear probe's own trainer; best validation AUROC and epochs run."""
    y = training_targets("binary", data["labels"]["train"])
    out = train_grid("binary", "auroc", kinds, y, data["labels"]["val"], 2, grid, epochs, batch, eval_every,
                     patience, None, torch.Generator().manual_seed(0))
    return {"val_auroc": float(out["best_val"].max()), "epochs_run": out["epochs_run"], "heads": len(grid) * len(kinds)}


def goal_a(data: dict, kind: KindFeatures, epochs: int, batch: int, repeats: int) -> dict:
    """24 heads vs one head, same kind, same epochs (early stopping off); repeats interleaved."""
    one_s = grid_s = math.inf
    for _ in range(repeats):
        t, _one = best_of(1, lambda: grid_run(data, [kind], ONE_HEAD, epochs, batch, 5, 10 ** 9))
        one_s = min(one_s, t)
        t, grid = best_of(1, lambda: grid_run(data, [kind], GRID, epochs, batch, 5, 10 ** 9))
        grid_s = min(grid_s, t)
    return {"kind": kind.kind, "dim": kind.dim, "epochs": epochs, "batch": batch, "one_head_s": one_s,
            "grid_s": grid_s, "heads": grid["heads"], "ratio": grid_s / one_s, "met": grid_s / one_s <= 2.0}


def sklearn_per_point(kind: KindFeatures, labels: dict) -> dict:
    """One LogisticRegression (L-BFGS) per grid point, on the same standardised features."""
    scaler = StandardScaler().fit(kind.tensors["train"].double().numpy())
    x_tr, x_va = (scaler.transform(kind.tensors[s].double().numpy()) for s in ("train", "val"))
    times, aucs = [], []
    for c in SK_CS:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(C=float(c), solver="lbfgs", max_iter=1000).fit(x_tr, labels["train"])
        times.append(time.perf_counter() - t)
        aucs.append(roc_auc_score(labels["val"], model.predict_proba(x_va)[:, 1]))
    return {"fits": len(SK_CS), "total_s": float(sum(times)), "mean_fit_s": float(np.mean(times)),
            "best_val_auroc": float(max(aucs)), "best_C": float(SK_CS[int(np.argmax(aucs))])}


def goal_b(data: dict, kind: KindFeatures, epochs: int, batch: int, eval_every: int, patience: int,
           repeats: int) -> dict:
    """The 24-head grid as the protocol runs it (early stopping on) vs 24 scikit-learn fits."""
    grid_s, grid = best_of(repeats, lambda: grid_run(data, [kind], GRID, epochs, batch, eval_every, patience))
    sk = sklearn_per_point(kind, data["labels"])
    return {"kind": kind.kind, "grid_s": grid_s, "grid_val_auroc": grid["val_auroc"],
            "grid_epochs_run": grid["epochs_run"], "epochs": epochs, "batch": batch, "sklearn": sk,
            "speedup": sk["total_s"] / grid_s, "auroc_gap": grid["val_auroc"] - sk["best_val_auroc"],
            "met": sk["total_s"] / grid_s >= 10 and grid["val_auroc"] >= sk["best_val_auroc"] - 0.01}


def _hwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return math.nan


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak resident set size to the current one
        return True
    except OSError:
        return False


def goal_c(kind: KindFeatures, labels: dict, bank_sizes: list[int], query_chunk: int = 256,
           bank_chunk: int = 16384) -> dict:
    """kNN (k grid up to 200) of all val + test queries against banks of growing size: time and peak memory."""
    queries = F.normalize(torch.cat([kind.tensors["val"], kind.tensors["test"]]), dim=1)
    full_bank = F.normalize(kind.tensors["train"], dim=1)
    targets_all = torch.eye(2)[torch.from_numpy(np.asarray(labels["train"]).astype(np.int64))]
    rows = []
    for n in bank_sizes:
        bank, targets = full_bank[:n].contiguous(), targets_all[:n]
        resettable = _reset_hwm()
        before = _hwm_mb()
        t = time.perf_counter()
        top = knn_topk(bank, queries, 200, query_chunk, bank_chunk)
        scores = votes_from_neighbours(*top, targets, [10, 20, 50, 100, 200], 0.07)
        seconds = time.perf_counter() - t
        peak = _hwm_mb() - before
        auroc = roc_auc_score(np.r_[labels["val"], labels["test"]], scores[20][:, 1].numpy())
        rows.append({"bank": n, "queries": len(queries), "seconds": seconds,
                     "peak_extra_mb": peak if resettable else None, "auroc_k20": float(auroc),
                     "full_matrix_mb": len(queries) * n * 4 / 2 ** 20})
    outputs_mb = len(queries) * 200 * (4 + 8) / 2 ** 20
    block_mb = query_chunk * (bank_chunk + 400) * 4 / 2 ** 20
    bounded = all(r["peak_extra_mb"] is not None and r["peak_extra_mb"] < 4 * (block_mb + outputs_mb) + 64 for r in rows)
    return {"rows": rows, "dim": kind.dim, "query_chunk": query_chunk, "bank_chunk": bank_chunk,
            "block_mb": block_mb, "outputs_mb": outputs_mb, "met": bounded}


# ------------------------------------------------------------------ report
def _mb(v: float | None) -> str:
    return "—" if v is None else f"{v:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--cache", type=Path, default=ROOT / ".medfm-cache" / "benchmarks")
    parser.add_argument("--quick", action="store_true", help="a 20k synthetic set, for trying the script out")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads for both sides of every comparison (default 1: on a shared "
                             "machine, multi-threaded tiny operations wait for busy cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    torch.manual_seed(0)
    real = breastmnist(args.assets, args.cache)
    n_syn = 20_000 if args.quick else 100_000
    syn = synthetic(n_syn)
    data: dict[str, Any] = {"a": [], "b": [], "c": {}}

    sets = []
    for name, got in real.items():
        for kind in got["kinds"]:
            sets.append((f"BreastMNIST {name} {kind.kind}", got, kind, dict(epochs=30, batch=256, repeats=5)))
    sets.append((f"synthetic {n_syn // 1000}k x 768", syn, syn["kinds"][0], dict(epochs=3, batch=256, repeats=3)))
    grid_run(real[next(iter(real))], real[next(iter(real))]["kinds"][:1], GRID, 2, 256, 5, 10 ** 9)  # warm-up
    for label, got, kind, p in sets:
        r = goal_a(got, kind, p["epochs"], p["batch"], p["repeats"])
        r["set"] = label
        data["a"].append(r)
        print("a", r, flush=True)
    dino = next(v for k, v in real.items() if "dinov2" in k)
    one_s = all_s = math.inf
    for _ in range(5):  # the all-kinds grid against one head on CLS, interleaved
        one_s = min(one_s, best_of(1, lambda: grid_run(dino, dino["kinds"][:1], ONE_HEAD, 30, 256, 5, 10 ** 9))[0])
        t, all_grid = best_of(1, lambda: grid_run(dino, dino["kinds"], GRID, 30, 256, 5, 10 ** 9))
        all_s = min(all_s, t)
    data["a_all_kinds"] = {"heads": all_grid["heads"], "grid_s": all_s, "one_head_cls_s": one_s,
                           "ratio": all_s / one_s, "kinds": [k.kind for k in dino["kinds"]]}
    print("a all kinds", data["a_all_kinds"], flush=True)

    for label, got, kind, p in sets:
        big = got is syn
        r = goal_b(got, kind, epochs=10 if big else 100, batch=256, eval_every=1 if big else 5,
                   patience=2 if big else 4, repeats=1 if big else 3)
        r["set"] = label
        data["b"].append(r)
        print("b", r, flush=True)

    sizes = [n_syn // 4, n_syn // 2, n_syn]
    data["c"]["synthetic"] = goal_c(syn["kinds"][0], syn["labels"], sizes)
    print("c", data["c"]["synthetic"], flush=True)
    for name, got in real.items():
        kind = got["kinds"][0]
        data["c"][name] = goal_c(kind, got["labels"], [len(got["labels"]["train"])])

    a_rows = "\n".join(
        f"| {r['set']} ({r['dim']}-d) | {r['epochs']} | {r['one_head_s']:.3f} | {r['grid_s']:.3f} ({r['heads']} heads) | "
        f"**{r['ratio']:.2f}x** | {'met' if r['met'] else 'NOT met'} |" for r in data["a"])
    ak = data["a_all_kinds"]
    b_rows = "\n".join(
        f"| {r['set']} | {r['grid_s']:.2f} ({r['grid_epochs_run']} of {r['epochs']} epochs) | {r['grid_val_auroc']:.3f} | "
        f"{r['sklearn']['total_s']:.2f} ({r['sklearn']['mean_fit_s']:.2f} per fit) | {r['sklearn']['best_val_auroc']:.3f} "
        f"(C = {r['sklearn']['best_C']:.2g}) | **{r['speedup']:.1f}x** | {'met' if r['met'] else 'NOT met'} |"
        for r in data["b"])
    syn_c = data["c"]["synthetic"]
    c_rows = "\n".join(
        f"| {r['bank']:,} x {syn_c['dim']} | {r['queries']:,} | {r['seconds']:.1f} | "
        f"{_mb(r['peak_extra_mb'])} | {r['full_matrix_mb']:,.0f} | {r['auroc_k20']:.3f} |"
        for r in syn_c["rows"])
    real_c = "; ".join(f"{k}: {v['rows'][0]['seconds'] * 1000:.0f} ms for {v['rows'][0]['queries']} queries "
                       f"against {v['rows'][0]['bank']} ({v['dim']}-d)" for k, v in data["c"].items() if k != "synthetic")
    small_b = [r for r in data["b"] if "BreastMNIST" in r["set"]]
    fit_ms = (1000 * min(r["sklearn"]["mean_fit_s"] for r in small_b), 1000 * max(r["sklearn"]["mean_fit_s"] for r in small_b))
    epochs_run = (min(r["grid_epochs_run"] for r in small_b), max(r["grid_epochs_run"] for r in small_b))
    syn_speedup = next(r["speedup"] for r in data["b"] if "synthetic" in r["set"])
    md = f"""## Protocols: linear-probe grid, scikit-learn baseline, chunked kNN (`bench_protocols.py`)

Real BreastMNIST features (546 train / 78 val; DINOv2-S/14 at 112 px and MobileNetV2 at 224 px,
real weights, extracted by the runner) and a synthetic {n_syn:,} x 768 binary set (power-law
covariance spectrum, Bayes AUROC 0.90; 10,000 val and 10,000 test). CPU only; each time is the
minimum over interleaved repeats (goal a: 5 for BreastMNIST, 3 for the synthetic set; goal b: 3 and 1;
the scikit-learn fits once each), with {args.threads} torch and
BLAS thread(s) on both sides of every comparison.

**(a) Grid of 24 heads (6 learning rates x 4 weight decays) vs one head, same feature kind, same
epochs (early stopping off), batch 256.** Goal: grid <= 2x one head.

| features | epochs | one head (s) | grid (s) | grid / one head | goal |
|---|---:|---:|---:|---:|---|
{a_rows}

The protocol's default grid over all three DINOv2 feature kinds ({', '.join(ak['kinds'])}; {ak['heads']} heads,
384 + 768 + 1536 inputs) takes {ak['grid_s']:.3f} s, {ak['ratio']:.2f}x one head on CLS alone.

BreastMNIST times are tens of milliseconds on a machine shared with other jobs: these ratios
moved by up to about 1.5 between runs (1.8-4.1x for the 1280- and 1536-input rows); the
synthetic row, at seconds, is stable.

Where the goal is missed: a step's fixed cost (about a quarter of a millisecond on one thread:
Python, the optimiser update, the batch slice) is shared by all heads, but the two matrix
products are 24 times larger for the grid; at 1280 and 1536 inputs they outweigh the fixed
cost, so the ratio tends to 1 + (matrix products / fixed cost). The grid is still 24 heads for
the price of {min(r['ratio'] for r in data['a']):.1f}-{max(r['ratio'] for r in data['a']):.1f} (instead of 24).
Optimisations made to get here: one stacked weight tensor and one matrix product per feature kind
for all heads, closed-form gradients instead of autograd, one vectorised AdamW for all heads, a
single logistic output per binary head, shuffling through numpy, one thread per fit.

**(b) The 24-head grid as the protocol runs it (early stopping: BreastMNIST 100 epochs, validation
every 5, patience 4; synthetic 10 epochs, validation every epoch, patience 2) vs scikit-learn
`LogisticRegression` (L-BFGS, max_iter 1000) fitted separately for each of 24 grid points
(C log-spaced 1e-4 .. 1e2), same standardised features.** Goal: >= 10x faster at comparable
(within 0.01) best validation AUROC.

| features | grid (s) | grid best val AUROC | 24 scikit-learn fits (s) | sklearn best val AUROC | speed-up | goal |
|---|---:|---:|---:|---:|---:|---|
{b_rows}

**(c) kNN in chunks** ({syn_c['query_chunk']} queries x {syn_c['bank_chunk']:,} bank rows per block,
running top-200, k grid 10..200): growth of the peak resident memory during the call (Linux
`VmHWM`, reset before it; features and normalised bank were resident before), against the
similarity matrix an unchunked kNN would hold. Goal: memory bounded (independent of the bank size).

| bank | queries | time (s) | peak extra memory (MB) | unchunked similarity matrix (MB) | val+test AUROC (k = 20) |
|---|---:|---:|---:|---:|---:|
{c_rows}

Goal {'met' if syn_c['met'] else 'NOT met'}: the temporaries are one {syn_c['block_mb']:.0f} MB block plus the
{syn_c['outputs_mb']:.0f} MB of top-200 neighbours kept for the k grid (reused memory can make the growth smaller).
Time grows linearly with the bank. The kNN reads raw features (as the protocol does), and this
synthetic set's class signal lies mostly in low-variance directions, so cosine kNN sits near
chance there while the linear heads reach the Bayes AUROC: the set measures cost, not kNN quality.
BreastMNIST: {real_c}.

Where goal (b) is missed: on 546 training images scikit-learn's L-BFGS needs only about
{fit_ms[0]:.0f}-{fit_ms[1]:.0f} ms per fit, while the grid runs {epochs_run[0]}-{epochs_run[1]} epochs of 3 mini-batch steps; at
{n_syn // 1000}k images the grid is {syn_speedup:.0f}x faster at the same validation AUROC. The grid's higher
validation AUROC on BreastMNIST is partly selection over more candidates (24 heads x evaluated
epochs) on only 78 validation images.
"""
    update_section("protocols", md, data)
    print(md)


if __name__ == "__main__":
    main()
