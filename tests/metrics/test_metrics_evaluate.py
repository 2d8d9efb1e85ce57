import json
import logging

import pytest

from trimodal.metrics.evaluate import evaluate_items, paired, summarize


def flaky(o, r):
    if o == 3:
        raise RuntimeError("cannot score item three\nsecond line of detail")
    return float(o - r)


def test_a_metric_raising_on_one_item_is_recorded_missing_and_counted(caplog):
    originals = [1, 2, 3, 4]
    recons = [0, 0, 0, 0]
    with caplog.at_level(logging.WARNING, logger="trimodal.metrics.evaluate"):
        report = evaluate_items(paired(originals, recons),
                                {"diff": flaky, "sum": lambda o, r: o + r},
                                keys=["a", "b", "c", "d"], modality="toy", progress=False)
    assert [r.values["diff"] for r in report.items] == [1.0, 2.0, None, 4.0]
    assert report.items[2].errors == {"diff": "RuntimeError: cannot score item three"}
    assert report.items[2].values["sum"] == 3.0  # the other metric still ran on that item
    s = report.summary["diff"]
    assert (s.n, s.n_missing, s.mean, s.median, s.min, s.max) == (3, 1, 7 / 3, 2.0, 1.0, 4.0)
    assert report.n_missing == {"diff": 1, "sum": 0}
    assert "diff failed on item c" in caplog.text
    json.dumps(report.to_dict())  # plain data


def test_nan_counts_as_missing_and_inf_is_kept():
    report = evaluate_items([(0, 0), (1, 1), (2, 2)],
                            {"m": lambda o, r: [float("nan"), float("inf"), 1.0][o]},
                            progress=False)
    assert report.items[0].values["m"] is None and "NaN" in report.items[0].errors["m"]
    s = report.summary["m"]
    assert s.n == 2 and s.mean == float("inf") and s.std is None
    assert [r.key for r in report.items] == ["0", "1", "2"]


def test_all_missing_summary_and_length_mismatches():
    s = summarize([None, None])
    assert s.n == 0 and s.n_missing == 2 and s.mean is None
    with pytest.raises(ValueError):
        list(paired([1, 2], [1]))
    with pytest.raises(ValueError):
        evaluate_items([(1, 1), (2, 2)], {"m": lambda o, r: 0.0}, keys=["only-one"],
                       progress=False)
    with pytest.raises(ValueError, match="no metrics"):
        evaluate_items([(1, 1)], {}, progress=False)
