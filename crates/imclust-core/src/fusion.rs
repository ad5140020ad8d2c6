//! Text seeds and the fusion of several models' embeddings (design: "Text seeds and fusion").
//!
//! - A class seed is `normalize(mean over templates t of normalize(text(t.format(c))))`
//!   ([`class_seed`], [`class_seeds`]).
//! - Fusion: each model's rows are L2-normalised, scaled by the model's weight and concatenated
//!   ([`fuse_rows`]).
//! - Text seeds in the fused space ([`fused_seeds`]): the dual-encoder part of a seed is the text
//!   seed itself; the image-only part comes from a zero-shot pass: every image goes to its
//!   nearest text seed by cosine on the dual-encoder embeddings ([`zero_shot_assign`]), and the
//!   image-only part of class c is the mean of the (unit-normalised) image-only embeddings of
//!   the images assigned to c ([`pseudo_class_means`]).
//!
//! All matrices are row-major `f32` slices. Shapes are fixed by the caller's code, not by data,
//! so a mismatch is a bug: the functions panic with a message naming the argument.

use rayon::prelude::*;

use crate::linalg;

/// `v / ||v||` in f64; a zero vector stays zero.
fn unit_f64(v: &[f32]) -> Vec<f64> {
    let norm = linalg::sq_norm(v).sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|&x| x as f64 * inv).collect()
}

/// `v / ||v||` rounded to f32; a zero vector stays zero.
fn unit_f32(v: &[f64]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    v.iter().map(|&x| (x * inv) as f32).collect()
}

/// The seed of one class from the text embeddings of its prompts (`n_templates x d`):
/// `normalize(mean_t normalize(e_t))`, a unit vector (zero if the mean is zero).
///
/// # Panics
/// If `text_embeddings` is not `n_templates x d` or `n_templates` is 0.
pub fn class_seed(text_embeddings: &[f32], n_templates: usize, d: usize) -> Vec<f32> {
    assert!(n_templates > 0, "class_seed: no templates");
    assert_eq!(
        text_embeddings.len(),
        n_templates * d,
        "class_seed: {} values is not {n_templates} templates x {d}",
        text_embeddings.len()
    );
    let mut mean = vec![0.0f64; d];
    for e in text_embeddings.chunks_exact(d.max(1)).take(n_templates) {
        for (m, u) in mean.iter_mut().zip(unit_f64(e)) {
            *m += u;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n_templates as f64);
    unit_f32(&mean)
}

/// The seeds of `n_classes` classes (`n_classes x d`) from class-major text embeddings
/// (`n_classes x n_templates x d`: all templates of class 0, then of class 1, ...).
///
/// # Panics
/// If `all` is not `n_classes x n_templates x d` or `n_templates` is 0.
pub fn class_seeds(all: &[f32], n_classes: usize, n_templates: usize, d: usize) -> Vec<f32> {
    assert!(n_templates > 0, "class_seeds: no templates");
    assert_eq!(
        all.len(),
        n_classes * n_templates * d,
        "class_seeds: {} values is not {n_classes} classes x {n_templates} templates x {d}",
        all.len()
    );
    if d == 0 {
        return Vec::new();
    }
    all.chunks_exact(n_templates * d).flat_map(|c| class_seed(c, n_templates, d)).collect()
}

/// One model's block of a fused embedding: its dimension and its weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Part {
    pub dim: usize,
    pub weight: f32,
}

/// Fuses per-model embeddings of the same `n` rows: each part (`n x part.dim`) is normalised
/// row by row to unit L2 norm (zero rows stay zero), multiplied by its weight, and the parts are
/// concatenated in the order given. The result is `n x sum(dim)`.
///
/// # Panics
/// If a part's slice is not `n x dim`, or a weight is negative or not finite.
pub fn fuse_rows(parts: &[(&[f32], Part)], n: usize) -> Vec<f32> {
    for (i, (x, p)) in parts.iter().enumerate() {
        assert_eq!(x.len(), n * p.dim, "fuse_rows: part {i} has {} values, not {n} rows x {}", x.len(), p.dim);
        assert!(p.weight.is_finite() && p.weight >= 0.0, "fuse_rows: part {i} has weight {}", p.weight);
    }
    let total: usize = parts.iter().map(|(_, p)| p.dim).sum();
    let mut out = vec![0.0f32; n * total];
    if total == 0 {
        return out;
    }
    out.par_chunks_mut(total).enumerate().for_each(|(i, row)| {
        let mut at = 0;
        for (x, p) in parts {
            let src = &x[i * p.dim..(i + 1) * p.dim];
            let norm = linalg::sq_norm(src).sqrt();
            let scale = if norm > 0.0 { p.weight as f64 / norm } else { 0.0 };
            for (o, &v) in row[at..at + p.dim].iter_mut().zip(src) {
                *o = (v as f64 * scale) as f32;
            }
            at += p.dim;
        }
    });
    out
}

/// Zero-shot classification: for each of the `n` rows of `image_dual` (`n x d`), the index of
/// the seed (`seeds`, `k x d`) with the highest cosine similarity; ties go to the lower index.
/// Rows need not be normalised (a row's norm does not change its ranking); a zero seed has
/// cosine 0 with every row; a row with a NaN goes to seed 0.
///
/// The dot products come from the same blocked GEMM as the assignment kernel, in blocks of a
/// size that depends only on `k`, so a row's result does not depend on where it sits.
///
/// # Panics
/// If the slices are not `n x d` and `k x d`, or `k` is 0.
pub fn zero_shot_assign(image_dual: &[f32], seeds: &[f32], n: usize, k: usize, d: usize) -> Vec<u32> {
    assert!(k > 0, "zero_shot_assign: no seeds");
    assert!(k <= u32::MAX as usize, "zero_shot_assign: {k} seeds do not fit u32 indices");
    assert_eq!(image_dual.len(), n * d, "zero_shot_assign: images have {} values, not {n} x {d}", image_dual.len());
    assert_eq!(seeds.len(), k * d, "zero_shot_assign: seeds have {} values, not {k} x {d}", seeds.len());
    let mut out = vec![0u32; n];
    if n == 0 || d == 0 {
        return out;
    }
    let mut unit_seeds = seeds.to_vec();
    linalg::normalize_rows(&mut unit_seeds, d);
    let block = linalg::block_rows(k);
    out.par_chunks_mut(block).zip(image_dual.par_chunks(block * d)).for_each(|(o, x)| {
        let rows = o.len();
        let mut dots = vec![0.0f32; block * k];
        linalg::with_padded(x, rows, block, d, |xp| linalg::dot_block(xp, block, d, &unit_seeds, k, &mut dots));
        for (r, best_j) in o.iter_mut().enumerate() {
            let mut best = f32::NEG_INFINITY;
            for (j, &s) in dots[r * k..(r + 1) * k].iter().enumerate() {
                if s > best {
                    best = s;
                    *best_j = j as u32;
                }
            }
        }
    });
    out
}

/// Per pseudo-class means of the image-only embeddings (`image_only`, `n x d`): row `c` of the
/// result (`k x d`) is the mean of the unit-normalised rows `i` with `assign[i] == c` (zeros
/// when there are none); the second result counts those rows per class. Each class sums its
/// rows in row order in f64, so the result does not depend on the thread count.
///
/// # Panics
/// If `image_only` is not `n x d`, `assign` does not have `n` entries or one is `>= k`.
pub fn pseudo_class_means(image_only: &[f32], assign: &[u32], n: usize, k: usize, d: usize) -> (Vec<f32>, Vec<u64>) {
    assert_eq!(image_only.len(), n * d, "pseudo_class_means: {} values is not {n} x {d}", image_only.len());
    assert_eq!(assign.len(), n, "pseudo_class_means: {} assignments for {n} rows", assign.len());
    let mut counts = vec![0u64; k];
    for (i, &c) in assign.iter().enumerate() {
        assert!((c as usize) < k, "pseudo_class_means: row {i} is assigned to class {c}, but k = {k}");
        counts[c as usize] += 1;
    }
    // Rows grouped by class, in row order (a counting sort).
    let mut start: Vec<usize> = Vec::with_capacity(k + 1);
    start.push(0);
    for &c in &counts {
        start.push(start.last().unwrap() + c as usize);
    }
    let mut next = start[..k].to_vec();
    let mut order = vec![0usize; n];
    for (i, &c) in assign.iter().enumerate() {
        order[next[c as usize]] = i;
        next[c as usize] += 1;
    }
    let means: Vec<f32> = (0..k)
        .into_par_iter()
        .flat_map_iter(|c| {
            let rows = &order[start[c]..start[c + 1]];
            let mut sum = vec![0.0f64; d];
            for &i in rows {
                for (s, u) in sum.iter_mut().zip(unit_f64(&image_only[i * d..(i + 1) * d])) {
                    *s += u;
                }
            }
            let inv = if rows.is_empty() { 0.0 } else { 1.0 / rows.len() as f64 };
            sum.into_iter().map(move |s| (s * inv) as f32)
        })
        .collect();
    (means, counts)
}

/// Text seeds carried into the fused space `[dual | image-only]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FusedSeeds {
    /// `k x dim`: row c is `concat(dual.weight * normalize(seed_c), image.weight *
    /// normalize(mean_c))`, where `mean_c` is the mean image-only embedding of pseudo-class c.
    pub seeds: Vec<f32>,
    /// `dual.dim + image.dim`.
    pub dim: usize,
    /// The zero-shot assignment of every image (`n`), itself a clustering baseline.
    pub assignments: Vec<u32>,
    /// Images per pseudo-class (`k`). A class with 0 images has a zero image-only part.
    pub counts: Vec<u64>,
}

/// Seeds for k-means on `fuse_rows(&[(image_dual, dual), (image_only, image)], n)` from the
/// text seeds of the dual encoder (`seeds_dual`, `k x dual.dim`, e.g. from [`class_seeds`]):
/// images are assigned to their nearest text seed on the dual-encoder embeddings
/// (`image_dual`, `n x dual.dim`, [`zero_shot_assign`]), and the image-only part of each seed
/// is the normalised mean of its pseudo-class's image-only embeddings (`image_only`,
/// `n x image.dim`, [`pseudo_class_means`]), weighted like in [`fuse_rows`].
///
/// # Panics
/// On shape mismatches, `k` = 0 or invalid weights, as the functions above.
pub fn fused_seeds(
    image_dual: &[f32],
    seeds_dual: &[f32],
    dual: Part,
    image_only: &[f32],
    image: Part,
    n: usize,
    k: usize,
) -> FusedSeeds {
    let assignments = zero_shot_assign(image_dual, seeds_dual, n, k, dual.dim);
    let (means, counts) = pseudo_class_means(image_only, &assignments, n, k, image.dim);
    let seeds = fuse_rows(&[(seeds_dual, dual), (&means, image)], k);
    FusedSeeds { seeds, dim: dual.dim + image.dim, assignments, counts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    const S: f32 = std::f32::consts::FRAC_1_SQRT_2;

    #[test]
    fn fusion_class_seed_is_normalised_mean_of_normalised_templates() {
        // [3,4] -> [0.6,0.8]; [0,2] -> [0,1]; mean [0.3,0.9]; normalised [1,3]/sqrt(10).
        let seed = class_seed(&[3.0, 4.0, 0.0, 2.0], 2, 2);
        let r10 = 10f32.sqrt();
        close(&seed, &[1.0 / r10, 3.0 / r10]);
        // Template norms do not matter, only directions.
        close(&class_seed(&[30.0, 40.0, 0.0, 0.002], 2, 2), &seed);
        // One template: its direction. Opposite templates: zero, not NaN.
        close(&class_seed(&[0.0, -5.0], 1, 2), &[0.0, -1.0]);
        close(&class_seed(&[1.0, 0.0, -2.0, 0.0], 2, 2), &[0.0, 0.0]);
    }

    #[test]
    fn fusion_class_seeds_are_class_major() {
        // Class 0: [3,4], [0,2]; class 1: [1,0], [0,1] -> [1,1]/sqrt2.
        let all = [3.0, 4.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0];
        let seeds = class_seeds(&all, 2, 2, 2);
        let r10 = 10f32.sqrt();
        close(&seeds, &[1.0 / r10, 3.0 / r10, S, S]);
        assert!(class_seeds(&[], 0, 3, 2).is_empty());
    }

    #[test]
    #[should_panic(expected = "not 2 classes x 2 templates x 2")]
    fn fusion_class_seeds_check_the_shape() {
        class_seeds(&[1.0; 6], 2, 2, 2);
    }

    #[test]
    fn fusion_fuse_rows_normalises_weights_and_concatenates() {
        let a = [3.0, 4.0, 0.0, 0.0]; // 2 x 2
        let b = [-2.0, 5.0]; // 2 x 1
        let fused = fuse_rows(&[(&a, Part { dim: 2, weight: 1.0 }), (&b, Part { dim: 1, weight: 0.5 })], 2);
        close(&fused, &[0.6, 0.8, -0.5, 0.0, 0.0, 0.5]);
        // Order of parts is the order of the blocks.
        let fused = fuse_rows(&[(&b, Part { dim: 1, weight: 2.0 }), (&a, Part { dim: 2, weight: 1.0 })], 2);
        close(&fused, &[-2.0, 0.6, 0.8, 2.0, 0.0, 0.0]);
        assert!(fuse_rows(&[], 3).is_empty());
    }

    #[test]
    #[should_panic(expected = "part 1 has 3 values, not 2 rows x 1")]
    fn fusion_fuse_rows_checks_shapes() {
        fuse_rows(&[(&[1.0, 2.0], Part { dim: 1, weight: 1.0 }), (&[1.0, 2.0, 3.0], Part { dim: 1, weight: 1.0 })], 2);
    }

    #[test]
    fn fusion_zero_shot_assign_by_cosine_ties_to_lower_index() {
        // Seeds: x axis (norm 2), y axis (norm 3), the diagonal.
        let seeds = [2.0, 0.0, 0.0, 3.0, -1.0, -1.0];
        // [2,1]: cos 0.894 / 0.447 / -0.949 -> 0. [1,3] -> 1. [-1,-0.5] -> 2. [1,1]: tie 0/1 -> 0.
        // [0,0]: all 0 -> 0.
        let x = [2.0, 1.0, 1.0, 3.0, -1.0, -0.5, 1.0, 1.0, 0.0, 0.0];
        assert_eq!(zero_shot_assign(&x, &seeds, 5, 3, 2), [0, 1, 2, 0, 0]);
        // The norm of a seed does not matter: [0,1] and [0,7] tie -> the lower index.
        assert_eq!(zero_shot_assign(&[0.0, 5.0], &[1.0, 0.0, 0.0, 7.0, 0.0, 1.0], 1, 3, 2), [1]);
        assert!(zero_shot_assign(&[], &seeds, 0, 3, 2).is_empty());
    }

    #[test]
    fn fusion_zero_shot_assign_matches_brute_force_across_blocks() {
        let mut rng = Rng::new(7);
        for (n, k, d) in [(1000, 5, 7), (1100, 40, 9), (600, 300, 3)] {
            let x: Vec<f32> = (0..n * d).map(|_| rng.normal() as f32).collect();
            let c: Vec<f32> = (0..k * d).map(|_| rng.normal() as f32).collect();
            let got = zero_shot_assign(&x, &c, n, k, d);
            for i in 0..n {
                let xi = &x[i * d..(i + 1) * d];
                let cos = |j: usize| {
                    let cj = &c[j * d..(j + 1) * d];
                    let dot: f64 = xi.iter().zip(cj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    dot / linalg::sq_norm(cj).sqrt()
                };
                let best = (0..k).map(cos).fold(f64::NEG_INFINITY, f64::max);
                // Equal up to rounding (a near-tie may go either way).
                assert!(cos(got[i] as usize) >= best - 1e-5, "row {i}: got {} with {}, best {best}", got[i], cos(got[i] as usize));
            }
        }
    }

    #[test]
    fn fusion_pseudo_class_means_average_unit_rows() {
        // Rows [3,4] -> [0.6,0.8], [0,2] -> [0,1], [5,0] -> [1,0].
        let x = [3.0, 4.0, 0.0, 2.0, 5.0, 0.0];
        let (means, counts) = pseudo_class_means(&x, &[1, 1, 0], 3, 3, 2);
        close(&means, &[1.0, 0.0, 0.3, 0.9, 0.0, 0.0]);
        assert_eq!(counts, [1, 2, 0]);
    }

    #[test]
    #[should_panic(expected = "row 1 is assigned to class 2, but k = 2")]
    fn fusion_pseudo_class_means_check_assignments() {
        pseudo_class_means(&[1.0, 2.0], &[0, 2], 2, 2, 1);
    }

    #[test]
    fn fusion_fused_seeds_carry_text_seeds_into_the_fused_space() {
        // Dual encoder: seeds x axis, y axis, -diagonal; images -> 0, 1, 1.
        let image_dual = [1.0, 0.1, 0.2, 1.0, 0.1, 1.0];
        let seeds_dual = [2.0, 0.0, 0.0, 3.0, -1.0, -1.0];
        // Image-only rows: [0.6,0.8], [0,1], [1,0] once normalised.
        let image_only = [3.0, 4.0, 0.0, 2.0, 5.0, 0.0];
        let dual = Part { dim: 2, weight: 1.0 };
        let image = Part { dim: 2, weight: 0.5 };
        let f = fused_seeds(&image_dual, &seeds_dual, dual, &image_only, image, 3, 3);
        assert_eq!(f.assignments, [0, 1, 1]);
        assert_eq!(f.counts, [1, 2, 0]);
        assert_eq!(f.dim, 4);
        // Class 0: [1,0 | 0.5*[0.6,0.8]]; class 1: [0,1 | 0.5*normalize([0.5,0.5])];
        // class 2 (no images): [-S,-S | 0,0].
        close(
            &f.seeds,
            &[1.0, 0.0, 0.3, 0.4, 0.0, 1.0, 0.5 * S, 0.5 * S, -S, -S, 0.0, 0.0],
        );
        // The fused image rows live in the same space: image 0 is closest to seed 0.
        let rows = fuse_rows(&[(&image_dual, dual), (&image_only, image)], 3);
        assert_eq!(zero_shot_assign(&rows, &f.seeds, 3, 3, 4)[0], 0);
    }
}
