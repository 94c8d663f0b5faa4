"""The demo model: a churn-style logistic regression over a fixed synthetic tabular data set.

Pure numpy, no I/O. The demo servers (`proxies/demo_server.py`) serve it; the load generator
draws its requests from `synthetic_rows`, so the flip rates below are what a demo run sees.
One code base serves both arms: the incumbent has fixed weights, the candidate one of the
variants below, so a shadow run has a known answer to find.
"""

from __future__ import annotations

import numpy as np

FEATURES = ("age", "income", "tenure_months", "num_products", "balance", "credit_score")

ROLES = ("incumbent", "candidate")
VARIANTS = ("identical", "subtle", "broken")

# Standardisation: population mean and standard deviation of `synthetic_rows`, rounded
# (measured on 200k rows; exactness does not matter, only that every arm uses the same).
_MEAN = np.array([42.0, 62_000.0, 40.0, 1.8, 57_000.0, 650.0])
_SCALE = np.array([12.6, 33_000.0, 39.0, 0.9, 71_000.0, 89.0])

# Incumbent: older customers with more products and a higher balance churn more; long tenure,
# income and a good credit score keep them. About 29% of synthetic rows are labelled 1.
_INCUMBENT_COEF = np.array([0.60, -0.40, -1.00, 0.70, 0.50, -0.80])
_INCUMBENT_BIAS = -0.90

# Candidate weights, per variant. Flip rate = share of rows whose label differs from the
# incumbent's, measured on synthetic_rows(20_000, seed) for seeds 0, 1, 2, 3 and 12345.
_CANDIDATE = {
    # Same weights: the noise floor, flip rate exactly 0.
    "identical": (_INCUMBENT_COEF, _INCUMBENT_BIAS),
    # A plausible retrain: every weight nudged (incumbent + 0.31 * a fixed direction, rounded).
    # Measured flip rate 2.99% to 3.14% per seed (2.99% on seed 0; 3.06% on 1M rows).
    "subtle": (np.array([0.68, -0.35, -1.06, 0.61, 0.56, -0.72]), -0.87),
    # A feature-pipeline bug: tenure_months and credit_score enter with inverted sign.
    # Measured flip rate 39.7% to 40.7% per seed (40.1% on seed 0; 40.2% on 1M rows).
    "broken": (_INCUMBENT_COEF * np.array([1, 1, -1, 1, 1, -1]), _INCUMBENT_BIAS),
}


def synthetic_rows(n: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """`n` customer rows, float32 shape (n, len(FEATURES)), reproducible from `seed`.

    Pass a `numpy.random.Generator` to keep drawing from one stream (the load generator does);
    an int seed starts a fresh one. Values are whole numbers, so they survive float32 and JSON
    exactly and request bodies stay short.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    age = np.clip(np.rint(rng.normal(42, 13, n)), 18, 90)
    income = np.clip(np.rint(rng.lognormal(np.log(55_000), 0.5, n)), 8_000, 400_000)
    tenure_months = np.clip(np.rint(rng.exponential(40, n)), 0, 240)
    num_products = rng.choice(np.array([1.0, 2.0, 3.0, 4.0]), n, p=[0.5, 0.3, 0.15, 0.05])
    has_balance = rng.random(n) >= 0.3  # three in ten customers hold no balance
    balance = np.where(has_balance, np.clip(np.rint(rng.lognormal(np.log(60_000), 0.8, n)), 0, 500_000), 0.0)
    credit_score = np.clip(np.rint(rng.normal(650, 90, n)), 300, 850)
    return np.column_stack([age, income, tenure_months, num_products, balance, credit_score]).astype(np.float32)


class DemoModel:
    """Logistic regression; `role` picks the weights, `variant` matters for the candidate only."""

    def __init__(self, role: str = "incumbent", variant: str = "subtle"):
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.role = role
        self.variant = variant
        coef, bias = (_INCUMBENT_COEF, _INCUMBENT_BIAS) if role == "incumbent" else _CANDIDATE[variant]
        # Fold standardisation into the weights once: z = x @ w + b.
        self._w = np.asarray(coef, dtype=np.float64) / _SCALE
        self._b = float(bias) - float(_MEAN @ self._w)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels int64 (n,) and class probabilities float32 (n, 2) for rows x of shape (n, F).

        Non-finite input gives non-finite output; the serving app decides what to do first.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(FEATURES):
            raise ValueError(f"expected shape (n, {len(FEATURES)}), got {x.shape}")
        z = x @ self._w + self._b
        with np.errstate(over="ignore", invalid="ignore"):
            p1 = 1.0 / (1.0 + np.exp(-z))
        labels = (z >= 0).astype(np.int64)
        probabilities = np.empty((x.shape[0], 2), dtype=np.float32)
        probabilities[:, 1] = p1
        probabilities[:, 0] = 1.0 - p1
        return labels, probabilities
