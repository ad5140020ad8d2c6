//! Property tests (proptest) of the core math against independent reference computations.
//!
//! Each property runs a modest number of cases (see [`cases`]) so the file takes seconds in the
//! test profile; set `PROPTEST_CASES=N` for a longer soak, e.g.
//! `PROPTEST_CASES=2000 cargo test -p imclust-core proptests`.

use crate::fixed::FixedScale;
use crate::init::{self, Init};
use crate::kernel::{self, Centroids, Metric, PartialSums, RowIds, Rows};
use crate::kmeans::{self, Algorithm, Config, Prepared};
use crate::linalg;
use crate::metrics::{self, Contingency};
use crate::rng::Rng;
use proptest::collection::vec;
use proptest::prelude::*;

/// Cases per property: 32, or `PROPTEST_CASES` when set (an explicit `with_cases` would
/// otherwise ignore the variable).
fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig::with_cases(n)
}

/// Largest absolute value (the input of [`FixedScale::for_data`]).
fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

// ---------------------------------------------------------------------------------------------
// 1. kernel::assign against brute force
// ---------------------------------------------------------------------------------------------

/// `(n, d, k, rows, centroids)`: values uniform in [-1, 1] (the range of unit-normalised
/// embeddings). k is drawn half from the direct small-k kernel (k <= 32) and half from the
/// GEMM path (k > 32).
fn assign_case() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>)> {
    (
        1usize..600,
        1usize..40,
        prop_oneof![1usize..=32, 33usize..50],
    )
        .prop_flat_map(|(n, d, k)| {
            (
                Just(n),
                Just(d),
                Just(k),
                vec(-1.0f32..=1.0, n * d),
                vec(-1.0f32..=1.0, k * d),
            )
        })
}

proptest! {
    #![proptest_config(cases(32))]

    /// The kernel computes `||x||^2 + ||c||^2 - 2 x.c` in f32 (GEMM or the direct kernel);
    /// with |values| <= 1 and d < 40 its absolute rounding error is below ~1e-5, far inside
    /// the tolerances below, which are relative to the true f64 quantities plus a small
    /// absolute floor for near-zero distances (where relative error is meaningless for an
    /// expanded-form distance).
    #[test]
    fn assign_matches_brute_force((n, d, k, x, cdata) in assign_case()) {
        let c = Centroids::new(cdata, k, d).unwrap();
        let xn = linalg::row_sq_norms(&x, d);
        let rows = Rows { data: &x, sq_norms: &xn, d, ids: RowIds::From(0) };
        let scale = FixedScale::for_data(max_abs(&x), n as u64).unwrap();
        let (a, ps) = kernel::assign(&rows, &c, Metric::Euclidean, scale).unwrap();
        prop_assert_eq!(a.clusters.len(), n);
        prop_assert_eq!(a.distances.len(), n);
        prop_assert_eq!(a.margins.len(), n);

        let mut want_inertia = 0.0f64;
        let mut want_counts = vec![0u64; k];
        let mut want_sums = vec![0.0f64; k * d];
        for i in 0..n {
            let row = &x[i * d..(i + 1) * d];
            let mut dist: Vec<f64> = (0..k).map(|j| linalg::sq_dist(row, c.row(j))).collect();
            let j = a.clusters[i] as usize;
            prop_assert!(j < k, "row {i}: cluster {j} out of range (k = {k})");
            let got = dist[j];
            dist.sort_by(f64::total_cmp);
            let (d1, d2) = (dist[0], dist.get(1).copied().unwrap_or(f64::INFINITY));
            // The chosen centroid is (up to rounding) a nearest one.
            prop_assert!(got <= d1 * (1.0 + 1e-4) + 1e-4,
                "row {i}: chosen cluster {j} at squared distance {got}, brute-force minimum {d1}");
            // Reported distance is the Euclidean (not squared) distance to the nearest.
            let dist_i = a.distances[i] as f64;
            prop_assert!((dist_i - d1.sqrt()).abs() <= 1e-3 * d1.sqrt() + 1e-3,
                "row {i}: distance {dist_i}, brute force {}", d1.sqrt());
            if k == 1 {
                prop_assert_eq!(a.margins[i], f32::INFINITY, "row {}: margin with k = 1", i);
            } else {
                let m = a.margins[i] as f64;
                prop_assert!(m >= 0.0, "row {i}: negative margin {m}");
                let want = d2.sqrt() - d1.sqrt();
                prop_assert!((m - want).abs() <= 2e-3 * d2.sqrt() + 2e-3,
                    "row {i}: margin {m}, brute force {want}");
            }
            want_inertia += d1;
            want_counts[j] += 1;
            for t in 0..d {
                want_sums[j * d + t] += row[t] as f64;
            }
        }
        let inertia = ps.inertia_value();
        prop_assert!((inertia - want_inertia).abs() <= 1e-4 * want_inertia + 1e-4,
            "inertia {inertia}, brute force {want_inertia}");
        prop_assert_eq!(ps.total(), n as u64);
        prop_assert_eq!(a.clusters.iter().filter(|&&j| (j as usize) < k).count(), n);
        prop_assert_eq!(&ps.counts, &want_counts);
        // Fixed-point sums: each value is off by at most half a quantum (~1e-15 here).
        for j in 0..k {
            for (t, (g, w)) in ps.sum(j).iter().zip(&want_sums[j * d..(j + 1) * d]).enumerate() {
                prop_assert!((g - w).abs() <= 1e-9 * (1.0 + w.abs()), "sum[{j}][{t}] {g} vs {w}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. partial_sums: split- and merge-order invariance, bit for bit
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SplitCase {
    n: usize,
    d: usize,
    k: usize,
    x: Vec<f32>,
    c: Vec<f32>,
    cosine: bool,
    cap: usize,
    /// Global index of the first row.
    base: u64,
    /// Cut points in 0..=n (unsorted, possibly repeated: empty pieces are allowed).
    cuts: Vec<usize>,
    /// Sort keys giving the merge order of the pieces.
    order_keys: Vec<u64>,
    /// Where the random merge tree splits the pieces into two accumulators.
    tree_split: usize,
}

/// Values either continuous or on a coarse grid (many duplicate rows and exactly tied
/// distances, which exercise the tie-breaking of the nearest centroid and of the farthest
/// candidates).
fn values(len: usize, grid: bool) -> BoxedStrategy<Vec<f32>> {
    if grid {
        vec((-4i8..=4).prop_map(|v| v as f32 * 0.25), len).boxed()
    } else {
        vec(-3.0f32..3.0, len).boxed()
    }
}

fn split_case() -> impl Strategy<Value = SplitCase> {
    (
        1usize..2500,
        1usize..24,
        prop_oneof![1usize..=32, 33usize..60],
        any::<bool>(),
        any::<bool>(),
        0usize..16,
        0u64..1_000_000_000_000,
    )
        .prop_flat_map(|(n, d, k, grid, cosine, cap, base)| {
            (
                values(n * d, grid),
                values(k * d, grid),
                vec(0..=n, 0..7),
                vec(any::<u64>(), 8),
                0usize..8,
            )
                .prop_map(move |(x, c, cuts, order_keys, tree_split)| SplitCase {
                    n,
                    d,
                    k,
                    x,
                    c,
                    cosine,
                    cap,
                    base,
                    cuts,
                    order_keys,
                    tree_split,
                })
        })
}

proptest! {
    #![proptest_config(cases(32))]

    /// The merge is exact integer arithmetic plus a totally ordered top-`cap` list, and the
    /// kernel's per-row results do not depend on a row's position in its block, so any split of
    /// the rows into contiguous pieces, merged in any order or tree shape, gives exactly (`==`,
    /// including the farthest candidates) the partial sums of the whole.
    #[test]
    fn partial_sums_are_split_and_merge_order_invariant(case in split_case()) {
        let SplitCase { n, d, k, mut x, mut c, cosine, cap, base, mut cuts, order_keys, tree_split } = case;
        let metric = if cosine { Metric::Cosine } else { Metric::Euclidean };
        if cosine {
            linalg::normalize_rows(&mut x, d);
            linalg::normalize_rows(&mut c, d);
        }
        let c = Centroids::new(c, k, d).unwrap();
        let xn = linalg::row_sq_norms(&x, d);
        let scale = FixedScale::for_data(max_abs(&x), n as u64).unwrap();
        let whole = kernel::partial_sums(
            &Rows { data: &x, sq_norms: &xn, d, ids: RowIds::From(base) }, &c, metric, scale, cap,
        ).unwrap();
        prop_assert_eq!(whole.total(), n as u64);
        prop_assert_eq!(whole.farthest.len(), cap.min(n));

        cuts.push(0);
        cuts.push(n);
        cuts.sort_unstable();
        let parts: Vec<PartialSums> = cuts
            .windows(2)
            .map(|w| {
                let (lo, hi) = (w[0], w[1]);
                let rows = Rows {
                    data: &x[lo * d..hi * d],
                    sq_norms: &xn[lo..hi],
                    d,
                    ids: RowIds::From(base + lo as u64),
                };
                kernel::partial_sums(&rows, &c, metric, scale, cap).unwrap()
            })
            .collect();
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by_key(|&i| order_keys[i]);

        // Sequentially, in a random order.
        let mut merged = PartialSums::new(k, d, scale, cap);
        for &i in &order {
            merged.merge(&parts[i]).unwrap();
        }
        prop_assert_eq!(&merged, &whole);

        // As a two-level tree: two accumulators over a random split of the shuffled pieces,
        // then merged into each other (in the "wrong" direction too).
        let s = tree_split.min(order.len());
        let mut left = PartialSums::new(k, d, scale, cap);
        let mut right = PartialSums::new(k, d, scale, cap);
        for &i in &order[..s] {
            left.merge(&parts[i]).unwrap();
        }
        for &i in &order[s..] {
            right.merge(&parts[i]).unwrap();
        }
        right.merge(&left).unwrap();
        prop_assert_eq!(&right, &whole);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Metrics
// ---------------------------------------------------------------------------------------------

/// `(assignments, labels)` with up to 6 cluster ids and 6 class labels, n in 1..200.
fn labelling() -> impl Strategy<Value = (Vec<u32>, Vec<u32>)> {
    (1usize..200, 1u32..=6, 1u32..=6).prop_flat_map(|(n, kc, kl)| (vec(0..kc, n), vec(0..kl, n)))
}

/// An injective map of `0..6` into sparse ids `0..64`, in random order (a relabelling).
fn relabelling() -> impl Strategy<Value = Vec<u32>> {
    prop::sample::subsequence((0u32..64).collect::<Vec<_>>(), 6).prop_shuffle()
}

/// Best one-to-one matching of the table by exhaustive search (reference for ACC).
fn best_matching(t: &Contingency) -> u64 {
    fn go(t: &Contingency, r: usize, used: &mut Vec<bool>) -> u64 {
        if r == t.clusters {
            return 0;
        }
        let mut best = go(t, r + 1, used); // cluster r unmatched
        for c in 0..t.classes {
            if !used[c] {
                used[c] = true;
                best = best.max(t.count(r, c) + go(t, r + 1, used));
                used[c] = false;
            }
        }
        best
    }
    go(t, 0, &mut vec![false; t.classes])
}

fn sizes(v: &[u32]) -> Vec<u64> {
    let mut s = vec![0u64; v.iter().copied().max().map_or(0, |m| m as usize + 1)];
    for &x in v {
        s[x as usize] += 1;
    }
    s.retain(|&c| c > 0);
    s
}

/// ARI by the Hubert-Arabie formula on pair counts `C(m, 2)` (independent of the library's
/// pair-confusion arithmetic); 1.0 when the denominator vanishes (scikit-learn's convention).
fn ari_reference(t: &Contingency) -> f64 {
    let c2 = |m: u64| (m as f64) * (m as f64 - 1.0) / 2.0;
    let index: f64 = t.counts.iter().map(|&m| c2(m)).sum();
    let a: f64 = t.cluster_sizes().iter().map(|&m| c2(m)).sum();
    let b: f64 = t.class_sizes().iter().map(|&m| c2(m)).sum();
    let pairs = c2(t.total());
    let expected = if pairs > 0.0 { a * b / pairs } else { 0.0 };
    let max = (a + b) / 2.0;
    if max == expected {
        1.0
    } else {
        (index - expected) / (max - expected)
    }
}

/// NMI (arithmetic mean, natural log) from its definition; scikit-learn's conventions: 1.0 when
/// both labellings are a single cluster, 0.0 when only one of them is.
fn nmi_reference(t: &Contingency) -> f64 {
    let n = t.total() as f64;
    let (a, b) = (t.cluster_sizes(), t.class_sizes());
    let h = |s: &[u64]| -> f64 {
        s.iter()
            .filter(|&&m| m > 0)
            .map(|&m| {
                let p = m as f64 / n;
                -p * p.ln()
            })
            .sum()
    };
    let (ka, kb) = (
        a.iter().filter(|&&m| m > 0).count(),
        b.iter().filter(|&&m| m > 0).count(),
    );
    if ka == 1 && kb == 1 {
        return 1.0;
    }
    if ka == 1 || kb == 1 {
        return 0.0;
    }
    let mut mi = 0.0;
    for (r, &ar) in a.iter().enumerate() {
        for (c, &bc) in b.iter().enumerate() {
            let m = t.count(r, c);
            if m > 0 {
                let p = m as f64 / n;
                mi += p * (m as f64 * n / (ar as f64 * bc as f64)).ln();
            }
        }
    }
    mi.max(0.0) / ((h(&a) + h(&b)) / 2.0)
}

proptest! {
    #![proptest_config(cases(32))]

    /// Values against independent references:
    /// - ACC is the best one-to-one cluster/class matching: equal to exhaustive search.
    /// - ARI equals the Hubert-Arabie pair-count formula; NMI its entropy definition.
    /// - Ranges: ACC in (0, 1] (some matched cell is non-empty, so ACC >= max cell / n, and it
    ///   is at most the best cell per class and per cluster summed); NMI in [0, 1]; ARI in
    ///   [-1/2, 1] (its minimum over all pairs of labellings is -1/2: Chacon & Rastrojo 2023,
    ///   "Minimum adjusted Rand index for two clusterings of a given size"; checked
    ///   exhaustively for n <= 3 here and by the library's own `negative_ari` test).
    #[test]
    fn metrics_match_references_and_ranges((a, l) in labelling()) {
        let n = a.len() as f64;
        let t = Contingency::new(&a, &l).unwrap();
        let s = metrics::scores(&a, &l).unwrap();

        prop_assert_eq!(s.acc, best_matching(&t) as f64 / n);
        let max_cell = *t.counts.iter().max().unwrap() as f64;
        let by_cluster: u64 = (0..t.clusters).map(|r| *t.row(r).iter().max().unwrap()).sum();
        let by_class: u64 = (0..t.classes).map(|c| (0..t.clusters).map(|r| t.count(r, c)).max().unwrap()).sum();
        prop_assert!(s.acc >= max_cell / n && s.acc > 0.0, "acc {} < max cell {}/{}", s.acc, max_cell, n);
        prop_assert!(s.acc <= by_cluster.min(by_class) as f64 / n && s.acc <= 1.0, "acc {} too large", s.acc);

        let (nmi_ref, ari_ref) = (nmi_reference(&t), ari_reference(&t));
        prop_assert!((s.nmi - nmi_ref).abs() <= 1e-9, "nmi {} vs reference {}", s.nmi, nmi_ref);
        prop_assert!((s.ari - ari_ref).abs() <= 1e-9 * (1.0 + ari_ref.abs()), "ari {} vs reference {}", s.ari, ari_ref);
        prop_assert!((-1e-12..=1.0 + 1e-12).contains(&s.nmi), "nmi {} out of [0, 1]", s.nmi);
        prop_assert!((-0.5 - 1e-12..=1.0 + 1e-12).contains(&s.ari), "ari {} out of [-1/2, 1]", s.ari);

        // The free functions agree with the one-table `scores`.
        prop_assert_eq!(metrics::accuracy(&a, &l).unwrap(), s.acc);
        prop_assert_eq!(metrics::nmi(&a, &l).unwrap(), s.nmi);
        prop_assert_eq!(metrics::ari(&a, &l).unwrap(), s.ari);
    }

    /// All three scores depend only on the partition of the points, not on the names of the
    /// clusters or classes, nor on the order of the points; and all three are symmetric in
    /// their two arguments (matching, MI with the arithmetic-mean normaliser, and the pair
    /// counts are symmetric). ACC and ARI are integer computations on the table, so they are
    /// equal exactly; NMI sums floats in a table-order-dependent order, so to 1e-12.
    #[test]
    fn metrics_are_invariant_under_relabelling_reordering_and_swap(
        (a, l) in labelling(),
        cmap in relabelling(),
        lmap in relabelling(),
        order_keys in vec(any::<u64>(), 200),
    ) {
        let s = metrics::scores(&a, &l).unwrap();
        let close = |x: metrics::Scores, what: &str| -> Result<(), TestCaseError> {
            prop_assert_eq!(x.acc, s.acc, "acc after {}", what);
            prop_assert_eq!(x.ari, s.ari, "ari after {}", what);
            prop_assert!((x.nmi - s.nmi).abs() <= 1e-12, "nmi after {}: {} vs {}", what, x.nmi, s.nmi);
            Ok(())
        };
        let a2: Vec<u32> = a.iter().map(|&v| cmap[v as usize]).collect();
        let l2: Vec<u32> = l.iter().map(|&v| lmap[v as usize]).collect();
        close(metrics::scores(&a2, &l).unwrap(), "renaming clusters")?;
        close(metrics::scores(&a, &l2).unwrap(), "renaming classes")?;
        close(metrics::scores(&a2, &l2).unwrap(), "renaming both")?;
        close(metrics::scores(&l, &a).unwrap(), "swapping the arguments")?;

        let mut idx: Vec<usize> = (0..a.len()).collect();
        idx.sort_by_key(|&i| order_keys[i]);
        let ap: Vec<u32> = idx.iter().map(|&i| a[i]).collect();
        let lp: Vec<u32> = idx.iter().map(|&i| l[i]).collect();
        // Same table, so bit-identical.
        prop_assert_eq!(metrics::scores(&ap, &lp).unwrap(), s);
    }

    /// Degenerate cases with known values:
    /// - a labelling against itself, or against any renaming of itself, scores 1 on all three;
    /// - a single cluster scores ACC = largest class / n exactly (only one cluster to match),
    ///   and NMI = ARI = 0 unless there is a single class too (then 1: identical partitions).
    #[test]
    fn metrics_degenerate_cases((_, l) in labelling(), lmap in relabelling(), id in 0u32..1000) {
        let n = l.len() as f64;
        let renamed: Vec<u32> = l.iter().map(|&v| lmap[v as usize]).collect();
        for other in [&l, &renamed] {
            let s = metrics::scores(other, &l).unwrap();
            prop_assert_eq!(s.acc, 1.0);
            prop_assert_eq!(s.ari, 1.0);
            prop_assert!((s.nmi - 1.0).abs() <= 1e-12, "nmi of identical partitions {}", s.nmi);
        }

        let one = vec![id; l.len()];
        let s = metrics::scores(&one, &l).unwrap();
        let classes = sizes(&l);
        let largest = *classes.iter().max().unwrap() as f64;
        prop_assert_eq!(s.acc, largest / n);
        let want = if classes.len() == 1 { 1.0 } else { 0.0 };
        prop_assert_eq!(s.nmi, want);
        prop_assert_eq!(s.ari, want);
    }

    /// Zero-shot accuracy is the fraction of rows whose first maximal similarity is the label
    /// (similarities on a coarse grid so ties, resolved to the first index, are common).
    #[test]
    fn zero_shot_is_first_argmax_accuracy(
        (n, k, sims, labels) in (1usize..100, 1usize..8).prop_flat_map(|(n, k)| {
            (Just(n), Just(k), vec((-3i8..=3).prop_map(|v| v as f32 * 0.5), n * k), vec(0..k as u32, n))
        })
    ) {
        let correct = sims
            .chunks_exact(k)
            .zip(&labels)
            .filter(|(row, l)| {
                let first_max = (0..k).find(|&j| row.iter().all(|&s| s <= row[j])).unwrap();
                first_max == **l as usize
            })
            .count();
        prop_assert_eq!(metrics::zero_shot_accuracy(&sims, n, k, &labels).unwrap(), correct as f64 / n as f64);
    }
}

// ---------------------------------------------------------------------------------------------
// 4. kmeans::fit: determinism and monotone inertia
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct FitCase {
    d: usize,
    centres: usize,
    per: usize,
    sigma: f64,
    data_seed: u64,
    k: usize,
    seed: u64,
    init: Init,
    cosine: bool,
    max_iter: usize,
    tol: f64,
}

fn fit_case() -> impl Strategy<Value = FitCase> {
    (
        (1usize..6, 1usize..5, 2usize..40, 0.05f64..3.0, any::<u64>()),
        (1usize..8, any::<u64>()),
        prop_oneof![
            Just(Init::KMeansPlusPlus),
            Just(Init::Random),
            Just(Init::KMeansParallel {
                oversampling: 2.0,
                rounds: 3
            }),
        ],
        any::<bool>(),
        1usize..30,
        prop_oneof![Just(0.0), Just(1e-4)],
    )
        .prop_map(
            |((d, centres, per, sigma, data_seed), (k, seed), init, cosine, max_iter, tol)| {
                FitCase {
                    d,
                    centres,
                    per,
                    sigma,
                    data_seed,
                    k: k.min(centres * per),
                    seed,
                    init,
                    cosine,
                    max_iter,
                    tol,
                }
            },
        )
}

/// `per` Gaussian points (sd `sigma`) around each of `centres` centres uniform in [-10, 10]^d.
fn blobs(d: usize, centres: usize, per: usize, sigma: f64, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let cs: Vec<f64> = (0..centres * d)
        .map(|_| r.uniform() * 20.0 - 10.0)
        .collect();
    let mut x = Vec::with_capacity(centres * per * d);
    for c in cs.chunks(d) {
        for _ in 0..per {
            x.extend(c.iter().map(|&v| (v + r.normal() * sigma) as f32));
        }
    }
    x
}

proptest! {
    #![proptest_config(cases(32))]

    /// With a fixed seed, `fit` is a deterministic function of its inputs. Lloyd iterations
    /// (with scikit-learn's relocation of empty clusters) never increase the inertia, so the
    /// final inertia is at most that of the initial centroids (the same init recomputed here
    /// with the same seed and the prepared scale), and the per-iteration inertias do not
    /// increase. The first recorded iteration's inertia is the initial centroids' inertia
    /// exactly (same kernel, exact fixed-point sum). The kernel's f32 rounding (about eps32
    /// times the squared norms per row) can make an exact tie or a tiny improvement look like
    /// a tiny increase, so comparisons allow `2e-6 * sum ||x||^2`.
    #[test]
    fn fit_is_deterministic_and_never_increases_inertia(case in fit_case()) {
        let FitCase { d, centres, per, sigma, data_seed, k, seed, init, cosine, max_iter, tol } = case;
        let metric = if cosine { Metric::Cosine } else { Metric::Euclidean };
        let x = blobs(d, centres, per, sigma, data_seed);
        let n = x.len() / d;
        let cfg = Config { k, metric, algorithm: Algorithm::Lloyd, init: init.clone(), max_iter, tol, seed, n_redo: 1 };

        let r1 = kmeans::fit(&x, d, &cfg, |_| {}).unwrap();
        let r2 = kmeans::fit(&x, d, &cfg, |_| {}).unwrap();
        prop_assert_eq!(&r1.centroids, &r2.centroids);
        prop_assert_eq!(&r1.assignment, &r2.assignment);
        prop_assert_eq!(r1.inertia, r2.inertia);
        prop_assert_eq!(r1.iterations, r2.iterations);
        prop_assert_eq!(r1.history.len(), r2.history.len());
        for (s1, s2) in r1.history.iter().zip(&r2.history) {
            prop_assert_eq!((s1.inertia, s1.relocated), (s2.inertia, s2.relocated));
            // Bit-exact too: `mean_variance` does not depend on scheduling (tested below).
            prop_assert_eq!(s1.shift.to_bits(), s2.shift.to_bits(), "shift {} vs {}", s1.shift, s2.shift);
        }

        let prep = Prepared::new(&x, d, metric).unwrap();
        let rows = prep.rows();
        let c0 = init::initial_centroids(&init, &rows, k, metric, prep.scale, seed).unwrap();
        let c0 = Centroids::new(c0, k, d).unwrap();
        let (_, ps0) = kernel::assign(&rows, &c0, metric, prep.scale).unwrap();
        let initial = ps0.inertia_value();
        let slack = 2e-6 * prep.sq_norms.iter().map(|&v| v as f64).sum::<f64>();

        prop_assert!(!r1.history.is_empty());
        prop_assert_eq!(r1.history[0].inertia, initial);
        for w in r1.history.windows(2) {
            prop_assert!(w[1].inertia <= w[0].inertia + slack,
                "iteration {}: inertia rose from {} to {}", w[1].iteration, w[0].inertia, w[1].inertia);
        }
        let last = r1.history.last().unwrap().inertia;
        prop_assert!(r1.inertia <= last + slack, "final inertia {} > last iteration's {}", r1.inertia, last);
        prop_assert!(r1.inertia <= initial + slack, "final inertia {} > initial {}", r1.inertia, initial);

        // Sizes agree with the assignment and cover every row.
        let mut counts = vec![0u64; k];
        for &j in &r1.assignment.clusters {
            counts[j as usize] += 1;
        }
        prop_assert_eq!(&r1.cluster_sizes, &counts);
        prop_assert_eq!(counts.iter().sum::<u64>(), n as u64);
        prop_assert!(r1.iterations >= 1 && r1.iterations <= max_iter);
        if tol == 0.0 {
            prop_assert_eq!(r1.iterations, max_iter);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. FixedScale
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(32))]

    /// For data with |v| <= max_abs and up to n rows:
    /// - no sum of n quantised values can overflow i64 (checked on the worst case, n copies of
    ///   +-max_abs, in i128), and the per-value integers stay below 2^51 (the range where the
    ///   MAGIC rounding trick is exact);
    /// - quantisation is round-to-nearest-even on the grid 2^-exponent (compared with f64
    ///   arithmetic), so dequantize(quantize(v)) is within half a quantum of v, and is exactly
    ///   v whenever v's f32 spacing is a multiple of the quantum;
    /// - the u128 inertia of n rows of dimension up to 65536 at the largest possible distance
    ///   (2 max_abs per coordinate) stays below 2^127.
    #[test]
    fn fixed_scale_never_overflows_and_round_trips(
        log_max in -6.0f64..6.0,
        n in 1u64..10_000_000,
        ts in vec(-1.0f32..=1.0, 1..64),
    ) {
        let max_abs = 10f64.powf(log_max) as f32;
        let s = FixedScale::for_data(max_abs, n).unwrap();
        let quantum = s.inverse();

        for worst in [max_abs, -max_abs] {
            let q = s.quantize(worst) as i128;
            prop_assert!(q.abs() < 1i128 << 51, "quantize({worst}) = {q} beyond 2^51");
            let total = q * n as i128;
            prop_assert!(total.abs() <= i64::MAX as i128,
                "{n} x quantize({worst}) = {total} overflows i64 (exponent {})", s.exponent);
        }

        for &t in ts.iter().chain(&[1.0f32, -1.0, 0.0]) {
            let v = max_abs * t; // |v| <= max_abs: rounding is monotone and max_abs * 1 is exact
            let q = s.quantize(v);
            prop_assert_eq!(q as f64, (v as f64 * s.factor()).round_ties_even(), "quantize({})", v);
            prop_assert!(q.unsigned_abs() <= s.quantize(max_abs).unsigned_abs());
            let back = s.dequantize(q);
            prop_assert!((back - v as f64).abs() <= 0.5 * quantum,
                "dequantize(quantize({v})) = {back}, quantum {quantum}");
            if v != 0.0 && v.is_normal() {
                let ulp = (v.abs().to_bits() >> 23) as i32 - 127 - 23; // log2 of v's f32 spacing
                if 2f64.powi(ulp) >= quantum {
                    prop_assert_eq!(back as f32, v);
                }
            }
        }

        let worst_row = 65536.0 * (2.0 * max_abs as f64).powi(2);
        let worst_inertia = n as f64 * inertia_units(worst_row, s);
        prop_assert!(worst_inertia < 2f64.powi(127), "inertia units {worst_inertia} for n = {n}");
    }
}

/// One row's inertia in the u128 units of [`PartialSums::inertia`].
fn inertia_units(sq_dist: f64, s: FixedScale) -> f64 {
    crate::fixed::quantize_inertia(sq_dist, s.inertia_factor()) as f64
}

/// `kmeans::mean_variance` divides the centroid shift and so feeds the `shift <= tol` test: it
/// must not depend on the thread count (it once summed through rayon's `fold`/`reduce`, whose
/// grouping varies with threads and work stealing).
#[test]
fn mean_variance_does_not_depend_on_threads() {
    let x: Vec<f32> = (0..1000).map(|i| i as f32 * 0.1).collect();
    let with = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| kmeans::mean_variance(&x, 1))
    };
    let one = with(1);
    for threads in [2, 3, 4, 8] {
        for _ in 0..20 {
            let v = with(threads);
            assert_eq!(
                v.to_bits(),
                one.to_bits(),
                "{threads} threads: {v:e}, 1 thread: {one:e}"
            );
        }
    }
}
