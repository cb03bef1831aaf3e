//! The lean tokenizer load gives exactly the `tokenizers` crate's ids on the real Gemma 2
//! tokenizer, and one file is loaded once per process (feature `tokenizer`).
#![cfg(feature = "tokenizer")]

mod chat_common;

use rkllm::chat::GemmaTokenizer;

/// Text of every kind: the README, the golden vectors' files, and hand-picked edge cases.
fn corpus() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = vec![
        std::fs::read_to_string(root.join("README.md")).unwrap(),
        std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap(),
    ];
    for entry in std::fs::read_dir(root.join("testdata/gemma-vectors")).unwrap() {
        texts.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for s in [
        "",
        " ",
        "   leading and trailing   ",
        "\n\n\n\t\t  \r\n",
        "héllo 世界 🙂 👩‍👩‍👧 e\u{301} \u{200b}",
        "مرحبا بالعالم שלום עולם नमस्ते दुनिया",
        "<start_of_turn>user\n<bos><eos><pad><unk><mask>[@BOS@]<unused0></start_of_turn>",
        "fn main() { println!(\"{}\", 1 + 2); } // ok?",
        "\u{0}\u{1}\u{7f}\u{80}\u{ffff}\u{10ffff}",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        texts.push(s.to_owned());
    }
    // Lines on their own too: short texts take other merge paths than whole files.
    let lines: Vec<String> = texts
        .iter()
        .flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    texts.extend(lines);
    texts
}

#[test]
fn lean_ids_equal_the_tokenizers_crate_on_every_text() {
    let Some(lean) = chat_common::gemma_tokenizer() else {
        return;
    };
    let mut full = tokenizers::Tokenizer::from_file(chat_common::tokenizer_path()).unwrap();
    full.set_encode_special_tokens(true);
    let texts = corpus();
    assert!(texts.len() > 500, "{} texts", texts.len());
    for text in &texts {
        let want = full.encode_fast(text.as_str(), false).unwrap();
        assert_eq!(lean.encode_text(text).unwrap(), want.get_ids(), "{text:?}");
        assert_eq!(
            lean.decode(want.get_ids(), false).unwrap(),
            full.decode(want.get_ids(), false).unwrap()
        );
    }
}

#[test]
fn one_file_is_loaded_once_while_it_is_in_use() {
    let Some(first) = chat_common::gemma_tokenizer() else {
        return;
    };
    let path = chat_common::tokenizer_path();
    let second = GemmaTokenizer::from_file(&path).unwrap();
    assert!(second.shares_with(&first));
    // Another spelling of the same path is the same file.
    let dotted = path.parent().unwrap().join(".").join("tokenizer.json");
    assert!(GemmaTokenizer::from_file(dotted)
        .unwrap()
        .shares_with(&first));
    // A copy of the file is another file.
    let copy = std::env::temp_dir().join(format!("rkllm-lean-copy-{}.json", std::process::id()));
    std::fs::copy(&path, &copy).unwrap();
    let other = GemmaTokenizer::from_file(&copy).unwrap();
    assert!(!other.shares_with(&first));
    std::fs::remove_file(copy).ok();
    // From bytes: a copy of its own.
    let bytes = std::fs::read(&path).unwrap();
    assert!(!GemmaTokenizer::from_bytes(&bytes)
        .unwrap()
        .shares_with(&first));
}
