"""Every frozen-feature protocol on the real BreastMNIST with real DINOv2-S and MobileNetV2 weights.

Runs the medfm runner (records, 95% bootstrap CIs, flags) for kNN, the linear-probe grid,
logistic regression and the three few-shot classifiers, and writes the figures next to the
MedMNIST+ reference numbers (from ``../shared/assets/README.md``) into the ``breastmnist``
section of RESULTS.md. DINOv2-S runs at 112 px (its 224 px extraction runs at about 5
images/s on a 2-core CPU), MobileNetV2 at its native 224 px. Features are cached under
``.medfm-cache/`` so reruns cost only the protocols.

Usage: python benchmarks/breastmnist_protocols.py [--assets ../shared/assets] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _results import update_section

from medfm.api import RunConfig, Runner, few_shot_series, load_record, load_registry, plot_few_shot

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROTOCOLS = ["knn", "linear_probe", "logistic_regression", "few_shot_prototype", "few_shot_knn", "few_shot_linear"]
METRICS = ["auroc", "accuracy", "balanced_accuracy", "f1_macro", "auprc", "kappa"]
# MedMNIST+ (Doerrich et al. 2024), DINO ViT-B/16 frozen features on BreastMNIST, as quoted in
# ../shared/assets/README.md (percent).
REFERENCE = [
    ("linear probe", "28 px", "83.3", "86.8"),
    ("linear probe", "224 px (zero-padded)", "88.7", "93.4"),
    ("kNN (k = 11)", "28 px", "78.2", "—"),
    ("kNN (k = 11)", "224 px (zero-padded)", "87.2", "—"),
]


def config(assets: Path, results: Path, cache: Path, bootstrap: int) -> RunConfig:
    """DINOv2-S at 112 px and MobileNetV2 at 224 px, real weights, all protocols."""
    weights = assets / "weights"
    cfg = RunConfig(
        backbones=["timm/vit_small_patch14_dinov2@112", "torchvision/mobilenet_v2"],
        datasets=["medmnist/breastmnist"],
        protocols=list(PROTOCOLS),
        device="cpu",
        results_dir=str(results),
        cache_dir=str(cache),
        leaderboard=str(results / "leaderboard.md"),
        bootstrap=bootstrap,
        batch_size=64,
    )
    cfg.options["backbone"] = {
        "timm/vit_small_patch14_dinov2*": {"weights": str(weights / "dinov2_vits14.safetensors")},
        "torchvision/mobilenet_v2*": {"weights": str(weights / "mobilenet_v2_tv_in1k.safetensors")},
    }
    cfg.options["dataset"] = {"medmnist/*": {"root": str(assets / "medmnist")}}
    return cfg


def fmt(m: dict | None, pct: bool = True) -> str:
    """``value [low, high]`` in percent."""
    if not m or m.get("value") is None:
        return "—"
    s = 100.0 if pct else 1.0
    lo, hi = m.get("ci_low"), m.get("ci_high")
    ci = f" [{lo * s:.1f}, {hi * s:.1f}]" if lo is not None and hi is not None else ""
    return f"{m['value'] * s:.1f}{ci}"


def describe_selection(record: dict) -> str:
    """What the protocol chose on validation (or which few-shot episode is reported)."""
    sel = record.get("selected") or {}
    name = record["protocol"]["name"]
    if name == "knn":
        return f"k = {sel.get('k')}, {sel.get('feature_kind')}"
    if name == "linear_probe":
        return (
            f"{sel.get('feature_kind')}, lr {sel.get('lr'):g}, wd {sel.get('weight_decay'):g}, "
            f"epoch {sel.get('epoch')} of {record['extra'].get('heads')} heads"
        )
    if name == "logistic_regression":
        return f"C = {sel.get('C'):g}, {sel.get('feature_kind')}"
    return f"n = {sel.get('shots')}, episode {sel.get('episode')}, {sel.get('feature_kind')}"


def few_shot_rows(records: list[dict]) -> list[str]:
    """AUROC mean ± std over episodes for every n."""
    rows = []
    for r in records:
        if not r["protocol"]["name"].startswith("few_shot") or r["status"] != "ok":
            continue
        curve = r["extra"]["curve"]
        cells = []
        for mean, std in zip(curve["mean"]["auroc"], curve["std"]["auroc"]):
            cells.append("—" if mean is None else f"{100 * mean:.1f} ± {100 * (std or 0):.1f}")
        rows.append((r["backbone"]["name"], r["protocol"]["name"].removeprefix("few_shot_"), curve["shots"], cells))
    shots = sorted({n for _, _, s, _ in rows for n in s})
    header = "| backbone | classifier | " + " | ".join(f"n = {n}" for n in shots) + " |"
    lines = [header, "|---|---|" + "---:|" * len(shots)]
    for backbone, clf, s, cells in rows:
        by_n = dict(zip(s, cells))
        lines.append(f"| {backbone} | {clf} | " + " | ".join(by_n.get(n, "—") for n in shots) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--cache", type=Path, default=ROOT / ".medfm-cache" / "benchmarks")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(args.assets, Path(tmp) / "results", args.cache, args.bootstrap)
        t = time.perf_counter()
        outcomes = Runner(load_registry(), cfg).run()
        seconds = time.perf_counter() - t
        failed = [f"{o.cell.label}: {o.message}" for o in outcomes if o.status != "ok"]
        if failed:
            raise SystemExit("cells failed:\n" + "\n".join(failed))
        records = [load_record(o.record_path, verify=True) for o in outcomes if o.record_path is not None]
    plot_few_shot(
        few_shot_series(records),
        HERE / "breastmnist_few_shot.png",
        title="BreastMNIST few-shot (real weights; test AUROC)",
    )
    rows, data = [], {"records": {}, "seconds": seconds, "bootstrap": args.bootstrap}
    for r in records:
        key = f"{r['backbone']['name']} × {r['protocol']['name']}"
        data["records"][key] = {
            "metrics": r["metrics"],
            "selected": r["selected"],
            "flags": r["flags"],
            "timings": r["timings"],
            "extra": r["extra"],
        }
        flags = ", ".join(r["flags"]) or "—"
        rows.append(
            f"| {r['backbone']['name']} | {r['protocol']['name']} | "
            + " | ".join(fmt(r["metrics"].get(m)) for m in METRICS)
            + f" | {describe_selection(r)} | {r['timings'].get('fit_s', 0):.2f} | {flags} |"
        )
    ref = "\n".join(f"| {p} | {res} | {acc} | {auc} |" for p, res, acc, auc in REFERENCE)
    md = f"""## BreastMNIST: every frozen-feature protocol, real weights (`breastmnist_protocols.py`)

Real BreastMNIST (28 px images; official split 546 / 78 / 156), real DINOv2-S/14 weights
(`../shared/assets`, DINOv2-derived, see its README) at 112 px and torchvision MobileNetV2
ImageNet weights at 224 px, run through `medfm run` (records verified). Test-set metrics in
percent with 95% percentile-bootstrap intervals ({args.bootstrap} resamples); kappa is Cohen's
(unweighted: binary task). Hyper-parameters chosen on the validation split; few-shot rows
report episode 0 of the largest n (16 per class), the curve is below. `fit (s)` excludes
feature extraction (cached). Whole run: {seconds:.0f} s.

| backbone | protocol | AUROC | accuracy | balanced acc. | macro-F1 | AUPRC | kappa | selected | fit (s) | flags |
|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|
{chr(10).join(rows)}

Few-shot AUROC (percent, mean ± std over 5 seeded episodes; support drawn from the training split only):

{chr(10).join(few_shot_rows(records))}

![BreastMNIST few-shot curves](breastmnist_few_shot.png)

(drawn from the records' `extra.curve` by `medfm.plots`, what `medfm plot few-shot --results <folder>` does)

Reference, MedMNIST+ (Doerrich et al. 2024), DINO ViT-B/16 frozen features on BreastMNIST (percent,
as quoted in `../shared/assets/README.md`; a larger model than both above, and not the same weights):

| protocol | resolution | accuracy | AUROC |
|---|---|---:|---:|
{ref}
"""
    update_section("breastmnist", md, data)
    print(md)


if __name__ == "__main__":
    main()
