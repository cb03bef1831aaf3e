//! The four input kinds with their checks, hidden states, and split UTF-8.

mod mock_support;

use std::ffi::CString;

use mock_support::*;
use rkllm::mock::{
    hidden_value, last_run_stats, BuiltinTokenizer, MockModel, BYTE_TOKEN_BASE, END_OF_TURN_ID,
};
use rkllm::settings::WaitingText;
use rkllm_sys::{
    RKLLMEmbedInput, RKLLMInferParam, RKLLMInput, RKLLMMultiModelInput, RKLLMTokenInput,
    RKLLM_INFER_GET_LAST_HIDDEN_LAYER, RKLLM_INPUT_EMBED, RKLLM_INPUT_MULTIMODAL,
    RKLLM_INPUT_PROMPT, RKLLM_INPUT_TOKEN, RKLLM_RUN_FINISH, RKLLM_RUN_GET_LAST_HIDDEN_LAYER,
    RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING,
};

const DIM: usize = 4;

fn token_input(ids: &mut [i32], n: usize) -> RKLLMInput {
    let mut input = RKLLMInput {
        input_type: RKLLM_INPUT_TOKEN,
        ..Default::default()
    };
    let ptr = if ids.is_empty() {
        std::ptr::null_mut()
    } else {
        ids.as_mut_ptr()
    };
    input.__bindgen_anon_1.token_input = RKLLMTokenInput {
        input_ids: ptr,
        n_tokens: n,
    };
    input
}

fn embed_input(data: *mut f32, n_tokens: usize) -> RKLLMInput {
    let mut input = RKLLMInput {
        input_type: RKLLM_INPUT_EMBED,
        ..Default::default()
    };
    input.__bindgen_anon_1.embed_input = RKLLMEmbedInput {
        embed: data,
        n_tokens,
    };
    input
}

fn multimodal_input(
    prompt: *mut libc::c_char,
    image: *mut f32,
    n_image_tokens: usize,
) -> RKLLMInput {
    let mut input = RKLLMInput {
        input_type: RKLLM_INPUT_MULTIMODAL,
        ..Default::default()
    };
    input.__bindgen_anon_1.multimodal_input = RKLLMMultiModelInput {
        prompt,
        image_embed: image,
        n_image_tokens,
    };
    input
}

fn run(h: &Handle, mut input: RKLLMInput, hidden: bool) -> (i32, Vec<Event>) {
    let mut infer = RKLLMInferParam::default();
    if hidden {
        infer.mode = RKLLM_INFER_GET_LAST_HIDDEN_LAYER;
    }
    let rec = Recorder::default();
    let rc = run_input(h, &mut input, &mut infer, &rec);
    (rc, rec.events())
}

#[test]
fn prompt_input_checks() {
    let h = open(MockModel::new());
    let mut input = RKLLMInput {
        input_type: RKLLM_INPUT_PROMPT,
        ..Default::default()
    };
    assert_eq!(run(&h, input, false).0, -1, "NULL prompt");
    let empty = CString::new("").unwrap();
    input.__bindgen_anon_1.prompt_input = empty.as_ptr();
    assert_eq!(run(&h, input, false).0, -1, "empty prompt");
    let ok = CString::new("hi").unwrap();
    input.__bindgen_anon_1.prompt_input = ok.as_ptr();
    assert_eq!(run(&h, input, false).0, 0);
}

#[test]
fn null_input_infer_and_unknown_kinds_fail() {
    let h = open(MockModel::new());
    let rec = Recorder::default();
    let prompt = CString::new("hi").unwrap();
    let mut input = prompt_input(&prompt);
    let mut infer = RKLLMInferParam::default();
    let ud = &rec as *const Recorder as *mut libc::c_void;
    // SAFETY: NULL input or infer pointers, which the mock must refuse.
    unsafe {
        assert_eq!((api().run)(h.raw, std::ptr::null_mut(), &mut infer, ud), -1);
        assert_eq!((api().run)(h.raw, &mut input, std::ptr::null_mut(), ud), -1);
    }
    input.input_type = 9;
    assert_eq!(run_input(&h, &mut input, &mut infer, &rec), -1);
    let mut input = prompt_input(&prompt);
    infer.mode = 7;
    assert_eq!(run_input(&h, &mut input, &mut infer, &rec), -1);
    assert!(rec.events().is_empty());
}

#[test]
fn token_input_checks_and_decoding() {
    let h = open(MockModel::new().echo());
    assert_eq!(run(&h, token_input(&mut [], 3), false).0, -1, "NULL ids");
    let mut one = [BuiltinTokenizer.encode("x")[0]];
    assert_eq!(
        run(&h, token_input(&mut one, 0), false).0,
        -1,
        "zero tokens"
    );
    let mut unknown = [5];
    assert_eq!(
        run(&h, token_input(&mut unknown, 1), false).0,
        -1,
        "id outside the vocabulary"
    );

    let prompt = "<bos><start_of_turn>user\nTokens, naïvely<end_of_turn>\n<start_of_turn>model\n";
    let mut ids = BuiltinTokenizer.encode(prompt);
    assert_eq!(ids[0], 2);
    let n = ids.len();
    let (rc, events) = run(&h, token_input(&mut ids, n), false);
    assert_eq!(rc, 0);
    assert_eq!(
        String::from_utf8(text_of(&events)).unwrap(),
        "Tokens, naïvely"
    );
    assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, n);
}

#[test]
fn embed_input_checks_and_length() {
    let h = open(MockModel::new().embed_dim(DIM));
    assert_eq!(
        run(&h, embed_input(std::ptr::null_mut(), 2), false).0,
        -1,
        "NULL embed"
    );
    let mut data: Vec<f32> = (0..3 * DIM).map(|i| i as f32 * 0.25).collect();
    assert_eq!(
        run(&h, embed_input(data.as_mut_ptr(), 0), false).0,
        -1,
        "zero tokens"
    );
    let (rc, events) = run(&h, embed_input(data.as_mut_ptr(), 3), false);
    assert_eq!(rc, 0);
    assert_eq!(count(&events, RKLLM_RUN_FINISH), 1);
    assert_eq!(last_run_stats(h.raw).unwrap().prompt_tokens, 3);
    // Hidden states of an embedding input are the embedding itself: all 3 × DIM floats
    // were read.
    let (rc, events) = run(&h, embed_input(data.as_mut_ptr(), 3), true);
    assert_eq!(rc, 0);
    let (values, embd, n) = events[0].hidden.clone().unwrap();
    assert_eq!((embd as usize, n), (DIM, 3));
    assert_eq!(values, data);
    // A model without embeddings refuses them.
    let h = open(MockModel::new().embed_dim(0));
    assert_eq!(run(&h, embed_input(data.as_mut_ptr(), 3), false).0, -1);
}

#[test]
fn multimodal_input_checks_and_length() {
    let h = open(MockModel::new().embed_dim(DIM).echo());
    let prompt = CString::new("describe").unwrap();
    let p = prompt.as_ptr() as *mut libc::c_char;
    let mut image: Vec<f32> = (0..2 * DIM).map(|i| -(i as f32)).collect();
    assert_eq!(
        run(
            &h,
            multimodal_input(std::ptr::null_mut(), image.as_mut_ptr(), 2),
            false
        )
        .0,
        -1
    );
    assert_eq!(
        run(&h, multimodal_input(p, std::ptr::null_mut(), 2), false).0,
        -1
    );
    assert_eq!(
        run(&h, multimodal_input(p, image.as_mut_ptr(), 0), false).0,
        -1
    );
    let (rc, events) = run(&h, multimodal_input(p, image.as_mut_ptr(), 2), false);
    assert_eq!(rc, 0);
    assert_eq!(text_of(&events), b"describe");
    let text_ids = BuiltinTokenizer.encode("describe");
    assert_eq!(
        last_run_stats(h.raw).unwrap().prompt_tokens,
        2 + text_ids.len()
    );
    // Hidden states: the image rows first, then the text's.
    let (_, events) = run(&h, multimodal_input(p, image.as_mut_ptr(), 2), true);
    let (values, _, n) = events[0].hidden.clone().unwrap();
    assert_eq!(n as usize, 2 + text_ids.len());
    assert_eq!(&values[..2 * DIM], &image[..]);
    assert_eq!(values[2 * DIM + 1], hidden_value(text_ids[0], 1, DIM));
}

#[test]
fn hidden_states_have_the_documented_shape_and_values() {
    let dim = 8;
    let h = open(MockModel::new().embed_dim(dim));
    let prompt = "<bos>Hidden states, please";
    let ids = BuiltinTokenizer.encode(prompt);
    let c = CString::new(prompt).unwrap();
    let (rc, events) = run(&h, prompt_input(&c), true);
    assert_eq!(rc, 0);
    assert_eq!(
        states(&events),
        vec![RKLLM_RUN_GET_LAST_HIDDEN_LAYER, RKLLM_RUN_FINISH]
    );
    let (values, embd, n) = events[0].hidden.clone().unwrap();
    assert_eq!((embd as usize, n as usize), (dim, ids.len()));
    assert_eq!(values.len(), dim * ids.len());
    for (t, id) in ids.iter().enumerate() {
        for d in 0..dim {
            assert_eq!(
                values[t * dim + d],
                hidden_value(*id, d, dim),
                "token {t} dim {d}"
            );
        }
    }
    assert_eq!(hidden_value(2, 4, 8), 2.5);
    // A fresh buffer each run (the previous one was freed).
    assert!(events[0].hidden_ptr != 0);
}

fn utf8_model(waiting: WaitingText) -> Handle {
    open(
        MockModel::new()
            .answer("né 🙂!")
            .with_runtime(|r| r.waiting_text = waiting),
    )
}

#[test]
fn split_utf8_arrives_as_waiting_with_partial_bytes_then_normal() {
    let h = utf8_model(WaitingText::PartialBytes);
    let (rc, events) = run_prompt(&h, "q");
    assert_eq!(rc, 0);
    let b = |byte: u8| BYTE_TOKEN_BASE + i32::from(byte);
    let piece = |s: &str| BuiltinTokenizer.encode(s)[0];
    let expected: Vec<(u32, i32, Option<Vec<u8>>)> = vec![
        (RKLLM_RUN_NORMAL, piece("n"), Some(b"n".to_vec())),
        (RKLLM_RUN_WAITING, b(0xC3), Some(vec![0xC3])),
        (RKLLM_RUN_NORMAL, b(0xA9), Some(vec![0xA9])),
        (RKLLM_RUN_NORMAL, piece(" "), Some(b" ".to_vec())),
        (RKLLM_RUN_WAITING, b(0xF0), Some(vec![0xF0])),
        (RKLLM_RUN_WAITING, b(0x9F), Some(vec![0x9F])),
        (RKLLM_RUN_WAITING, b(0x99), Some(vec![0x99])),
        (RKLLM_RUN_NORMAL, b(0x82), Some(vec![0x82])),
        (RKLLM_RUN_NORMAL, piece("!"), Some(b"!".to_vec())),
        (RKLLM_RUN_NORMAL, END_OF_TURN_ID, Some(Vec::new())),
        (RKLLM_RUN_FINISH, -1, None),
    ];
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.state, e.token_id, e.text.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(String::from_utf8(text_of(&events)).unwrap(), "né 🙂!");
}

#[test]
fn split_utf8_with_null_or_empty_waiting_text_completes_in_normal() {
    for (mode, waiting_text) in [
        (WaitingText::Null, None),
        (WaitingText::Empty, Some(Vec::new())),
    ] {
        let h = utf8_model(mode);
        let (_, events) = run_prompt(&h, "q");
        let waiting: Vec<_> = events
            .iter()
            .filter(|e| e.state == RKLLM_RUN_WAITING)
            .collect();
        assert_eq!(waiting.len(), 4);
        assert!(waiting.iter().all(|e| e.text == waiting_text));
        let smile = events
            .iter()
            .find(|e| e.token_id == BYTE_TOKEN_BASE + 0x82)
            .unwrap();
        assert_eq!(smile.text.as_deref(), Some("🙂".as_bytes()));
        // Still one callback per token.
        assert_eq!(events.len(), 11);
        assert_eq!(String::from_utf8(text_of(&events)).unwrap(), "né 🙂!");
    }
}
