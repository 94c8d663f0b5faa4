import numpy as np
import pytest

from harness.demo_model import FEATURES, DemoModel, synthetic_rows


def flip_rate(variant: str, rows: np.ndarray) -> float:
    incumbent, _ = DemoModel("incumbent").predict(rows)
    candidate, _ = DemoModel("candidate", variant).predict(rows)
    return float(np.mean(incumbent != candidate))


def test_rows_are_reproducible_from_a_seed():
    a, b, c = synthetic_rows(500, 7), synthetic_rows(500, 7), synthetic_rows(500, 8)
    assert a.dtype == np.float32 and a.shape == (500, len(FEATURES))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rows_from_one_generator_continue_the_stream():
    rng = np.random.default_rng(3)
    first, second = synthetic_rows(10, rng), synthetic_rows(10, rng)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, synthetic_rows(10, 3))


def test_rows_have_realistic_ranges():
    rows = synthetic_rows(5000, 1)
    col = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    assert 18 <= col["age"].min() and col["age"].max() <= 90
    assert 8_000 <= col["income"].min() and col["income"].max() <= 400_000
    assert 300 <= col["credit_score"].min() and col["credit_score"].max() <= 850
    assert set(np.unique(col["num_products"])) <= {1, 2, 3, 4}
    assert 0.2 < np.mean(col["balance"] == 0) < 0.4
    assert np.all(rows == np.rint(rows))  # whole numbers: exact through float32 and JSON


def test_predict_shapes_dtypes_and_probabilities():
    labels, probabilities = DemoModel("incumbent").predict(synthetic_rows(1000, 0))
    assert labels.dtype == np.int64 and labels.shape == (1000,)
    assert probabilities.dtype == np.float32 and probabilities.shape == (1000, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(labels, (probabilities[:, 1] >= 0.5).astype(np.int64))
    assert 0.2 < labels.mean() < 0.4  # both classes well represented


def test_predict_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        DemoModel().predict(np.zeros((3, 4)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_candidate_flip_rates(seed):
    rows = synthetic_rows(20_000, seed)
    assert flip_rate("identical", rows) == 0.0
    assert 0.02 <= flip_rate("subtle", rows) <= 0.04
    assert flip_rate("broken", rows) > 0.30


def test_incumbent_ignores_the_variant():
    rows = synthetic_rows(2000, 0)
    a = DemoModel("incumbent", "broken").predict(rows)
    b = DemoModel("incumbent", "identical").predict(rows)
    np.testing.assert_array_equal(a[1], b[1])


def test_unknown_role_or_variant_is_named():
    with pytest.raises(ValueError, match="role"):
        DemoModel("baseline")
    with pytest.raises(ValueError, match="variant"):
        DemoModel("candidate", "sneaky")
