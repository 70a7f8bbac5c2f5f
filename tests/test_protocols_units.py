"""Protocol building blocks against independent references: chunked kNN, fused heads, SGD, the dual form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medfm_plugins.protocols._heads import HeadStack, head_losses, with_bias_column
from medfm_plugins.protocols.knn import knn_scores, knn_topk


def _normalised(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


# ------------------------------------------------------------------ kNN
@pytest.mark.parametrize("query_chunk,bank_chunk", [(7, 13), (1000, 5), (3, 100000), (64, 64)])
def test_chunked_topk_equals_full_similarity_matrix(query_chunk, bank_chunk):
    bank, queries = _normalised(300, 24, 0), _normalised(50, 24, 1)
    sims, idx = knn_topk(bank, queries, k=20, query_chunk=query_chunk, bank_chunk=bank_chunk)
    full = queries @ bank.T
    ref_s, ref_i = full.topk(20, dim=1)
    torch.testing.assert_close(sims, ref_s)
    assert torch.equal(idx, ref_i)


def test_topk_k_larger_than_bank_returns_whole_bank():
    bank, queries = _normalised(6, 8, 2), _normalised(4, 8, 3)
    sims, idx = knn_topk(bank, queries, k=50, bank_chunk=4)
    assert sims.shape == (4, 6)
    assert all(sorted(row.tolist()) == list(range(6)) for row in idx)


def _naive_knn(bank: np.ndarray, targets: np.ndarray, queries: np.ndarray, k: int, t: float) -> np.ndarray:
    """DINO's weighted vote written out one query at a time."""
    out = []
    for q in queries:
        sims = bank @ q
        top = np.argsort(-sims, kind="stable")[:k]
        w = np.exp(sims[top] / t)
        out.append((w[:, None] * targets[top]).sum(0) / w.sum())
    return np.asarray(out)


@pytest.mark.parametrize("multilabel", [False, True])
def test_knn_scores_equal_naive_weighted_vote(multilabel):
    rng = np.random.default_rng(4)
    bank, queries = _normalised(120, 10, 5), _normalised(30, 10, 6)
    if multilabel:
        targets = (rng.random((120, 3)) < 0.4).astype(np.float32)
    else:
        targets = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 120)]
    got = knn_scores(bank, torch.from_numpy(targets), queries, [1, 5, 40], temperature=0.07, bank_chunk=17)
    for k in (1, 5, 40):
        ref = _naive_knn(bank.double().numpy(), targets, queries.double().numpy(), k, 0.07)
        np.testing.assert_allclose(got[k].numpy(), ref, atol=1e-5)
        if not multilabel:
            np.testing.assert_allclose(got[k].sum(1).numpy(), 1.0, atol=1e-5)  # soft class probabilities


def test_knn_votes_stay_finite_at_low_temperature():
    bank, queries = _normalised(50, 8, 7), _normalised(10, 8, 8)
    targets = torch.eye(2)[torch.arange(50) % 2]
    scores = knn_scores(bank, targets, queries, [10], temperature=0.005)[10]  # exp(1/0.005) overflows float32
    assert torch.isfinite(scores).all()


# ------------------------------------------------------------------ fused heads
def _stack(task: str, heads: int, dim: int, outputs: int, seed: int, lrs=None, wds=None) -> HeadStack:
    gen = torch.Generator().manual_seed(seed)
    lrs = torch.full((heads,), 1e-3) if lrs is None else lrs
    wds = torch.zeros(heads) if wds is None else wds
    return HeadStack(task, dim, outputs, lrs, wds, weight=torch.randn(heads, outputs, dim + 1, generator=gen) * 0.5)


def test_head_stack_sgd_equals_torch_sgd_for_each_head():
    """Each head of the stack follows exactly the trajectory torch.optim.SGD (momentum, L2 weight
    decay on the weight only, a cosine-scaled learning rate) gives it alone."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 12, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    lrs, wds = torch.tensor([1e-3, 3e-2, 1e-1]), torch.tensor([0.0, 1e-2, 0.5])
    stack = _stack("multiclass", 3, 12, 3, 1, lrs, wds)
    singles = []
    for h in range(3):
        lin = torch.nn.Linear(12, 3)
        with torch.no_grad():
            lin.weight.copy_(stack.weight[h, :, :-1])
            lin.bias.copy_(stack.weight[h, :, -1])
        opt = torch.optim.SGD(
            [{"params": [lin.weight], "weight_decay": float(wds[h])}, {"params": [lin.bias], "weight_decay": 0.0}],
            lr=float(lrs[h]),
            momentum=0.9,
        )
        singles.append((lin, opt))
    xb = with_bias_column(x)
    for step in range(25):
        scale = 0.5 * (1 + np.cos(np.pi * step / 25))
        batch = slice((step * 16) % 64, (step * 16) % 64 + 16)
        stack.step(stack.gradient(xb[batch], y[batch]), scale)
        for lin, opt in singles:
            for g in opt.param_groups:
                g["lr"] = g.setdefault("base_lr", g["lr"]) * scale
            opt.zero_grad()
            F.cross_entropy(lin(x[batch]), y[batch]).backward()
            opt.step()
    for h, (lin, _) in enumerate(singles):
        torch.testing.assert_close(stack.weight[h, :, :-1], lin.weight.detach(), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stack.weight[h, :, -1], lin.bias.detach(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
@pytest.mark.parametrize("weighted", [False, True])
def test_fused_train_step_equals_reference_step(task, weighted):
    """The training loop's fused step (gradient accumulated into the momentum buffer) is
    ``step(gradient(...))``, in the primal and in the dual representation."""
    from medfm_plugins.protocols._heads import kernel

    gen = torch.Generator().manual_seed(8)
    c = 1 if task == "binary" else 3
    x = torch.randn(40, 9, generator=gen)
    y = (
        (torch.rand(40, c, generator=gen) < 0.4).float()
        if task != "multiclass"
        else torch.randint(0, 3, (40,), generator=gen)
    )
    w = torch.tensor([2.0, 0.7, 1.3][:c]) if weighted else None
    lrs, wds = torch.tensor([1e-2, 1e-1]), torch.tensor([0.0, 1e-2])
    for inputs, dim, dual in ((with_bias_column(x), 9, False), (with_bias_column(kernel(x, x)), 40, True)):
        ref = HeadStack(task, dim, c, lrs, wds)
        fused = HeadStack(task, dim, c, lrs, wds)
        for step in range(6):
            index = torch.tensor([(step * 7 + j) % 40 for j in range(12)])
            index[-1] = index[0]  # a batch that straddles two passes can hold a row twice
            rows, yb = inputs[index], y[index]
            grad = ref.dual_gradient(rows, index, yb, w) if dual else ref.gradient(rows, yb, w)
            ref.step(grad, 0.7)
            fused.train_step(rows, yb, w, 0.7, index if dual else None)
        torch.testing.assert_close(fused.weight, ref.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused.buffer, ref.buffer, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_dual_representation_follows_the_primal_trajectory(task):
    """SGD on kernel rows with coefficients over the training rows is the primal SGD, exactly:
    the same weights after every step, for every head, with momentum and weight decay."""
    from medfm_plugins.protocols._heads import kernel, to_primal

    gen = torch.Generator().manual_seed(9)
    n, d = 30, 50  # fewer rows than dimensions: the dual's regime
    c = 1 if task == "binary" else 4
    x = torch.randn(n, d, generator=gen)
    y = (
        (torch.rand(n, c, generator=gen) < 0.4).float()
        if task != "multiclass"
        else torch.randint(0, c, (n,), generator=gen)
    )
    lrs, wds = torch.tensor([1e-3, 3e-2, 1e-1]), torch.tensor([1e-2, 0.0, 1e-3])
    primal, dual = HeadStack(task, d, c, lrs, wds), HeadStack(task, n, c, lrs, wds)
    xb, kb = with_bias_column(x), with_bias_column(kernel(x, x))
    for _ in range(20):
        index = torch.randperm(n, generator=gen)[:8]
        primal.train_step(xb[index], y[index], None, 0.9)
        dual.train_step(kb[index], y[index], None, 0.9, index)
        torch.testing.assert_close(to_primal(dual.weight, x), primal.weight, atol=2e-5, rtol=1e-4)
    assert primal.weight.abs().max() > 0.05  # the heads did move


def test_train_grid_is_the_same_in_both_representations():
    """Forcing either representation gives the same heads, scores and checkpoints."""
    from medfm.protocols import KindFeatures
    from medfm_plugins.protocols._heads import training_targets
    from medfm_plugins.protocols.linear_probe import train_grid

    rng = np.random.default_rng(11)
    labels = {s: rng.integers(0, 2, m) for s, m in (("train", 60), ("val", 30), ("test", 20))}
    tensors = {s: torch.from_numpy(rng.normal(size=(len(v), 80)) + 0.4 * v[:, None]).float() for s, v in labels.items()}
    kinds = [KindFeatures("cls", {}, tensors, False)]
    y = training_targets("binary", labels["train"])
    grid = [(1e-3, 0.0), (1e-2, 1e-3), (1e-1, 1e-2)]
    out = {
        rep: train_grid(
            "binary",
            "auroc",
            kinds,
            y,
            labels["val"],
            2,
            grid,
            12,
            16,
            2,
            10**6,
            None,
            torch.Generator().manual_seed(0),
            representation=rep,
        )
        for rep in ("primal", "dual")
    }
    assert out["dual"]["banks"][0].representation == "dual" and out["primal"]["banks"][0].representation == "primal"
    torch.testing.assert_close(out["dual"]["best_val"], out["primal"]["best_val"])
    assert torch.equal(out["dual"]["best_epoch"], out["primal"]["best_epoch"])
    bank_d, bank_p = out["dual"]["banks"][0], out["primal"]["banks"][0]
    torch.testing.assert_close(
        bank_d.primal(out["dual"]["best_w"][0]), bank_p.primal(out["primal"]["best_w"][0]), atol=1e-5, rtol=1e-4
    )


def test_dual_is_chosen_only_where_it_saves_arithmetic():
    from medfm_plugins.protocols.linear_probe import dual_pays

    assert dual_pays(546, 1536, 78, 24, 30)  # BreastMNIST, last-4 CLS: 24 heads
    assert not dual_pays(546, 1536, 78, 1, 30)  # one head: the kernel costs more than it saves
    assert not dual_pays(100_000, 768, 10_000, 24, 30)  # many rows
    assert not dual_pays(546, 384, 78, 24, 30)  # narrow features


def test_batch_stream_covers_every_row_once_per_pass():
    from medfm_plugins.protocols.linear_probe import batch_stream

    batches = list(batch_stream(10, 4, 3, torch.Generator().manual_seed(0)))
    assert [len(i) for i, _ in batches] == [4, 4, 4, 4, 4, 4, 4, 2]  # full batches across passes, one remainder
    assert [done for _, done in batches] == [0, 0, 1, 1, 2, 2, 2, 3]
    rows = torch.cat([i for i, _ in batches])
    for p in range(3):
        assert sorted(rows[p * 10 : (p + 1) * 10].tolist()) == list(range(10))


def test_heads_are_independent_even_of_nan_heads():
    """A head's gradient does not depend on the other heads, even NaN ones, which are detected."""
    gen = torch.Generator().manual_seed(2)
    x, y = with_bias_column(torch.randn(32, 6, generator=gen)), (torch.rand(32, 4, generator=gen) < 0.5).float()
    stack = _stack("multilabel", 3, 6, 4, 3)
    alone = stack.gradient(x, y)[0].clone()
    stack.weight[2] = float("nan")
    grad = stack.gradient(x, y)
    torch.testing.assert_close(grad[0], alone)
    assert torch.isfinite(grad[:2]).all() and not torch.isfinite(grad[2]).any()
    assert stack.finite_heads().tolist() == [True, True, False]


def test_removed_heads_leave_the_others_untouched():
    gen = torch.Generator().manual_seed(4)
    x, y = with_bias_column(torch.randn(40, 5, generator=gen)), torch.randint(0, 3, (40,), generator=gen)
    lrs = torch.tensor([1e-3, 1e-2, 3e-2, 1e-1])
    full, part = _stack("multiclass", 4, 5, 3, 5, lrs), _stack("multiclass", 4, 5, 3, 5, lrs)
    part.keep(torch.tensor([False, True, False, True]))
    assert part.heads == 2 and part.ids.tolist() == [1, 3]
    for _ in range(10):
        full.step(full.gradient(x, y))
        part.step(part.gradient(x, y))
    torch.testing.assert_close(part.weight, full.weight[[1, 3]])


def test_class_weighted_loss_equals_pytorch_weighted_cross_entropy():
    gen = torch.Generator().manual_seed(3)
    logits, y = torch.randn(40, 2, 3, generator=gen), torch.randint(0, 3, (40,), generator=gen)
    w = torch.tensor([0.5, 2.0, 1.5])
    got = head_losses("multiclass", logits, y, w)
    for h in range(2):
        torch.testing.assert_close(got[h], F.cross_entropy(logits[:, h], y, weight=w))
    yb = (torch.rand(40, 3, generator=gen) < 0.3).float()
    got = head_losses("multilabel", logits, yb, w)
    for h in range(2):
        torch.testing.assert_close(got[h], F.binary_cross_entropy_with_logits(logits[:, h], yb, pos_weight=w))


@pytest.mark.parametrize(
    "task,weighted",
    [
        ("multiclass", False),
        ("multiclass", True),
        ("binary", False),
        ("binary", True),
        ("multilabel", False),
        ("multilabel", True),
    ],
)
def test_closed_form_gradients_equal_autograd(task, weighted):
    gen = torch.Generator().manual_seed(4)
    c = 1 if task == "binary" else 3  # binary heads have one logistic output
    x = with_bias_column(torch.randn(50, 7, generator=gen))
    if task in ("binary", "multilabel"):
        y = (torch.rand(50, c, generator=gen) < 0.4).float()
    else:
        y = torch.randint(0, c, (50,), generator=gen)
    w = torch.tensor([2.0, 0.7, 1.3][:c]) if weighted else None
    stack = _stack(task, 4, 7, c, 6)
    weight = stack.weight.clone().requires_grad_(True)
    head_losses(task, stack.logits(x, weight), y, w).sum().backward()
    torch.testing.assert_close(stack.gradient(x, y, w), weight.grad)


@pytest.mark.parametrize("head_patience", [None, 2])
def test_a_head_trains_the_same_alone_or_in_a_grid(head_patience):
    """The grid is H independent heads: any head's best checkpoint equals training it alone,
    also when heads leave the grid on their own early stopping."""
    from medfm.protocols import KindFeatures
    from medfm_plugins.protocols._heads import training_targets
    from medfm_plugins.protocols.linear_probe import train_grid

    rng = np.random.default_rng(5)
    labels = {s: rng.integers(0, 3, n) for s, n in (("train", 90), ("val", 40), ("test", 10))}
    tensors = {s: torch.from_numpy(rng.normal(size=(len(v), 6)) + v[:, None]).float() for s, v in labels.items()}
    kinds = [KindFeatures("cls", {}, tensors, False)]
    y = training_targets("multiclass", labels["train"])

    def train(grid):
        return train_grid(
            "multiclass",
            "auroc",
            kinds,
            y,
            labels["val"],
            3,
            grid,
            12,
            32,
            2,
            10**6,
            None,
            torch.Generator().manual_seed(0),
            head_patience=head_patience,
        )

    grid = [(1e-3, 0.0), (3e-2, 1e-2), (1e-1, 0.0)]
    together = train(grid)
    for h, point in enumerate(grid):
        alone = train([point])
        torch.testing.assert_close(together["best_w"][0][h], alone["best_w"][0][0])
        assert together["best_epoch"][h] == alone["best_epoch"][0]
        assert float(together["best_val"][h]) == float(alone["best_val"][0])
    if head_patience:
        assert together["head_epochs"] < 12 * len(grid)  # some head left before the last epoch


def test_a_diverged_head_does_not_drive_early_stopping(monkeypatch):
    """A fast head that leads early and then diverges can never be selected, so its old score
    must neither stop training nor appear in the validation curve."""
    from medfm.protocols import KindFeatures
    from medfm_plugins.protocols import _heads
    from medfm_plugins.protocols._heads import training_targets
    from medfm_plugins.protocols.linear_probe import train_grid

    real_step = _heads.HeadStack.train_step

    def train_step(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        if self.t == 20:  # the lr 0.5 head, best after the first epochs, diverges
            self.weight[self.lr.view(-1) == 0.5] = float("nan")

    monkeypatch.setattr(_heads.HeadStack, "train_step", train_step)
    rng = np.random.default_rng(0)
    labels = {s: rng.integers(0, 3, n) for s, n in (("train", 90), ("val", 40), ("test", 10))}

    def features(v):
        # A nuisance shared by two features: the class-mean difference (where a slow head stays)
        # cannot separate it from the signal; the fitted difference of the two features (which
        # the fast head reaches within a few epochs) can.
        shared = rng.normal(size=len(v)) * 3.0
        x = rng.normal(size=(len(v), 6)) * 0.3
        x[:, 0] += v + shared
        x[:, 1] += shared
        return torch.from_numpy(x).float()

    tensors = {s: features(v) for s, v in labels.items()}
    y = training_targets("multiclass", labels["train"])
    out = train_grid(
        "multiclass",
        "auroc",
        [KindFeatures("cls", {}, tensors, False)],
        y,
        labels["val"],
        3,
        [(0.5, 0.0), (1e-3, 0.0)],
        30,
        20,
        1,
        2,
        None,
        torch.Generator().manual_seed(1),
    )
    assert out["dead"].tolist() == [True, False]
    assert out["best_val"][0] > out["best_val"][1]  # the dead head's pre-divergence score is the higher one
    died = int(out["best_epoch"][0]) + 1
    assert all(h["best_val"] <= float(out["best_val"][1]) for h in out["history"] if h["epoch"] > died)
    assert out["history"][-1]["best_val"] == float(out["best_val"][1])
    assert out["epochs_run"] > int(out["best_epoch"][1])  # stopped on the live head's patience, not the dead one's


def test_binary_logistic_head_is_a_two_way_softmax():
    from medfm_plugins.protocols._heads import head_scores

    z = torch.randn(3, 5, 1)
    torch.testing.assert_close(head_scores("binary", z), torch.softmax(torch.cat([torch.zeros_like(z), z], -1), -1))


def test_limit_threads_sets_and_restores_thread_counts():
    from threadpoolctl import threadpool_info

    from medfm.protocols import limit_threads

    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
    with limit_threads(None):
        assert torch.get_num_threads() == before
