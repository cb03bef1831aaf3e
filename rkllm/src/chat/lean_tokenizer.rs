//! A lean load path for SentencePiece-style BPE `tokenizer.json` files (Gemma 2's among them):
//! the same ids as the `tokenizers` crate's own loader, in a fraction of its memory.
//!
//! The `tokenizers` crate parses a tokenizer file through generic JSON trees (the model's
//! 256k-entry vocabulary and 580k merges are buffered more than once) and keeps the vocabulary
//! twice plus the merges in hash maps of owned strings: about 127 MiB resident after loading
//! Gemma 2's and 170 MiB at the peak. Here the model part is read in one streaming pass
//! straight into [`CompactBpe`]: every piece in one string arena, an open-addressing index
//! of ids, and a map of merge pairs to `(rank, new id)`. The rest of the file (normalizer,
//! pre-tokenizer, post-processor, decoder, added tokens) is small and goes through the
//! `tokenizers` crate's own types, so the pipeline around the model is the crate's.
//!
//! [`CompactBpe`] implements the crate's BPE algorithm as written in `tokenizers` 0.23
//! (`models/bpe/word.rs`): symbols from characters (byte fallback to `<0xHH>` tokens, unknown
//! characters to the fused unknown token), then merges applied lowest rank first, ties to the
//! leftmost. Features it does not implement (dropout, a continuing-subword prefix, an
//! end-of-word suffix, non-BPE models) make the load report [`LoadError::Unsupported`], so a
//! caller can fall back to the crate's loader.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use tokenizers::models::bpe::BpeTrainer;
use tokenizers::{
    AddedToken, DecoderWrapper, Model, NormalizerWrapper, PaddingParams, PostProcessorWrapper,
    PreTokenizerWrapper, Token, TokenizerImpl, TruncationParams,
};

/// A tokenizer with the compact BPE model and the `tokenizers` crate's pipeline.
pub(crate) type LeanTokenizer = TokenizerImpl<
    CompactBpe,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// Why the lean path did not load a file.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// A valid file this path does not handle (another model type, BPE dropout, ...).
    Unsupported(String),
    /// Not a valid tokenizer file.
    Invalid(String),
}

impl std::error::Error for LoadError {}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Unsupported(m) => write!(f, "unsupported tokenizer: {m}"),
            LoadError::Invalid(m) => write!(f, "{m}"),
        }
    }
}

/// Loads a tokenizer from the bytes of its `tokenizer.json`.
pub(crate) fn load(bytes: &[u8]) -> Result<LeanTokenizer, LoadError> {
    let root: Root =
        serde_json::from_slice(bytes).map_err(|e| LoadError::Invalid(e.to_string()))?;
    let model = match root.model {
        Some(ModelPart::Bpe(m)) => *m,
        Some(ModelPart::Unsupported(why)) => return Err(LoadError::Unsupported(why)),
        None => return Err(LoadError::Invalid("the file has no model".to_owned())),
    };
    let invalid = |e: &dyn fmt::Display| LoadError::Invalid(e.to_string());
    let mut tokenizer = LeanTokenizer::new(model);
    let mut added: Vec<AddedToken> = Vec::new();
    // The same steps, in the same order, as the `tokenizers` crate's own deserializer.
    for (key, value) in root.others {
        match key.as_str() {
            "version" if value.as_str() != Some("1.0") => {
                return Err(LoadError::Invalid(format!(
                    "unknown tokenizer version {value}"
                )));
            }
            "truncation" => {
                let t: Option<TruncationParams> =
                    serde_json::from_value(value).map_err(|e| invalid(&e))?;
                tokenizer.with_truncation(t).map_err(|e| invalid(&e))?;
            }
            "padding" => {
                let p: Option<PaddingParams> =
                    serde_json::from_value(value).map_err(|e| invalid(&e))?;
                tokenizer.with_padding(p);
            }
            "added_tokens" => {
                added = serde_json::from_value(value).map_err(|e| invalid(&e))?;
            }
            "normalizer" => {
                let n: Option<NormalizerWrapper> =
                    serde_json::from_value(value).map_err(|e| invalid(&e))?;
                tokenizer.with_normalizer(n).map_err(|e| invalid(&e))?;
            }
            "pre_tokenizer" => {
                let p: Option<PreTokenizerWrapper> =
                    serde_json::from_value(value).map_err(|e| invalid(&e))?;
                tokenizer.with_pre_tokenizer(p);
            }
            "post_processor" => {
                let p: Option<PostProcessorWrapper> =
                    serde_json::from_value(value).map_err(|e| invalid(&e))?;
                tokenizer.with_post_processor(p);
            }
            "decoder" => {
                let d: Option<DecoderWrapper> =
                    serde_json::from_value(value).map_err(|e| invalid(&e))?;
                tokenizer.with_decoder(d);
            }
            _ => {}
        }
    }
    tokenizer.add_tokens(added).map_err(|e| invalid(&e))?;
    Ok(tokenizer)
}

/// The top level of a tokenizer file: the model streamed, everything else as small JSON
/// values.
struct Root {
    model: Option<ModelPart>,
    others: Vec<(String, serde_json::Value)>,
}

impl<'de> Deserialize<'de> for Root {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RootVisitor;
        impl<'de> Visitor<'de> for RootVisitor {
            type Value = Root;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a tokenizer.json object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Root, A::Error> {
                let mut root = Root {
                    model: None,
                    others: Vec::new(),
                };
                while let Some(key) = map.next_key::<String>()? {
                    if key == "model" {
                        root.model = Some(map.next_value()?);
                    } else {
                        root.others.push((key, map.next_value()?));
                    }
                }
                Ok(root)
            }
        }
        d.deserialize_map(RootVisitor)
    }
}

/// The `model` object: a compact BPE, or why it cannot be one.
enum ModelPart {
    Bpe(Box<CompactBpe>),
    Unsupported(String),
}

impl<'de> Deserialize<'de> for ModelPart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ModelVisitor)
    }
}

struct ModelVisitor;

impl<'de> Visitor<'de> for ModelVisitor {
    type Value = ModelPart;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a BPE model object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelPart, A::Error> {
        let mut b = Builder::default();
        let mut unsupported: Option<String> = None;
        let mut kind: Option<String> = None;
        let mut has_merges = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => {
                    let k: String = map.next_value()?;
                    if k != "BPE" {
                        unsupported.get_or_insert_with(|| format!("a {k} model"));
                    }
                    kind = Some(k);
                }
                "dropout" => {
                    if let Some(p) = map.next_value::<Option<f32>>()? {
                        if p != 0.0 {
                            unsupported.get_or_insert_with(|| "BPE dropout".to_owned());
                        }
                    }
                }
                "unk_token" => b.unk_token = map.next_value()?,
                "continuing_subword_prefix" | "end_of_word_suffix" => {
                    if map.next_value::<Option<String>>()?.is_some() {
                        unsupported.get_or_insert_with(|| format!("BPE {key}"));
                    }
                }
                "fuse_unk" => b.fuse_unk = map.next_value::<Option<bool>>()?.unwrap_or(false),
                "byte_fallback" => {
                    b.byte_fallback = map.next_value::<Option<bool>>()?.unwrap_or(false)
                }
                "ignore_merges" => {
                    b.ignore_merges = map.next_value::<Option<bool>>()?.unwrap_or(false)
                }
                "vocab" if unsupported.is_none() => {
                    map.next_value_seed(VocabSeed(&mut b))?;
                }
                "merges" if unsupported.is_none() => {
                    if b.spans.is_empty() {
                        // Merges before the vocabulary cannot be resolved in one pass.
                        unsupported.get_or_insert_with(|| "merges before the vocabulary".into());
                        map.next_value::<IgnoredAny>()?;
                    } else {
                        map.next_value_seed(MergesSeed(&mut b))?;
                        has_merges = true;
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(kind) = kind.as_deref().filter(|k| *k != "BPE") {
            return Ok(ModelPart::Unsupported(format!("a {kind} model")));
        }
        if kind.is_none() {
            return Ok(ModelPart::Unsupported("a model without a type".to_owned()));
        }
        if let Some(why) = unsupported {
            return Ok(ModelPart::Unsupported(why));
        }
        if b.spans.is_empty() || !has_merges {
            return Err(de::Error::custom("the BPE model has no vocab or no merges"));
        }
        b.finish()
            .map(|m| ModelPart::Bpe(Box::new(m)))
            .map_err(de::Error::custom)
    }
}

/// A model being read.
#[derive(Default)]
struct Builder {
    arena: String,
    /// Per id, the piece's `(start, end)` in the arena; `(u32::MAX, _)` = no piece yet.
    spans: Vec<(u32, u32)>,
    index: PieceIndex,
    merges: MergeMap,
    unk_token: Option<String>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
}

impl Builder {
    fn piece(&self, id: u32) -> &str {
        let (s, e) = self.spans[id as usize];
        &self.arena[s as usize..e as usize]
    }

    fn finish(self) -> Result<CompactBpe, String> {
        let byte_ids = std::array::from_fn(|b| {
            let code = format!("<{b:#04X}>");
            self.index.get(&code, |id| self.piece(id))
        });
        let unk = match &self.unk_token {
            Some(t) => Some((t.clone(), self.index.get(t, |id| self.piece(id)))),
            None => None,
        };
        Ok(CompactBpe {
            arena: self.arena.into_boxed_str(),
            spans: self.spans.into_boxed_slice(),
            index: self.index,
            merges: self.merges,
            unk,
            fuse_unk: self.fuse_unk,
            byte_fallback: self.byte_fallback,
            ignore_merges: self.ignore_merges,
            byte_ids,
            cache: Mutex::new(HashMap::new()),
        })
    }
}

/// Reads the `vocab` object into the arena and the index.
struct VocabSeed<'a>(&'a mut Builder);

impl<'de> DeserializeSeed<'de> for VocabSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for VocabSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a vocab object of piece: id")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let b = self.0;
        if !b.spans.is_empty() {
            return Err(de::Error::custom("two vocab fields"));
        }
        while let Some((start, end)) = map.next_key_seed(PieceSeed(&mut b.arena))? {
            let id: u32 = map.next_value()?;
            if id as usize >= b.spans.len() {
                b.spans.resize(id as usize + 1, (u32::MAX, 0));
            }
            if b.spans[id as usize].0 != u32::MAX {
                return Err(de::Error::custom(format!("id {id} is given to two pieces")));
            }
            b.spans[id as usize] = (start, end);
        }
        if let Some(gap) = b.spans.iter().position(|s| s.0 == u32::MAX) {
            return Err(de::Error::custom(format!("no piece has id {gap}")));
        }
        let mut index = PieceIndex::with_capacity(b.spans.len());
        for id in 0..b.spans.len() as u32 {
            let (s, e) = b.spans[id as usize];
            let piece = &b.arena[s as usize..e as usize];
            if !index.insert(piece, id, |i| {
                let (s, e) = b.spans[i as usize];
                &b.arena[s as usize..e as usize]
            }) {
                return Err(de::Error::custom(format!(
                    "the piece {piece:?} has two ids"
                )));
            }
        }
        b.index = index;
        Ok(())
    }
}

/// Appends a string to the arena; returns its span.
struct PieceSeed<'a>(&'a mut String);

impl<'de> DeserializeSeed<'de> for PieceSeed<'_> {
    type Value = (u32, u32);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(u32, u32), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PieceSeed<'_> {
    type Value = (u32, u32);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a piece")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(u32, u32), E> {
        let start = self.0.len();
        self.0.push_str(v);
        let end = self.0.len();
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(s), Ok(e)) => Ok((s, e)),
            _ => Err(E::custom("the vocabulary is larger than 4 GiB")),
        }
    }
}

/// Reads the `merges` array into the merge map, resolving pieces through the index.
struct MergesSeed<'a>(&'a mut Builder);

impl<'de> DeserializeSeed<'de> for MergesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MergesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a merges array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let b = self.0;
        let mut rank: u32 = 0;
        while let Some(merge) = seq.next_element::<MergeText>()? {
            let (left, right) = match &merge {
                MergeText::Pair(a, b) => (a.as_str(), b.as_str()),
                MergeText::Line(line) => {
                    let mut parts = line.split(' ');
                    match (parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), None) => (a, b),
                        _ => {
                            return Err(de::Error::custom(format!(
                                "merge {line:?} is not two pieces separated by a space"
                            )))
                        }
                    }
                }
            };
            let piece = |id: u32| {
                let (s, e) = b.spans[id as usize];
                &b.arena[s as usize..e as usize]
            };
            let missing = |p: &str| -> A::Error {
                de::Error::custom(format!("merge piece {p:?} is not in the vocab"))
            };
            let a = b.index.get(left, piece).ok_or_else(|| missing(left))?;
            let c = b.index.get(right, piece).ok_or_else(|| missing(right))?;
            let new = b
                .index
                .get_concat(left, right, piece)
                .ok_or_else(|| missing(&format!("{left}{right}")))?;
            // As the crate builds its map: a repeated pair keeps its last rank.
            b.merges.insert(pair_key(a, c), (rank, new));
            rank += 1;
        }
        b.merges.shrink_to_fit();
        Ok(())
    }
}

/// One merge: `["a", "b"]` or the legacy `"a b"`.
enum MergeText {
    Pair(String, String),
    Line(String),
}

impl<'de> Deserialize<'de> for MergeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MergeText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a merge")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MergeText, E> {
                Ok(MergeText::Line(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MergeText, A::Error> {
                let a: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a merge needs two pieces"))?;
                let b: String = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a merge needs two pieces"))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a merge has two pieces"));
                }
                Ok(MergeText::Pair(a, b))
            }
        }
        d.deserialize_any(V)
    }
}

/// A fast hasher for merge pairs packed in a `u64` (the keys are token ids, not
/// attacker-chosen).
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u64(&mut self, v: u64) {
        // A multiplicative mix; the high bits are well spread, which hashbrown uses.
        self.0 = (v ^ (v >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        self.0 ^= self.0 >> 32;
    }
}

type MergeMap = HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>;

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// FNV-1a over the bytes of `parts`, concatenated.
fn piece_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// An open-addressing table from piece to id: slots hold `id + 1`, 0 when empty; the pieces
/// live in the arena.
#[derive(Default)]
struct PieceIndex {
    slots: Box<[u32]>,
}

impl PieceIndex {
    fn with_capacity(n: usize) -> PieceIndex {
        let len = (n * 2).next_power_of_two().max(16);
        PieceIndex {
            slots: vec![0; len].into_boxed_slice(),
        }
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Inserts; false when the piece is already there.
    fn insert<'a>(&mut self, piece: &str, id: u32, piece_of: impl Fn(u32) -> &'a str) -> bool {
        let mut i = piece_hash(&[piece]) as usize & self.mask();
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = id + 1;
                    return true;
                }
                s if piece_of(s - 1) == piece => return false,
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    fn get<'a>(&self, piece: &str, piece_of: impl Fn(u32) -> &'a str) -> Option<u32> {
        self.get_concat(piece, "", piece_of)
    }

    /// The id of `left + right`, without building the string.
    fn get_concat<'a>(
        &self,
        left: &str,
        right: &str,
        piece_of: impl Fn(u32) -> &'a str,
    ) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = piece_hash(&[left, right]) as usize & self.mask();
        loop {
            match self.slots[i] {
                0 => return None,
                s => {
                    let p = piece_of(s - 1);
                    if p.len() == left.len() + right.len()
                        && p.starts_with(left)
                        && p.ends_with(right)
                    {
                        return Some(s - 1);
                    }
                    i = (i + 1) & self.mask();
                }
            }
        }
    }
}

/// A BPE model with byte fallback in compact form; see the [module docs](self).
pub(crate) struct CompactBpe {
    arena: Box<str>,
    spans: Box<[(u32, u32)]>,
    index: PieceIndex,
    merges: MergeMap,
    /// The unknown token's text and id (`None` when it is not in the vocabulary).
    unk: Option<(String, Option<u32>)>,
    fuse_unk: bool,
    byte_fallback: bool,
    ignore_merges: bool,
    /// The ids of `<0x00>` … `<0xFF>`.
    byte_ids: [Option<u32>; 256],
    /// Merged words by text, as the crate's BPE keeps them: at most [`CACHE_CAPACITY`]
    /// words shorter than [`CACHE_MAX_LENGTH`] bytes; each is `(id, byte length)` per token.
    cache: Mutex<WordCache>,
}

/// Merged words by their text: `(id, byte length)` per token.
type WordCache = HashMap<Box<str>, Box<[(u32, usize)]>>;

/// Words the cache keeps (the `tokenizers` crate's default).
const CACHE_CAPACITY: usize = 10_000;
/// Longest word the cache keeps, exclusive (the `tokenizers` crate's value).
const CACHE_MAX_LENGTH: usize = 256;

#[derive(Clone, Copy)]
struct Symbol {
    c: u32,
    prev: isize,
    next: isize,
    len: usize,
}

/// A merge candidate: lowest rank first, then leftmost.
#[derive(PartialEq, Eq)]
struct Merge {
    pos: usize,
    rank: u32,
    new_id: u32,
}

impl Ord for Merge {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.pos.cmp(&self.pos))
    }
}

impl PartialOrd for Merge {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl CompactBpe {
    fn piece(&self, id: u32) -> Option<&str> {
        let (s, e) = *self.spans.get(id as usize)?;
        Some(&self.arena[s as usize..e as usize])
    }

    fn id_of(&self, piece: &str) -> Option<u32> {
        self.index
            .get(piece, |id| self.piece(id).unwrap_or_default())
    }

    fn merge(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// The tokens of a merged word, offsets counted from its start.
    fn tokens(&self, word: &[(u32, usize)]) -> Vec<Token> {
        let mut pos = 0;
        word.iter()
            .map(|&(id, len)| {
                let start = pos;
                pos += len;
                let value = self.piece(id).unwrap_or_default().to_owned();
                Token::new(id, value, (start, pos))
            })
            .collect()
    }

    fn add(symbols: &mut Vec<Symbol>, c: u32, len: usize) {
        let n = symbols.len() as isize;
        let prev = match symbols.last_mut() {
            Some(last) => {
                last.next = n;
                n - 1
            }
            None => -1,
        };
        symbols.push(Symbol {
            c,
            prev,
            next: -1,
            len,
        });
    }

    /// The symbols of `w` before merging: each character's piece, its bytes' `<0xHH>` pieces,
    /// or the (fused) unknown token.
    fn symbols(&self, w: &str) -> tokenizers::Result<Vec<Symbol>> {
        let mut symbols = Vec::with_capacity(w.len());
        let mut unk: Option<(u32, usize)> = None;
        for (i, ch) in w.char_indices() {
            let s = &w[i..i + ch.len_utf8()];
            let byte_len = s.len();
            if let Some(id) = self.id_of(s) {
                if let Some((unk_id, unk_len)) = unk.take() {
                    Self::add(&mut symbols, unk_id, unk_len);
                }
                Self::add(&mut symbols, id, byte_len);
                continue;
            }
            if self.byte_fallback {
                let ids: Option<Vec<u32>> = s.bytes().map(|b| self.byte_ids[b as usize]).collect();
                if let Some(ids) = ids {
                    for id in ids {
                        Self::add(&mut symbols, id, 1);
                    }
                    continue;
                }
            }
            if let Some((text, unk_id)) = &self.unk {
                let unk_id = unk_id.ok_or_else(|| {
                    format!("the unknown token {text:?} is not in the vocabulary")
                })?;
                unk = match (unk, self.fuse_unk) {
                    (Some((id, len)), true) => Some((id, len + byte_len)),
                    (Some((id, len)), false) => {
                        Self::add(&mut symbols, id, len);
                        Some((unk_id, byte_len))
                    }
                    (None, _) => Some((unk_id, byte_len)),
                };
            }
        }
        if let Some((id, len)) = unk {
            Self::add(&mut symbols, id, len);
        }
        Ok(symbols)
    }

    /// Applies the merges, lowest rank first (ties to the leftmost), as the crate does.
    fn merge_all(&self, symbols: &mut Vec<Symbol>) {
        let mut queue: std::collections::BinaryHeap<Merge> = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                self.merge(w[0].c, w[1].c)
                    .map(|(rank, new_id)| Merge { pos, rank, new_id })
            })
            .collect();
        while let Some(top) = queue.pop() {
            if symbols[top.pos].len == 0 || symbols[top.pos].next == -1 {
                continue;
            }
            let next_pos = symbols[top.pos].next as usize;
            let right = symbols[next_pos];
            // A stale entry: the pair at this position has changed since it was queued.
            if self
                .merge(symbols[top.pos].c, right.c)
                .is_none_or(|(_, id)| id != top.new_id)
            {
                continue;
            }
            {
                let s = &mut symbols[top.pos];
                s.c = top.new_id;
                s.len += right.len;
                s.next = right.next;
            }
            symbols[next_pos].len = 0;
            if right.next > -1 && (right.next as usize) < symbols.len() {
                symbols[right.next as usize].prev = top.pos as isize;
            }
            let current = symbols[top.pos];
            if current.prev >= 0 {
                let prev = current.prev as usize;
                if let Some((rank, new_id)) = self.merge(symbols[prev].c, current.c) {
                    queue.push(Merge {
                        pos: prev,
                        rank,
                        new_id,
                    });
                }
            }
            let next = current.next as usize;
            if next < symbols.len() {
                if let Some((rank, new_id)) = self.merge(current.c, symbols[next].c) {
                    queue.push(Merge {
                        pos: top.pos,
                        rank,
                        new_id,
                    });
                }
            }
        }
        symbols.retain(|s| s.len != 0);
    }
}

impl Model for CompactBpe {
    type Trainer = BpeTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        if sequence.is_empty() {
            return Ok(Vec::new());
        }
        if self.ignore_merges {
            if let Some(id) = self.id_of(sequence) {
                return Ok(vec![Token::new(
                    id,
                    sequence.to_owned(),
                    (0, sequence.len()),
                )]);
            }
        }
        let cacheable = sequence.len() < CACHE_MAX_LENGTH;
        let cache = || self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cacheable {
            if let Some(word) = cache().get(sequence) {
                return Ok(self.tokens(word));
            }
        }
        let mut symbols = self.symbols(sequence)?;
        self.merge_all(&mut symbols);
        let word: Box<[(u32, usize)]> = symbols.iter().map(|s| (s.c, s.len)).collect();
        let tokens = self.tokens(&word);
        if cacheable {
            let mut cache = cache();
            if cache.len() < CACHE_CAPACITY {
                cache.insert(sequence.into(), word);
            }
        }
        Ok(tokens)
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.id_of(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.piece(id).map(str::to_owned)
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.spans.len() as u32)
            .filter_map(|id| Some((self.piece(id)?.to_owned(), id)))
            .collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.spans.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("saving is not supported by the compact BPE model".into())
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

impl fmt::Debug for CompactBpe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompactBpe")
            .field("vocab", &self.spans.len())
            .field("merges", &self.merges.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny SentencePiece-style BPE file.
    const TINY: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null,
      "added_tokens": [
        {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
      ],
      "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
      "pre_tokenizer": null, "post_processor": null,
      "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]},
      "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
        "vocab": {"<unk>": 0, "<s>": 1, "<0xC3>": 2, "<0xA9>": 3, "a": 4, "b": 5, "ab": 6, "\u2581": 7, "\u2581ab": 8, "c": 9, "abc": 10},
        "merges": [["a", "b"], ["\u2581", "ab"], ["ab", "c"]]}
    }"#;

    #[test]
    fn same_ids_as_the_crates_loader() {
        let lean = load(TINY.as_bytes()).unwrap();
        let full = tokenizers::Tokenizer::from_bytes(TINY.as_bytes()).unwrap();
        // Twice: the second round comes from the word cache.
        let texts = ["ab", " ab", "abc ab", "é", "x", "xy ab<s>", "ba ab abc", ""];
        for &text in texts.iter().chain(&texts) {
            let a = lean.encode_fast(text, false).unwrap();
            let b = full.encode_fast(text, false).unwrap();
            assert_eq!(a.get_ids(), b.get_ids(), "{text:?}");
            assert_eq!(a.get_offsets(), b.get_offsets(), "{text:?}");
            assert_eq!(
                lean.decode(a.get_ids(), false).unwrap(),
                full.decode(b.get_ids(), false).unwrap()
            );
        }
        assert_eq!(lean.token_to_id("\u{2581}ab"), Some(8));
        assert_eq!(lean.get_vocab_size(true), full.get_vocab_size(true));
        // The legacy form of merges, "a b", gives the same model.
        let legacy = TINY.replace(
            r#"[["a", "b"], ["\u2581", "ab"], ["ab", "c"]]"#,
            r#"["a b", "\u2581 ab", "ab c"]"#,
        );
        assert_ne!(legacy, TINY);
        let old = load(legacy.as_bytes()).unwrap();
        let ids = |t: &LeanTokenizer| t.encode_fast(" abc ab", false).unwrap().get_ids().to_vec();
        assert_eq!(ids(&old), ids(&lean));
    }

    #[test]
    fn unsupported_and_invalid_files_are_told_apart() {
        let dropout = TINY.replace("\"dropout\": null", "\"dropout\": 0.1");
        assert!(matches!(
            load(dropout.as_bytes()),
            Err(LoadError::Unsupported(_))
        ));
        let unigram = r#"{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}"#;
        assert!(matches!(
            load(unigram.as_bytes()),
            Err(LoadError::Unsupported(_))
        ));
        let missing = TINY.replace("[\"ab\", \"c\"]", "[\"ab\", \"zz\"]");
        assert!(matches!(
            load(missing.as_bytes()),
            Err(LoadError::Invalid(_))
        ));
        assert!(matches!(load(b"not json"), Err(LoadError::Invalid(_))));
        let twice = TINY.replace("\"c\": 9", "\"c\": 4");
        assert!(matches!(load(twice.as_bytes()), Err(LoadError::Invalid(_))));
    }
}
