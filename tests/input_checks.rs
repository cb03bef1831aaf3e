//! Checks a server can run on a request's input before it waits for the model: token ids
//! against the vocabulary, empty prompts.

mod common;

use rkllm::mock::MockModel;
use rkllm::{Error, ErrorKind, GenerateOptions, Input, Model, Runtime};

const GEMMA2_VOCAB: u32 = 256_000;

#[test]
fn token_ids_inside_the_vocabulary_pass() {
    for ids in [vec![0], vec![2, 106, 107, 1], vec![255_999]] {
        assert!(
            Input::tokens(ids.clone())
                .validate_vocab(GEMMA2_VOCAB)
                .is_ok(),
            "{ids:?}"
        );
    }
}

#[test]
fn token_ids_outside_the_vocabulary_are_refused_by_id_and_position() {
    for (ids, vocab, id, position) in [
        (vec![2, 256_000], GEMMA2_VOCAB, "256000", 1),
        (
            vec![2, 5, i32::MAX.unsigned_abs()],
            GEMMA2_VOCAB,
            "2147483647",
            2,
        ),
        (vec![u32::MAX, 3], GEMMA2_VOCAB, "4294967295", 0),
        (vec![4, 1 << 31], GEMMA2_VOCAB, "2147483648", 1),
        (vec![3, 7, 10], 10, "10", 2),
        (vec![0], 0, "0", 0),
    ] {
        let err = Input::tokens(ids.clone())
            .validate_vocab(vocab)
            .expect_err("refused");
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        let text = err.to_string();
        assert!(
            text.contains(&format!("id {id} at position {position}")),
            "{ids:?} / {vocab}: {text}"
        );
        assert!(text.contains(&format!("0..{vocab}")), "{text}");
    }
}

#[test]
fn the_first_bad_id_is_the_one_named() {
    let err = Input::tokens(vec![1, 300_000, u32::MAX])
        .validate_vocab(GEMMA2_VOCAB)
        .unwrap_err();
    assert!(err.to_string().contains("id 300000 at position 1"), "{err}");
}

#[test]
fn inputs_without_token_ids_pass_the_vocabulary_check() {
    for input in [
        Input::prompt("hello"),
        Input::embeddings(vec![0.5; 4], 2),
        Input::multimodal("<image>what?", vec![0.5; 4], 2),
    ] {
        assert!(input.validate_vocab(1).is_ok(), "{input:?}");
    }
}

#[test]
fn validate_refuses_what_a_run_would_refuse() {
    for good in [
        Input::prompt(" "),
        Input::tokens(vec![2]),
        Input::embeddings(vec![0.5; 6], 3),
    ] {
        assert!(good.validate().is_ok(), "{good:?}");
    }
    for bad in [
        Input::prompt(""),
        Input::tokens(Vec::<u32>::new()),
        Input::tokens(vec![2, 1 << 31]),
        Input::embeddings(vec![0.5; 5], 3),
        Input::multimodal("x", Vec::<f32>::new(), 0),
    ] {
        let err = bad.validate().unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err:?}");
    }
    assert!(matches!(
        Input::prompt("a\0").validate(),
        Err(Error::Nul {
            field: "prompt",
            position: 1
        })
    ));
}

#[test]
fn an_empty_text_prompt_never_reaches_the_runtime() {
    let path = MockModel::new().write_temp_file().unwrap();
    let model = Model::builder(&path)
        .runtime(Runtime::mock())
        .build()
        .unwrap();
    let mut session = model.session().unwrap();
    let err = session
        .complete("", &GenerateOptions::new())
        .expect_err("empty prompt refused");
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(rkllm::mock::runs_of_model(&path).is_empty());
    // The session is unharmed.
    assert!(session.complete("hi", &GenerateOptions::gemma()).is_ok());
    assert_eq!(rkllm::mock::runs_of_model(&path).len(), 1);
}
