//! Prompt-cache files: what a run with `save_prompt_cache = 1` writes and
//! `rkllm_load_prompt_cache` reads.
//!
//! The real file holds the prefill's KV state. The mock's file has the real file's **size**:
//! a header (the prompt's token ids, the model's identity, a checksum), then a KV payload of
//! `tokens × bytes per token` bytes (see [`KvGeometry`](super::KvGeometry)). The payload is
//! left as a hole (`File::set_len`), so the size is real but the disk blocks are not: a
//! sparse file takes almost no space, and a tmpfs does not fill up. The header is enough to
//! reproduce the runtime's reuse rule: compare the new prompt with the cached one from the
//! beginning and skip the longest matching prefix.
//!
//! Layout, little-endian: the magic `rkllm-mock-prompt-cache\0`, a `u32` format version, a
//! `u64` payload bytes per token, a `u32` identity length and the identity's bytes, a `u32`
//! token count and the tokens as `i32`, an FNV-1a `u64` of everything before it; then the
//! payload. A file whose magic, version, checksum or length does not match is refused, and so
//! is a cache saved by another model (another identity or another bytes per token).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

/// Marks a mock prompt-cache file.
const MAGIC: &[u8; 24] = b"rkllm-mock-prompt-cache\0";
/// The version of the layout above.
const VERSION: u32 = 2;
/// Longest identity accepted (a model name and a tokenizer description).
const MAX_IDENTITY: u32 = 64 * 1024;
/// Most tokens a cache may hold (far above any context length the runtime accepts).
const MAX_TOKENS: u32 = 1 << 24;

/// Where the cache goes when `prompt_cache_path` is NULL, as the vendor guide says.
pub(crate) const DEFAULT_PATH: &str = "./prompt_cache.bin";

/// A cache as loaded: its prompt and the file's size.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The cached prompt's token ids.
    pub(crate) tokens: Vec<i32>,
    /// The file's size in bytes (header and payload).
    pub(crate) bytes: u64,
}

/// FNV-1a, 64 bits: enough to notice a damaged header.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The header of a cache of `tokens` for the model `identity`.
fn header(identity: &str, bytes_per_token: u64, tokens: &[i32]) -> Vec<u8> {
    let mut h = Vec::with_capacity(MAGIC.len() + 32 + identity.len() + 4 * tokens.len());
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&bytes_per_token.to_le_bytes());
    h.extend_from_slice(&(identity.len() as u32).to_le_bytes());
    h.extend_from_slice(identity.as_bytes());
    h.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    for t in tokens {
        h.extend_from_slice(&t.to_le_bytes());
    }
    let mut sum = Fnv::new();
    sum.update(&h);
    h.extend_from_slice(&sum.0.to_le_bytes());
    h
}

/// Writes the cache of `tokens` for the model `identity`, with a KV payload of
/// `bytes_per_token` per token; returns the file's size.
pub(crate) fn save(
    path: &Path,
    identity: &str,
    bytes_per_token: u64,
    tokens: &[i32],
) -> std::io::Result<u64> {
    if identity.len() > MAX_IDENTITY as usize || tokens.len() > MAX_TOKENS as usize {
        return Err(std::io::Error::other("the prompt is too large to cache"));
    }
    let head = header(identity, bytes_per_token, tokens);
    let payload = bytes_per_token
        .checked_mul(tokens.len() as u64)
        .ok_or_else(|| std::io::Error::other("the cache would be larger than 2^64 bytes"))?;
    let size = head.len() as u64 + payload;
    let mut file = BufWriter::new(File::create(path)?);
    file.write_all(&head)?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    // The payload is a hole: the file has its real size without using the disk blocks.
    file.set_len(size)?;
    Ok(size)
}

fn read_u32(r: &mut impl Read, sum: &mut Fnv) -> std::io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    sum.update(&b);
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read, sum: &mut Fnv) -> std::io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    sum.update(&b);
    Ok(u64::from_le_bytes(b))
}

/// What the header says: identity, payload bytes per token, tokens, header length.
struct Header {
    identity: String,
    bytes_per_token: u64,
    tokens: Vec<i32>,
    len: u64,
}

/// Reads and checks a header; `None` when it is not one or it is damaged.
fn read_header(r: &mut impl Read) -> Option<Header> {
    let mut sum = Fnv::new();
    let mut magic = [0; MAGIC.len()];
    r.read_exact(&mut magic).ok()?;
    if &magic != MAGIC {
        return None;
    }
    sum.update(&magic);
    if read_u32(r, &mut sum).ok()? != VERSION {
        return None;
    }
    let bytes_per_token = read_u64(r, &mut sum).ok()?;
    let id_len = read_u32(r, &mut sum).ok()?;
    if id_len > MAX_IDENTITY {
        return None;
    }
    let mut identity = vec![0; id_len as usize];
    r.read_exact(&mut identity).ok()?;
    sum.update(&identity);
    let count = read_u32(r, &mut sum).ok()?;
    if count > MAX_TOKENS {
        return None;
    }
    let mut raw = vec![0; count as usize * 4];
    r.read_exact(&mut raw).ok()?;
    sum.update(&raw);
    let mut stored = [0; 8];
    r.read_exact(&mut stored).ok()?;
    if u64::from_le_bytes(stored) != sum.0 {
        return None;
    }
    let tokens = raw
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Some(Header {
        identity: String::from_utf8(identity).ok()?,
        bytes_per_token,
        tokens,
        len: (MAGIC.len() + 4 + 8 + 4 + id_len as usize + 4 + count as usize * 4 + 8) as u64,
    })
}

/// Reads a cache written for the model `identity` whose KV payload is `bytes_per_token` per
/// token; the error is the log line's text. Only the header is read: the payload's time is
/// the caller's to simulate.
pub(crate) fn load(path: &Path, identity: &str, bytes_per_token: u64) -> Result<Loaded, String> {
    let file = File::open(path)
        .map_err(|e| format!("failed to open prompt cache file {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("failed to open prompt cache file {}: {e}", path.display()))?
        .len();
    let invalid = || format!("invalid prompt cache file {}", path.display());
    let head = read_header(&mut BufReader::new(file)).ok_or_else(invalid)?;
    let expected = head
        .bytes_per_token
        .checked_mul(head.tokens.len() as u64)
        .and_then(|p| p.checked_add(head.len));
    if expected != Some(size) {
        return Err(format!(
            "invalid prompt cache file {}: {size} bytes, not the {} its header states",
            path.display(),
            expected.map_or_else(|| "impossible size".to_owned(), |e| e.to_string())
        ));
    }
    if head.identity != identity || head.bytes_per_token != bytes_per_token {
        return Err(format!(
            "prompt cache {} was saved by another model ({}, {} bytes per token), not this one \
             ({identity}, {bytes_per_token} bytes per token)",
            path.display(),
            head.identity,
            head.bytes_per_token
        ));
    }
    Ok(Loaded {
        tokens: head.tokens,
        bytes: size,
    })
}

/// How many leading tokens of `prompt` the cache covers.
pub(crate) fn reusable_prefix(cache: &[i32], prompt: &[i32]) -> usize {
    cache.iter().zip(prompt).take_while(|(a, b)| a == b).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_size_and_damage() {
        let dir = std::env::temp_dir().join(format!("rkllm-pc-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.bin");
        let tokens = [2, 106, 1645, 108];
        let size = save(&path, "m/builtin", 1000, &tokens).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
        let head_len = size - 4000;
        assert_eq!(head_len as usize, header("m/builtin", 1000, &tokens).len());
        let loaded = load(&path, "m/builtin", 1000).unwrap();
        assert_eq!((loaded.tokens, loaded.bytes), (tokens.to_vec(), size));
        // Another model, another geometry.
        assert!(load(&path, "n/builtin", 1000)
            .unwrap_err()
            .contains("another model"));
        assert!(load(&path, "m/builtin", 999)
            .unwrap_err()
            .contains("another model"));
        // A flipped byte in the header, a truncated payload.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(load(&path, "m/builtin", 1000)
            .unwrap_err()
            .contains("invalid"));
        save(&path, "m/builtin", 1000, &tokens).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(size - 1)
            .unwrap();
        assert!(load(&path, "m/builtin", 1000)
            .unwrap_err()
            .contains("invalid"));
        std::fs::remove_dir_all(dir).ok();
    }
}
