/* shipml's native tree-ensemble kernel, loaded with ctypes (see native.py).
 *
 * It computes exactly what core/fast/trees.py computes in numpy, and what
 * scikit-learn computes: the row is rounded to float32 (except for
 * HistGradientBoosting, which compares float64), each split compares it,
 * as a double, with a double threshold (x <= threshold goes left), and the
 * per-tree leaf values (times `scale`, if given) are added to the row's sum in
 * tree order. Built with -ffp-contract=off so that no multiply-add is fused.
 *
 * The walk has no branches: both children of a node sit side by side
 * (child[2n] right, child[2n + 1] left) and the comparison picks one; a leaf
 * is its own child with threshold +inf, so every walk can take a fixed number
 * of steps and BLOCK walks go together, their loads overlapping: BLOCK rows
 * through one tree for batches, one row through BLOCK trees for a few rows.
 */
#include <stdint.h>

#define SHIPML_FOREST_ABI 4
/* a row value as the split sees it: rounded to float32 (sklearn's trees) or not (HistGradientBoosting) */
#define SPLIT_VALUE(v) (round32 ? (double)(float)(v) : (v))
#define BLOCK 8

int64_t shipml_forest_abi(void) { return SHIPML_FOREST_ABI; }

static inline void add_leaf(const double *v, double *o, int64_t n_out, int assign, int32_t has_scale, double scale) {
    for (int64_t k = 0; k < n_out; k++) {
        const double add = has_scale ? scale * v[k] : v[k];
        o[k] = assign ? add : o[k] + add;
    }
}

/* A few rows: each row walks BLOCK trees at once (their loads overlap), adding leaf values in tree order. */
static void rows_by_tree_blocks(const double *X, int64_t n_rows, int64_t n_cols, const int64_t *roots,
                                const int64_t *depths, int64_t n_trees, const int64_t *child, const int64_t *feature,
                                const double *threshold, const double *value, int64_t n_out, int32_t has_scale,
                                double scale, int32_t has_start, int32_t round32, double *out) {
    for (int64_t i = 0; i < n_rows; i++) {
        const double *x = X + i * n_cols;
        double *o = out + i * n_out;
        int64_t t = 0;
        for (; t + BLOCK <= n_trees; t += BLOCK) {
            int64_t node[BLOCK], depth = 0;
            for (int j = 0; j < BLOCK; j++) {
                node[j] = roots[t + j];
                if (depths[t + j] > depth) depth = depths[t + j];
            }
            for (int64_t d = 0; d < depth; d++) {
                for (int j = 0; j < BLOCK; j++) {
                    const int64_t n = node[j];
                    node[j] = child[2 * n + (SPLIT_VALUE(x[feature[n]]) <= threshold[n])];
                }
            }
            for (int j = 0; j < BLOCK; j++) {
                add_leaf(value + node[j] * n_out, o, n_out, t + j == 0 && !has_start, has_scale, scale);
            }
        }
        for (; t < n_trees; t++) {
            int64_t n = roots[t];
            for (int64_t d = 0; d < depths[t]; d++) n = child[2 * n + (SPLIT_VALUE(x[feature[n]]) <= threshold[n])];
            add_leaf(value + n * n_out, o, n_out, t == 0 && !has_start, has_scale, scale);
        }
    }
}

/* out has n_rows * n_out doubles: it holds the start values on entry when has_start, else it is
 * overwritten with the first tree's values. Node ids are global (trees concatenated). */
void shipml_forest_sum(const double *X, int64_t n_rows, int64_t n_cols, const int64_t *roots, const int64_t *depths,
                       int64_t n_trees, const int64_t *child, const int64_t *feature, const double *threshold,
                       const double *value, int64_t n_out, int32_t has_scale, double scale, int32_t has_start,
                       int32_t round32, double *out) {
    if (n_rows < BLOCK) {
        rows_by_tree_blocks(X, n_rows, n_cols, roots, depths, n_trees, child, feature, threshold, value, n_out,
                            has_scale, scale, has_start, round32, out);
        return;
    }
    /* Many rows: each tree walks BLOCK rows at once. */
    for (int64_t t = 0; t < n_trees; t++) {
        const int64_t root = roots[t], depth = depths[t];
        const int assign = (t == 0 && !has_start);
        int64_t i = 0;
        for (; i + BLOCK <= n_rows; i += BLOCK) {
            int64_t node[BLOCK];
            const double *x = X + i * n_cols;
            for (int j = 0; j < BLOCK; j++) node[j] = root;
            for (int64_t d = 0; d < depth; d++) {
                for (int j = 0; j < BLOCK; j++) {
                    const int64_t n = node[j];
                    node[j] = child[2 * n + (SPLIT_VALUE(x[j * n_cols + feature[n]]) <= threshold[n])];
                }
            }
            for (int j = 0; j < BLOCK; j++) {
                add_leaf(value + node[j] * n_out, out + (i + j) * n_out, n_out, assign, has_scale, scale);
            }
        }
        for (; i < n_rows; i++) {
            const double *x = X + i * n_cols;
            int64_t n = root;
            for (int64_t d = 0; d < depth; d++) n = child[2 * n + (SPLIT_VALUE(x[feature[n]]) <= threshold[n])];
            add_leaf(value + n * n_out, out + i * n_out, n_out, assign, has_scale, scale);
        }
    }
}
