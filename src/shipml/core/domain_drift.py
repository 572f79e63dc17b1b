"""The multivariate drift check: a domain classifier, a small tree model asked to tell the window's rows from the
reference's. What no per-feature statistic sees, such as a change in the correlation between two features, shows as
an AUC above chance (0.5); it is judged only when a permutation test says the AUC is not luck (``core.drift``'s
thresholds ``domain_alpha``, ``domain_auc_warn``, ``domain_auc_drift``).

scikit-learn is imported inside, when a check runs: reading a stored report needs none of it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from shipml.core.drift import MULTIVARIATE, DriftThresholds, FeatureDrift, Verdict, grade
from shipml.errors import SchemaError

# The domain classifier encodes at most this many reference categories per column (the rest share one code):
# HistGradientBoosting takes categorical codes below its 255 bins.
_MAX_DOMAIN_CATEGORIES = 250


def domain_classifier_drift(
    reference: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    thresholds: DriftThresholds | None = None,
    *,
    categorical: Collection[str] = (),
    max_rows: int = 5_000,
    permutations: int = 20,
    folds: int = 3,
    seed: int = 0,
) -> FeatureDrift:
    """Whether a small tree model can tell ``current`` rows from ``reference`` rows better than chance.

    The profile keeps only histograms, so the caller passes a sample of reference ROWS (columns
    as arrays of equal length; the same columns on both sides). Columns of bool/int/float dtype
    are numeric, others (and those named in ``categorical``) categorical. Each side is subsampled
    to ``max_rows``; the cross-validated AUC is compared with the AUCs of ``permutations`` runs
    on shuffled domain labels: p = (1 + #null >= observed) / (permutations + 1). Drift needs
    p < ``domain_alpha`` AND an AUC of at least ``domain_auc_drift``. ``rows`` is the number of
    current rows used. Deterministic for a given ``seed``.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # scikit-learn's own dependency

    t = thresholds or DriftThresholds()
    names, ref, cur = _domain_columns(reference, current, categorical)
    n_ref, n_cur = len(next(iter(ref.values()))), len(next(iter(cur.values())))
    rng = np.random.default_rng(seed)
    ri = np.sort(rng.permutation(n_ref)[:max_rows])
    ci = np.sort(rng.permutation(n_cur)[:max_rows])
    if min(len(ri), len(ci)) < max(t.min_rows, folds):
        return _domain_result(0.5, 1.0, len(ci), "not_enough_data", t)
    x, cat_mask = _design(names, ref, cur, ri, ci, categorical)
    y = np.r_[np.zeros(len(ri), dtype=np.int64), np.ones(len(ci), dtype=np.int64)]
    # One thread: 21 x ``folds`` small fits are dominated by OpenMP start-up and contention on a shared machine
    # (3-5x slower with threads on 2 busy cores), and the job must not take every core from the server.
    with threadpool_limits(limits=1):
        observed = _cv_auc(x, y, cat_mask, folds, seed)
        null = np.array([_cv_auc(x, rng.permutation(y), cat_mask, folds, seed) for _ in range(permutations)])
    p_value = float((1 + np.count_nonzero(null >= observed)) / (permutations + 1))
    verdict = grade(observed, t.domain_auc_warn, t.domain_auc_drift) if p_value < t.domain_alpha else "no_drift"
    return _domain_result(observed, p_value, len(ci), verdict, t)


def _domain_result(auc: float, p_value: float, rows: int, verdict: Verdict, t: DriftThresholds) -> FeatureDrift:
    return FeatureDrift(
        MULTIVARIATE, "multivariate", "domain_auc", auc, t.domain_auc_warn, t.domain_auc_drift, rows, verdict, p_value
    )


def _domain_columns(
    reference: Mapping[str, npt.ArrayLike], current: Mapping[str, npt.ArrayLike], categorical: Collection[str]
) -> tuple[list[str], dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]:
    names = sorted(reference)
    if not names or sorted(current) != names:
        raise SchemaError(
            f"domain classifier: reference and current need the same columns, got {names} and {sorted(current)}"
        )
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise SchemaError(f"domain classifier: categorical columns not in the data: {', '.join(unknown)}")
    sides = []
    for side, columns in (("reference", reference), ("current", current)):
        arrays = {n: np.ravel(np.asarray(columns[n])) for n in names}
        lengths = {n: len(a) for n, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise SchemaError(f"domain classifier: {side} columns have different lengths: {lengths}")
        sides.append(arrays)
    return names, sides[0], sides[1]


def _design(
    names: list[str],
    ref: dict[str, npt.NDArray[Any]],
    cur: dict[str, npt.NDArray[Any]],
    ri: npt.NDArray[np.intp],
    ci: npt.NDArray[np.intp],
    categorical: Collection[str],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The stacked reference-then-current matrix: numeric columns as floats, categoricals as codes."""
    columns, is_cat = [], []
    for name in names:
        r, c = ref[name][ri], cur[name][ci]
        numeric = name not in categorical and r.dtype.kind in "biuf" and c.dtype.kind in "biuf"
        columns.append(np.r_[r, c].astype(np.float64) if numeric else _category_codes(r, c))
        is_cat.append(not numeric)
    matrix: npt.NDArray[np.float64] = np.column_stack(columns)
    return matrix, np.array(is_cat)


def _category_codes(r: npt.NDArray[Any], c: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Codes by the reference sample's categories (most frequent first); others share one code; nulls NaN."""
    both = pd.Series(np.r_[r, c], dtype=object)
    nulls = both.isna().to_numpy()
    text = both.astype(str)
    known = text[: len(r)][~nulls[: len(r)]].value_counts().index[:_MAX_DOMAIN_CATEGORIES]
    codes: npt.NDArray[np.float64] = pd.Index(known).get_indexer(text).astype(np.float64)
    codes[codes < 0] = len(known)
    codes[nulls] = np.nan
    return codes


def _cv_auc(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], cat_mask: npt.NDArray[np.bool_], folds: int, seed: int
) -> float:
    """The AUC of out-of-fold scores of a shallow gradient-boosted tree model separating y=1 from y=0."""
    # scikit-learn is imported here, not with the module: reading a stored report needs none of it
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    scores = np.empty(len(y), dtype=np.float64)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = HistGradientBoostingClassifier(
            max_iter=20,
            max_depth=3,
            learning_rate=0.3,
            early_stopping=False,
            categorical_features=cat_mask if cat_mask.any() else None,
            random_state=seed,
        )
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))
