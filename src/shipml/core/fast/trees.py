"""Tree ensembles evaluated all trees in lock-step with numpy.

As in sklearn, the input is cast to float32 (not for HistGradientBoosting) and compared with float64
thresholds (``x <= threshold`` goes left); per-tree outputs are added in
estimator order, so the sums match sklearn's to the last bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

# Above this many (rows x trees) cells, trees are walked one at a time instead of in lock-step.
LOCKSTEP_MAX_CELLS = 20_000

Summer = Callable[[np.ndarray, float | None, np.ndarray | None], np.ndarray]


class TreeKernel(Protocol):
    """Compiled code that sums an ensemble's leaf values exactly as ``LockstepTrees.summed`` does
    (the native kernel is one, in adapters): ``bind`` takes the node tables (global node ids; each
    node's right and left child side by side; a leaf is its own child with threshold +inf) and
    returns ``summed(X, scale, start)`` for a float64 ``X``, which it rounds to float32 (``round32``, as
    sklearn's trees do) or compares as it is (HistGradientBoosting)."""

    name: str

    def bind(
        self,
        roots: np.ndarray,
        depths: np.ndarray,
        child: np.ndarray,
        feature: np.ndarray,
        threshold: np.ndarray,
        value: np.ndarray,
        round32: bool = True,
    ) -> Summer: ...


class TreeArrays:
    """One fitted tree as plain arrays, with the attributes of sklearn's ``Tree`` that are read here
    (a packed predictor's trees; ``value`` is (nodes, 1, n_outputs) as in sklearn)."""

    n_outputs = 1

    def __init__(
        self, left: np.ndarray, right: np.ndarray, feature: np.ndarray, threshold: np.ndarray, value: np.ndarray
    ) -> None:
        self.children_left = left
        self.children_right = right
        self.feature = feature
        self.threshold = threshold
        self.value = value
        self.node_count = len(left)
        self.max_depth = _depth(left, right)

    def apply(self, x32: np.ndarray) -> np.ndarray:
        """The leaf of every row, one level of the tree at a time for all rows."""
        node = np.zeros(len(x32), dtype=np.int64)
        rows = np.arange(len(x32))
        leaf = self.children_left == -1
        feature = np.where(leaf, 0, self.feature)
        for _ in range(self.max_depth):
            go_left = x32[rows, feature[node]] <= self.threshold[node]
            nxt = np.where(go_left, self.children_left[node], self.children_right[node])
            node = np.where(leaf[node], node, nxt)
        return node


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    depth = np.zeros(len(left), dtype=np.int64)
    for n in range(len(left)):  # sklearn numbers a child after its parent
        if left[n] != -1:
            depth[left[n]] = depth[right[n]] = depth[n] + 1
    return int(depth.max()) if len(depth) else 0


class LockstepTrees:
    """Several trees (sklearn ``Tree`` objects or ``TreeArrays``) flattened into one node table."""

    def __init__(
        self, trees: Sequence[Any], n_outputs: int, kernel: TreeKernel | None = None, round32: bool = True
    ) -> None:
        self.round32 = round32
        lefts, rights, features, thresholds, values, roots = [], [], [], [], [], []
        depths = []
        offset = 0
        for tree in trees:
            if tree.n_outputs != 1:
                raise ValueError("multi-output trees")
            n = tree.node_count
            left = tree.children_left.astype(np.int64)
            right = tree.children_right.astype(np.int64)
            leaf = left == -1
            own = np.arange(n, dtype=np.int64)
            lefts.append(np.where(leaf, own, left) + offset)  # a leaf points at itself: it stays put
            rights.append(np.where(leaf, own, right) + offset)
            features.append(np.where(leaf, 0, tree.feature).astype(np.int64))
            thresholds.append(np.where(leaf, np.inf, tree.threshold))
            values.append(tree.value[:, 0, :n_outputs])
            depths.append(int(tree.max_depth))
            roots.append(offset)
            offset += n
        left_all, right_all = np.concatenate(lefts), np.concatenate(rights)
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        # Walk with doubled node ids: slot 2n+1 holds the left child (taken when x <= threshold, True = 1),
        # slot 2n the right one, both already doubled; one gather per level picks the next node.
        self.children2 = np.empty(2 * len(left_all), dtype=np.int64)
        self.children2[0::2] = 2 * right_all
        self.children2[1::2] = 2 * left_all
        self.feature2 = np.repeat(self.feature, 2)
        self.threshold2 = np.repeat(self.threshold, 2)
        self.value = np.ascontiguousarray(np.concatenate(values))
        self.roots = np.asarray(roots, dtype=np.int64)
        self.roots2 = 2 * self.roots
        self.depth = max(depths, default=0)
        self.trees = list(trees)
        self.tree_values = [np.ascontiguousarray(t.value[:, 0, :n_outputs]) for t in trees]
        self.n_trees = len(roots)
        self._native: Summer | None = None
        if kernel is not None:
            self._native = kernel.bind(
                self.roots, np.asarray(depths), self.children2 >> 1, self.feature, self.threshold, self.value, round32
            )

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """Leaf node (global index) of every tree for every row: shape (n_trees, n_rows)."""
        x32 = np.ascontiguousarray(X, dtype=np.float32 if self.round32 else np.float64)
        n_rows, n_cols = x32.shape
        flat = x32.ravel()
        node2 = np.repeat(self.roots2[:, None], n_rows, axis=1)
        feature2, threshold2, children2 = self.feature2, self.threshold2, self.children2
        if n_rows == 1:
            for _ in range(self.depth):
                node2 = children2[node2 + (flat[feature2[node2]] <= threshold2[node2])]
        else:
            base = (np.arange(n_rows, dtype=np.int64) * n_cols)[None, :]
            for _ in range(self.depth):
                node2 = children2[node2 + (flat[base + feature2[node2]] <= threshold2[node2])]
        return node2 >> 1

    def summed(self, X: np.ndarray, scale: float | None = None, start: np.ndarray | None = None) -> np.ndarray:
        """Sum over trees, in tree order, of each tree's leaf value (times ``scale``), after ``start``."""
        if self._native is not None:
            return self._native(X, scale, start)
        if X.shape[0] * self.n_trees > LOCKSTEP_MAX_CELLS:
            return self._summed_tree_by_tree(X, scale, start)
        per_tree = self.value[self.leaves(X)]  # (n_trees, n_rows, n_outputs)
        if scale is not None:
            per_tree = scale * per_tree
        if start is not None:
            per_tree = np.concatenate([start[None, :, :], per_tree], axis=0)
        # cumsum is sequential by definition: ((t0 + t1) + t2) + ..., sklearn's order of accumulation
        total: np.ndarray = np.cumsum(per_tree, axis=0)[-1]
        return total

    def _summed_tree_by_tree(self, X: np.ndarray, scale: float | None, start: np.ndarray | None) -> np.ndarray:
        """The same sum for big batches: each tree's leaves from sklearn's own compiled ``Tree.apply``
        (the routine its predict uses), so the working arrays stay small and the loop stays in C."""
        x32 = np.ascontiguousarray(X, dtype=np.float32 if self.round32 else np.float64)
        out = None if start is None else start.copy()
        for tree, values in zip(self.trees, self.tree_values, strict=True):
            leaf_value = values[tree.apply(x32)]
            if scale is not None:
                leaf_value = scale * leaf_value
            if out is None:
                out = leaf_value
            else:
                out += leaf_value
        assert out is not None  # noqa: S101 - at least one tree
        return out
