"""The harness owns the truth: labels and patients come from the data set, scores are checked
against the test split's ids, and every record carries the test set's identity."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from protocol_support import SPLITS, feature_task, run_config

from medfm import Dataset, DatasetSpec, Predictions, ProtocolOutput, ProtocolSpec, hookimpl
from medfm.records import read_predictions
from medfm.runner import Runner
from medfm.test_set import split_identity
from medfm.verification import verify_file


class ScoringProtocols:
    """Protocols that return the oracle's scores in ways a careless or hostile plugin might."""

    plugin_name = "scoring"

    @hookimpl
    def register_protocols(self, register):
        def honest(ctx, ids=None, scores=None):
            test = ctx.split("test")
            p = np.asarray(test.labels, dtype=float) * 0.6 + 0.2
            return ProtocolOutput(
                ids=list(test.ids) if ids is None else ids, scores=np.c_[1 - p, p] if scores is None else scores
            )

        def reversed_ids(ctx):
            out = honest(ctx)
            return ProtocolOutput(ids=list(out.ids)[::-1], scores=out.scores[::-1])

        def partial(ctx):
            out = honest(ctx)
            return ProtocolOutput(ids=list(out.ids)[:2], scores=out.scores[:2])

        def invented(ctx):
            out = honest(ctx)
            return ProtocolOutput(ids=["test/0", "ghost/1", *list(out.ids)[2:]], scores=out.scores)

        def repeated(ctx):
            out = honest(ctx)
            ids = list(out.ids)
            return ProtocolOutput(ids=[ids[0], *ids[:-1]], scores=out.scores)

        def one_d(ctx):
            out = honest(ctx)
            return ProtocolOutput(ids=out.ids, scores=out.scores[:, 1])

        def three_columns(ctx):
            out = honest(ctx)
            return ProtocolOutput(ids=out.ids, scores=np.c_[out.scores, out.scores[:, :1]])

        def flipped_labels(ctx):
            # the old API let a protocol hand in its own labels: now a Predictions is refused
            test = ctx.split("test")
            out = honest(ctx)
            return Predictions(test.ids, 1 - np.asarray(test.labels), out.scores)

        for name, run in [
            ("honest", honest),
            ("reversed_ids", reversed_ids),
            ("partial", partial),
            ("invented", invented),
            ("repeated", repeated),
            ("one_d", one_d),
            ("three_columns", three_columns),
            ("flipped_labels", flipped_labels),
        ]:
            register(ProtocolSpec(name=name, run=run, needs=frozenset({"features"})))


@pytest.fixture
def data():
    return feature_task("truth", "binary", 2, sizes=(40, 20, 30), patients=3)


def run(registry_factory, tmp_path, data, protocols):
    cfg = run_config(tmp_path, data, protocols, bootstrap=100)
    return {o.cell.protocol.name: o for o in Runner(registry_factory(data, ScoringProtocols()), cfg).run()}


def test_labels_and_patients_come_from_the_data_set_and_ids_are_reordered(registry_factory, tmp_path, data):
    out = run(registry_factory, tmp_path, data, ["honest", "reversed_ids"])
    assert {o.status for o in out.values()} == {"ok"}
    honest = read_predictions(out["honest"].record_path.with_name("tester.seed0.predictions.npz"))
    backwards = read_predictions(out["reversed_ids"].record_path.with_name("tester.seed0.predictions.npz"))
    test = data.split("test")
    assert honest.ids == backwards.ids == list(test.ids)  # the split's order, whatever the protocol's
    np.testing.assert_array_equal(honest.labels, test.labels)
    np.testing.assert_array_equal(honest.groups, test.groups)
    np.testing.assert_allclose(backwards.scores, honest.scores)
    record = verify_file(out["honest"].record_path, tmp_path / "results").record
    assert record["test_set"] == {
        "identity": split_identity(test.ids, test.labels, test.groups),
        "n": 30,
        "split": "test",
        "split_file_sha256": None,
    }


@pytest.mark.parametrize(
    "protocol, needle",
    [
        ("partial", "returned scores for 2 of the 30 test samples (missing: 'test/2', 'test/3', 'test/4' and 25 more)"),
        ("invented", "ids that are not in the test split: 'ghost/1'"),
        ("repeated", "the same test sample more than once: 'test/0'"),
        ("one_d", "scores of shape (30,); they must be (N, C)"),
        ("three_columns", "returned 3 score columns; a binary task with these classes needs 2"),
        ("flipped_labels", "returned Predictions, not ProtocolOutput"),
    ],
)
def test_output_that_misses_repeats_or_invents_ids_is_refused_naming_the_protocol(
    registry_factory, tmp_path, data, protocol, needle
):
    outcome = run(registry_factory, tmp_path, data, [protocol])[protocol]
    assert outcome.status == "error"
    assert f"protocol {protocol!r}" in outcome.message and needle in outcome.message
    assert not outcome.record_path.with_name("tester.seed0.predictions.npz").exists()


def test_a_data_set_whose_files_give_another_test_set_than_the_published_one_fails(registry_factory, tmp_path, data):
    class Published(type(data)):
        @hookimpl
        def register_datasets(self, register):
            def load(spec):
                return Dataset("binary", spec.classes, {s: self.split(s) for s in SPLITS})

            register(
                DatasetSpec(name=self.dataset, load=load, task="binary", classes=("a", "b"), test_identity="0" * 64)
            )

    published = Published(**{f.name: getattr(data, f.name) for f in dataclasses.fields(data) if f.init})
    cfg = run_config(tmp_path, published, ["honest"], bootstrap=100)
    outcome = Runner(registry_factory(published, ScoringProtocols()), cfg).run()[0]
    assert outcome.status == "error" and "is not the published one" in outcome.message
