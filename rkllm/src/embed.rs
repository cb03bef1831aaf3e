//! Text embeddings from a decoder's last hidden states: pooling and L2 normalisation.
//!
//! RKLLM 1.1.1 has no embedding mode, but a run in hidden-state mode
//! ([`Session::hidden_states`](crate::Session::hidden_states)) returns the last hidden layer:
//! one row of `embd_size` floats per prompt token. This module turns those rows into one
//! vector:
//!
//! 1. **Pooling** ([`Pooling`]): the mean of all rows (the default), or the last row.
//! 2. **L2 normalisation** ([`l2_normalize`]): the vector is scaled to length 1, so the dot
//!    product of two embeddings is their cosine similarity.
//!
//! Why mean pooling is the default: a chat model such as Gemma 2 has no trained embedding
//! head, and the mean of the last hidden states over all tokens is the common choice for
//! using such a decoder as an embedder. Every token contributes, so it is less sensitive to
//! how the text happens to end than the last token's state, which in a causal model is the
//! only row that has seen the whole text but is tuned to predict the next token, not to
//! summarise. Both are **heuristics**: neither is trained for retrieval, so compare
//! embeddings only with embeddings from the same model and pooling, and measure retrieval
//! quality on your own data before relying on it. The first token's state (BOS) often has a
//! much larger norm than the rest and weighs on the mean; a prompt without a chat template
//! keeps the text itself dominant.
//!
//! All arithmetic is done in `f64` and rounded once to `f32`, so finite input never
//! overflows to infinity, and the result never holds NaN: non-finite input is refused with
//! [`Error::NonFiniteHiddenState`], and a zero vector stays zero instead of being divided
//! by its zero length.
//!
//! ```
//! use rkllm::embed::{embedding_from_rows, Pooling};
//! # fn main() -> rkllm::Result<()> {
//! // Two tokens with a hidden size of 2.
//! let rows = [1.0, 2.0, 3.0, 2.0];
//! let v = embedding_from_rows(&rows, 2, Pooling::Mean)?; // mean (2, 2), length 1
//! assert!((v[0] - 0.70710677).abs() < 1e-6 && (v[1] - 0.70710677).abs() < 1e-6);
//! let last = embedding_from_rows(&rows, 2, Pooling::LastToken)?; // (3, 2) / sqrt(13)
//! assert!((last[0] - 3.0 / 13f32.sqrt()).abs() < 1e-6);
//! # Ok(()) }
//! ```

use crate::error::{Error, Result};
use crate::HiddenStates;

/// How the rows of the last hidden layer become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Pooling {
    /// The mean over all tokens, dimension by dimension. The default: see the
    /// [module docs](self) for why, and why it is a heuristic.
    #[default]
    Mean,
    /// The last token's row: in a causal model the only one that has attended to the whole
    /// text.
    LastToken,
}

impl Pooling {
    /// The pooled vector of `rows` (`n_tokens × embd_size` floats, row-major), not
    /// normalised.
    ///
    /// ```
    /// use rkllm::embed::Pooling;
    /// let mean = Pooling::Mean.pool(&[1.0, 2.0, 3.0, 6.0], 2).unwrap();
    /// assert_eq!(mean, [2.0, 4.0]);
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `embd_size` is 0 or `rows` is empty or not a whole
    /// number of rows; [`Error::NonFiniteHiddenState`] naming the first NaN or infinity.
    pub fn pool(self, rows: &[f32], embd_size: usize) -> Result<Vec<f32>> {
        check_rows(rows, embd_size)?;
        let n_tokens = rows.len() / embd_size;
        Ok(match self {
            Pooling::Mean => {
                let mut sums = vec![0f64; embd_size];
                for row in rows.chunks_exact(embd_size) {
                    for (sum, &x) in sums.iter_mut().zip(row) {
                        *sum += f64::from(x);
                    }
                }
                // A mean of finite f32 values lies within their range, so the cast is exact
                // up to rounding and never overflows.
                sums.iter().map(|s| (s / n_tokens as f64) as f32).collect()
            }
            Pooling::LastToken => rows[rows.len() - embd_size..].to_vec(),
        })
    }
}

/// Scales `v` to length 1 in place and returns its length before scaling.
///
/// A zero vector (length 0) is left unchanged, so the result is never NaN for finite
/// input; a vector holding NaN or infinity is left unchanged too, and its length returned
/// as computed (NaN or infinity).
///
/// ```
/// use rkllm::embed::l2_normalize;
/// let mut v = [3.0, 4.0];
/// assert_eq!(l2_normalize(&mut v), 5.0);
/// assert_eq!(v, [0.6, 0.8]);
/// let mut zero = [0.0, 0.0];
/// assert_eq!(l2_normalize(&mut zero), 0.0);
/// assert_eq!(zero, [0.0, 0.0]);
/// ```
pub fn l2_normalize(v: &mut [f32]) -> f64 {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in v.iter_mut() {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
    norm
}

/// The embedding of `rows` (`n_tokens × embd_size` floats, row-major): pooled with
/// `pooling`, then L2-normalised. A text whose pooled vector is zero gets the zero vector.
///
/// # Errors
/// As [`Pooling::pool`].
pub fn embedding_from_rows(rows: &[f32], embd_size: usize, pooling: Pooling) -> Result<Vec<f32>> {
    let mut v = pooling.pool(rows, embd_size)?;
    l2_normalize(&mut v);
    Ok(v)
}

/// The embedding of a run's hidden states: pooled with `pooling`, then L2-normalised.
///
/// ```
/// # #[cfg(feature = "mock")] fn main() -> rkllm::Result<()> {
/// use rkllm::{embed, embed::Pooling, mock::MockModel, Model, Runtime};
/// let path = MockModel::new().write_temp_file()?;
/// let model = Model::builder(&path).runtime(Runtime::mock()).build()?;
/// let mut session = model.session()?;
/// let states = session.hidden_states("A sentence to embed.")?;
/// let v = embed::embedding(&states, Pooling::Mean)?;
/// assert_eq!(v.len(), states.embd_size());
/// let length: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
/// assert!((length - 1.0).abs() < 1e-5);
/// # Ok(()) }
/// # #[cfg(not(feature = "mock"))] fn main() {}
/// ```
///
/// # Errors
/// As [`Pooling::pool`]; states with no rows are [`Error::NoHiddenStates`].
pub fn embedding(states: &HiddenStates, pooling: Pooling) -> Result<Vec<f32>> {
    if states.num_tokens() == 0 || states.data().is_empty() {
        return Err(Error::NoHiddenStates);
    }
    embedding_from_rows(states.data(), states.embd_size(), pooling)
}

/// Refuses shapes that are not a whole, non-empty number of rows, and non-finite values.
fn check_rows(rows: &[f32], embd_size: usize) -> Result<()> {
    if embd_size == 0 || rows.is_empty() {
        return Err(Error::InvalidInput(format!(
            "hidden states: no data ({} floats, rows of {embd_size})",
            rows.len()
        )));
    }
    if rows.len() % embd_size != 0 {
        return Err(Error::InvalidInput(format!(
            "hidden states: {} floats are not a whole number of rows of {embd_size}",
            rows.len()
        )));
    }
    match rows.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::NonFiniteHiddenState {
            token: i / embd_size,
            dimension: i % embd_size,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn mean_and_last_token_of_known_rows() {
        // Three tokens, hidden size 3.
        let rows = [1.0, 0.0, -3.0, 2.0, 4.0, 0.0, 3.0, 2.0, 6.0];
        assert_eq!(Pooling::Mean.pool(&rows, 3).unwrap(), [2.0, 2.0, 1.0]);
        assert_eq!(Pooling::LastToken.pool(&rows, 3).unwrap(), [3.0, 2.0, 6.0]);
        // (2, 2, 1) has length 3; (3, 2, 6) has length 7.
        let mean = embedding_from_rows(&rows, 3, Pooling::Mean).unwrap();
        assert!(close(&mean, &[2.0 / 3.0, 2.0 / 3.0, 1.0 / 3.0]), "{mean:?}");
        let last = embedding_from_rows(&rows, 3, Pooling::LastToken).unwrap();
        assert!(close(&last, &[3.0 / 7.0, 2.0 / 7.0, 6.0 / 7.0]), "{last:?}");
    }

    #[test]
    fn one_token_means_both_poolings_agree() {
        let row = [0.5, -1.5, 2.0, 0.25];
        assert_eq!(
            Pooling::Mean.pool(&row, 4).unwrap(),
            Pooling::LastToken.pool(&row, 4).unwrap()
        );
    }

    #[test]
    fn zero_vectors_stay_zero_and_never_nan() {
        // Rows that cancel out: the mean is exactly zero.
        let rows = [1.0, -2.0, -1.0, 2.0];
        let v = embedding_from_rows(&rows, 2, Pooling::Mean).unwrap();
        assert_eq!(v, [0.0, 0.0]);
        let mut zero = vec![0.0f32; 5];
        assert_eq!(l2_normalize(&mut zero), 0.0);
        assert_eq!(zero, [0.0; 5]);
    }

    #[test]
    fn extreme_finite_values_neither_overflow_nor_vanish() {
        let big = f32::MAX;
        let rows = [big, big, big, big];
        let mean = Pooling::Mean.pool(&rows, 2).unwrap();
        assert_eq!(mean, [big, big]);
        let v = embedding_from_rows(&rows, 2, Pooling::Mean).unwrap();
        assert!(close(&v, &[0.70710677, 0.70710677]), "{v:?}");
        // Tiny values whose squares underflow f32 still normalise.
        let tiny = f32::MIN_POSITIVE;
        let v = embedding_from_rows(&[tiny, 0.0], 2, Pooling::Mean).unwrap();
        assert_eq!(v, [1.0, 0.0]);
    }

    #[test]
    fn non_finite_values_are_refused_with_their_position() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let rows = [1.0, 2.0, 3.0, 4.0, bad, 6.0];
            for pooling in [Pooling::Mean, Pooling::LastToken] {
                match pooling.pool(&rows, 3) {
                    Err(Error::NonFiniteHiddenState { token, dimension }) => {
                        assert_eq!((token, dimension), (1, 1));
                    }
                    other => panic!("{bad} with {pooling:?}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_invalid_input() {
        for (rows, size) in [
            (&[][..], 3),
            (&[1.0, 2.0][..], 0),
            (&[1.0, 2.0, 3.0][..], 2),
        ] {
            assert!(
                matches!(Pooling::Mean.pool(rows, size), Err(Error::InvalidInput(_))),
                "{rows:?} / {size}"
            );
        }
    }

    #[test]
    fn normalising_a_vector_with_nan_leaves_it_unchanged() {
        let mut v = [f32::NAN, 1.0];
        assert!(l2_normalize(&mut v).is_nan());
        assert!(v[0].is_nan() && v[1] == 1.0);
    }
}
