//! Embeddings from the last hidden states: pooling and L2 normalisation, on known vectors
//! and on hidden states from a run.

mod common;

use rkllm::embed::Pooling;
use rkllm::embed::{embedding, embedding_from_rows, l2_normalize};
use rkllm::mock::{hidden_value, MockModel};
use rkllm::{Error, Input};

fn length(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

fn assert_close(actual: &[f32], expected: &[f64]) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(a) - e).abs() < 1e-6,
            "dimension {i}: {a} != {e} ({actual:?})"
        );
    }
}

#[test]
fn mean_pooling_is_the_default() {
    assert_eq!(Pooling::default(), Pooling::Mean);
}

#[test]
fn known_rows_give_known_embeddings() {
    // Two tokens of size 4.
    let rows = [1.0, 2.0, 0.0, -4.0, 3.0, 2.0, 4.0, 0.0];
    assert_eq!(Pooling::Mean.pool(&rows, 4).unwrap(), [2.0, 2.0, 2.0, -2.0]);
    assert_eq!(
        Pooling::LastToken.pool(&rows, 4).unwrap(),
        [3.0, 2.0, 4.0, 0.0]
    );
    // (2, 2, 2, -2) has length 4; (3, 2, 4, 0) has length sqrt(29).
    let mean = embedding_from_rows(&rows, 4, Pooling::Mean).unwrap();
    assert_close(&mean, &[0.5, 0.5, 0.5, -0.5]);
    let last = embedding_from_rows(&rows, 4, Pooling::LastToken).unwrap();
    let n = 29f64.sqrt();
    assert_close(&last, &[3.0 / n, 2.0 / n, 4.0 / n, 0.0]);
}

#[test]
fn l2_normalisation_returns_the_length_and_leaves_zero_alone() {
    let mut v = [0.0, -5.0, 12.0];
    assert_eq!(l2_normalize(&mut v), 13.0);
    assert_close(&v, &[0.0, -5.0 / 13.0, 12.0 / 13.0]);
    // Normalising twice changes nothing.
    let once = v;
    assert!((l2_normalize(&mut v) - 1.0).abs() < 1e-6);
    assert_close(&v, &once.map(f64::from));

    let mut zero = [0.0f32; 8];
    assert_eq!(l2_normalize(&mut zero), 0.0);
    assert!(zero.iter().all(|&x| x == 0.0));
    let mut empty: [f32; 0] = [];
    assert_eq!(l2_normalize(&mut empty), 0.0);
}

#[test]
fn results_are_never_nan() {
    // Rows that cancel, huge rows, tiny rows: every output is finite.
    let cases: [(&[f32], usize); 4] = [
        (&[1.0, -1.0, -1.0, 1.0], 2),
        (&[f32::MAX, f32::MAX, f32::MAX, f32::MAX], 2),
        (&[f32::MIN, f32::MAX], 1),
        (&[1e-45, 0.0, 1e-45, 0.0], 2),
    ];
    for (rows, size) in cases {
        for pooling in [Pooling::Mean, Pooling::LastToken] {
            let v = embedding_from_rows(rows, size, pooling).unwrap();
            assert!(
                v.iter().all(|x| x.is_finite()),
                "{rows:?} {pooling:?}: {v:?}"
            );
            let len = length(&v);
            assert!(
                len == 0.0 || (len - 1.0).abs() < 1e-5,
                "{rows:?} {pooling:?}: length {len}"
            );
        }
    }
    // Non-finite input is refused, naming where.
    let err = embedding_from_rows(&[0.0, 1.0, f32::NAN, 2.0], 2, Pooling::Mean).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteHiddenState {
                token: 1,
                dimension: 0
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("token 1, dimension 0"), "{err}");
}

#[test]
fn bad_shapes_are_refused() {
    assert!(matches!(
        embedding_from_rows(&[], 4, Pooling::Mean),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        embedding_from_rows(&[1.0, 2.0, 3.0], 2, Pooling::LastToken),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        embedding_from_rows(&[1.0], 0, Pooling::Mean),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn hidden_states_from_a_run_pool_as_computed_by_hand() {
    let dim = 6;
    let model = common::load(&MockModel::new().embed_dim(dim));
    let mut session = model.session().unwrap();
    // BOS and two byte-fallback tokens (byte b is id 217 + b in the mock's vocabulary).
    let ids = [2, 217 + 0x41, 217 + 0x7a];
    let states = session.hidden_states(Input::tokens(ids.to_vec())).unwrap();
    assert_eq!((states.num_tokens(), states.embd_size()), (3, dim));

    // The mock's rows: hidden_value(id, d, dim).
    let mean: Vec<f64> = (0..dim)
        .map(|d| {
            ids.iter()
                .map(|&id| f64::from(hidden_value(id, d, dim)))
                .sum::<f64>()
                / 3.0
        })
        .collect();
    let mean_len = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
    let expected: Vec<f64> = mean.iter().map(|x| x / mean_len).collect();
    assert_close(&embedding(&states, Pooling::Mean).unwrap(), &expected);

    let last: Vec<f64> = (0..dim)
        .map(|d| f64::from(hidden_value(ids[2], d, dim)))
        .collect();
    let last_len = last.iter().map(|x| x * x).sum::<f64>().sqrt();
    let expected: Vec<f64> = last.iter().map(|x| x / last_len).collect();
    assert_close(&embedding(&states, Pooling::LastToken).unwrap(), &expected);
}

#[test]
fn embedding_input_whose_rows_cancel_gives_the_zero_vector() {
    // An embedding row's hidden state is the row itself in the mock.
    let dim = 4;
    let model = common::load(&MockModel::new().embed_dim(dim));
    let mut session = model.session().unwrap();
    let rows = vec![1.0, -2.0, 3.0, 0.5, -1.0, 2.0, -3.0, -0.5];
    let states = session.hidden_states(Input::embeddings(rows, 2)).unwrap();
    let v = embedding(&states, Pooling::Mean).unwrap();
    assert_eq!(v, [0.0; 4]);
}

#[test]
fn the_same_text_embeds_the_same_and_texts_differ() {
    let model = common::load(&MockModel::new().embed_dim(16));
    let mut session = model.session().unwrap();
    let mut embed =
        |text: &str| embedding(&session.hidden_states(text).unwrap(), Pooling::Mean).unwrap();
    let a1 = embed("The cat sat on the mat.");
    let a2 = embed("The cat sat on the mat.");
    let b = embed("Quarterly revenue grew by four percent.");
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    let dot: f32 = a1.iter().zip(&a1).map(|(x, y)| x * y).sum();
    assert!((dot - 1.0).abs() < 1e-5, "unit length: {dot}");
}
