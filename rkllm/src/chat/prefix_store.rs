//! A prefix store: several prompt-cache files in one directory, within a disk budget, so a new
//! prompt can start from the longest prefix stored for it.
//!
//! The 1.1.x runtime reuses a loaded prompt cache for the part of the next prompt that begins
//! with the cached prompt. One rolling cache serves one conversation; a store keeps several:
//! a system prompt shared by every conversation, and each conversation's latest turn, so
//! interleaved conversations keep their reuse and a stored system prompt survives a restart.
//!
//! * **Keys.** An entry belongs to a [`CacheContext`]: the model file (its canonical path, size
//!   and modification time), the runtime version and the chat template. A lookup only
//!   considers entries of the store's own context, so a cache is never used across a model,
//!   runtime or template change. Within a context, an entry is keyed by its prefix (token ids
//!   or text).
//! * **Lookup** ([`PrefixStore::lookup`]) finds the longest stored prefix the prompt begins
//!   with. Before handing out a file, the store checks it is the file it recorded (size,
//!   modification time, and a checksum of its first 64 KiB); a file that changed, shrank or
//!   vanished is removed with its entry and never loaded.
//! * **Saving** is two steps: [`PrefixStore::prepare_save`] names a new file for the runtime to
//!   write (`save_prompt_cache`), [`PrefixStore::commit`] records it once the run is over.
//! * **Budget.** The files' total size stays within the budget: committing evicts the least
//!   recently used entries (their files are deleted), and a file larger than the budget is
//!   deleted instead of stored.
//! * **Persistence.** The entries are kept in an index file in the directory, written
//!   atomically (a temporary file renamed over the old one, not synced) with a checksum. An index that is
//!   damaged or not this store's is refused: the store starts empty and deletes the cache
//!   files it named (every `rkllm-prefix-*.cache` of the directory), so nothing from it is
//!   ever loaded. Cache files the index does not name (left by a crash between saving and
//!   committing) are deleted when the store opens.
//! * **Where.** A tmpfs (or ramfs) directory is refused unless
//!   [`StoreOptions::allow_tmpfs`] is set: caches of a few hundred megabytes there take the RAM
//!   the model needs. (Linux only; elsewhere the check does nothing.)
//! * **Whether it pays.** [`ReuseCost`] compares the prefill a cache saves with the time its
//!   file takes to read or write at the disk's measured speed.
//!
//! One store object should own a directory at a time. Users reach the store through
//! [`PromptCacheConfig`](super::PromptCacheConfig) and [`ChatSession`](super::ChatSession);
//! its tests are in `prefix_store_tests.rs`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::{Error, Result};

/// `statfs` `f_type` of a tmpfs.
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `statfs` `f_type` of a ramfs (also RAM, refused like a tmpfs).
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The index file's name in the store's directory.
const INDEX: &str = "rkllm-prefix-store.index";
/// The temporary name the index is written under before it replaces the old one.
const INDEX_TMP: &str = "rkllm-prefix-store.index.tmp";
/// The first line of an index file.
const INDEX_MAGIC: &str = "rkllm-prefix-store 1";
/// Cache files are named `rkllm-prefix-<16 hex digits>.cache`.
const FILE_PREFIX: &str = "rkllm-prefix-";
const FILE_SUFFIX: &str = ".cache";
/// How much of a cache file its checksum covers.
const FINGERPRINT_BYTES: u64 = 64 * 1024;

/// The model file a cache was made with: canonical path, size and modification time. A model
/// replaced in place (same path, new file) has another identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelFileIdentity {
    path: PathBuf,
    size: u64,
    modified_nanos: u128,
}

impl ModelFileIdentity {
    /// The identity of the model file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be found or its metadata read.
    pub fn of_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let canonical = std::fs::canonicalize(path).map_err(io)?;
        let meta = std::fs::metadata(&canonical).map_err(io)?;
        Ok(ModelFileIdentity {
            path: canonical,
            size: meta.len(),
            modified_nanos: modified_nanos(&meta),
        })
    }

    /// An identity from known values (a model on another machine, or a test).
    pub fn new(path: impl Into<PathBuf>, size: u64, modified_unix_nanos: u128) -> Self {
        ModelFileIdentity {
            path: path.into(),
            size,
            modified_nanos: modified_unix_nanos,
        }
    }
}

/// Everything a prompt cache depends on besides its prompt: the model file, the runtime version
/// and the chat template. Entries of another context are never used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheContext {
    model: ModelFileIdentity,
    runtime_version: String,
    template: String,
}

impl CacheContext {
    /// A context: the model, the runtime version (e.g. `"1.1.1"`) and an id of the template
    /// and its settings (e.g. `"gemma2/merge"`).
    pub fn new(
        model: ModelFileIdentity,
        runtime_version: impl Into<String>,
        template_id: impl Into<String>,
    ) -> Self {
        CacheContext {
            model,
            runtime_version: runtime_version.into(),
            template: template_id.into(),
        }
    }
}

/// A stored prefix: token ids (token mode) or prompt text (text mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Prefix {
    /// Token ids, as sent with `RKLLM_INPUT_TOKEN`.
    Tokens(Vec<u32>),
    /// Prompt text, as sent with `RKLLM_INPUT_PROMPT`.
    Text(String),
}

impl Prefix {
    /// Its length: tokens, or bytes of text.
    pub fn len(&self) -> usize {
        match self {
            Prefix::Tokens(t) => t.len(),
            Prefix::Text(s) => s.len(),
        }
    }

    /// Whether `prompt` begins with this prefix (a token prefix only matches token prompts,
    /// a text prefix only text prompts).
    pub fn is_prefix_of(&self, prompt: PromptRef<'_>) -> bool {
        match (self, prompt) {
            (Prefix::Tokens(p), PromptRef::Tokens(t)) => t.starts_with(p),
            (Prefix::Text(p), PromptRef::Text(t)) => t.starts_with(p.as_str()),
            _ => false,
        }
    }
}

/// A prompt to look up: token ids or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptRef<'a> {
    /// Token ids.
    Tokens(&'a [u32]),
    /// Prompt text.
    Text(&'a str),
}

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    budget_bytes: u64,
    max_entries: Option<usize>,
    allow_tmpfs: bool,
}

impl StoreOptions {
    /// At most `budget_bytes` of cache files; a tmpfs directory refused.
    pub fn new(budget_bytes: u64) -> Self {
        StoreOptions {
            budget_bytes,
            max_entries: None,
            allow_tmpfs: false,
        }
    }

    /// At most `max_entries` entries besides the byte budget (at least 1); `1` keeps only the
    /// latest save, like a single rolling cache.
    pub fn max_entries(mut self, max_entries: usize) -> Self {
        self.max_entries = Some(max_entries.max(1));
        self
    }

    /// Accepts a tmpfs or ramfs directory (its files take RAM).
    pub fn allow_tmpfs(mut self, allow: bool) -> Self {
        self.allow_tmpfs = allow;
        self
    }
}

/// A stored prefix found for a prompt, or just committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPrefix {
    /// The cache file, to load with the runtime's prompt-cache loader.
    pub path: PathBuf,
    /// The prefix's length: tokens, or bytes of text.
    pub prefix_len: usize,
    /// The file's size.
    pub bytes: u64,
}

/// A cache file named for the runtime to write; [`PrefixStore::commit`] records it.
#[derive(Debug)]
#[must_use = "commit the save once the runtime has written the file"]
pub struct PendingSave {
    id: u64,
    path: PathBuf,
    prefix: Prefix,
}

impl PendingSave {
    /// Where the runtime should save the prompt cache.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The prefix being saved.
    pub fn prefix(&self) -> &Prefix {
        &self.prefix
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: u64,
    context: CacheContext,
    prefix: Prefix,
    bytes: u64,
    modified_nanos: u128,
    fingerprint: u64,
    last_used: u64,
}

/// Several prompt-cache files in a directory within a disk budget, found by the longest prefix
/// a prompt begins with, evicted least recently used first. See the [module docs](self).
#[derive(Debug)]
pub struct PrefixStore {
    dir: PathBuf,
    options: StoreOptions,
    context: CacheContext,
    entries: Vec<Entry>,
    clock: u64,
    next_id: u64,
}

impl PrefixStore {
    /// Opens (or creates) the store in `dir` for `context`: reads its index, deletes cache
    /// files the index does not name, and evicts down to the budget.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a tmpfs or ramfs directory without
    /// [`StoreOptions::allow_tmpfs`]; [`Error::Io`] when the directory cannot be created,
    /// read or written.
    pub fn open(
        dir: impl AsRef<Path>,
        context: CacheContext,
        options: StoreOptions,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        // The filesystem is checked before anything is created: a refused directory is left
        // as it was.
        let existing = dir
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or(Path::new("."));
        check_filesystem(
            crate::os::filesystem_magic(existing).map_err(io_err(existing))?,
            options.allow_tmpfs,
        )
        .map_err(|reason| Error::InvalidParameter {
            name: "prefix store directory",
            reason: format!("{}: {reason}", dir.display()),
        })?;
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut store = PrefixStore {
            dir,
            options,
            context,
            entries: Vec::new(),
            clock: 0,
            next_id: 1,
        };
        let index_path = store.dir.join(INDEX);
        match std::fs::read(&index_path) {
            Ok(bytes) => match parse_index(&bytes) {
                Some((clock, next_id, entries)) => {
                    store.clock = clock;
                    store.next_id = next_id;
                    store.entries = entries;
                }
                None => log::warn!(
                    "prefix store index {} is damaged or not a prefix store's: ignored, its \
                     cache files deleted",
                    index_path.display()
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&index_path)(e)),
        }
        store.remove_orphans()?;
        store.evict_to(store.options.budget_bytes, None);
        store.save_index()?;
        Ok(store)
    }

    /// The context lookups and saves use now.
    pub fn context(&self) -> &CacheContext {
        &self.context
    }

    /// Switches the context lookups and saves use (another template, say); entries of other
    /// contexts stay stored, never used by lookups of this one.
    pub fn set_context(&mut self, context: CacheContext) {
        self.context = context;
    }

    /// Deletes every entry of every context, its file, and the index file.
    ///
    /// # Errors
    /// [`Error::Io`] when the index file exists and cannot be deleted.
    pub fn remove_all(&mut self) -> Result<()> {
        for entry in std::mem::take(&mut self.entries) {
            self.delete_file(entry.id);
        }
        let index = self.dir.join(INDEX);
        match std::fs::remove_file(&index) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&index)(e)),
        }
    }

    /// Entries stored (every context).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total size of the stored files (every context).
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Whether `prefix` is stored for this store's context.
    pub fn contains(&self, prefix: &Prefix) -> bool {
        self.entries
            .iter()
            .any(|e| e.context == self.context && &e.prefix == prefix)
    }

    /// The longest stored prefix of this context that `prompt` begins with, marked as used.
    /// Entries whose file changed or vanished are removed on the way and never returned.
    pub fn lookup(&mut self, prompt: PromptRef<'_>) -> Option<StoredPrefix> {
        loop {
            let best = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.context == self.context && e.prefix.is_prefix_of(prompt))
                .max_by_key(|(_, e)| (e.prefix.len(), e.last_used))
                .map(|(i, _)| i)?;
            let path = self.file_path(self.entries[best].id);
            if self.file_matches(&self.entries[best], &path) {
                self.clock += 1;
                let entry = &mut self.entries[best];
                entry.last_used = self.clock;
                let hit = StoredPrefix {
                    path,
                    prefix_len: entry.prefix.len(),
                    bytes: entry.bytes,
                };
                if let Err(e) = self.save_index() {
                    log::warn!("prefix store index not updated: {e}");
                }
                return Some(hit);
            }
            log::warn!(
                "prefix store file {} changed since it was stored: removed, not loaded",
                path.display()
            );
            let entry = self.entries.remove(best);
            self.delete_file(entry.id);
            if let Err(e) = self.save_index() {
                log::warn!("prefix store index not updated: {e}");
            }
        }
    }

    /// Names a new cache file for `prefix`; have the runtime save the prompt cache there, then
    /// [`commit`](Self::commit) it.
    pub fn prepare_save(&mut self, prefix: Prefix) -> PendingSave {
        let id = self.next_id;
        self.next_id += 1;
        PendingSave {
            id,
            path: self.file_path(id),
            prefix,
        }
    }

    /// Records the file the runtime wrote for `pending`, replacing an entry of the same prefix,
    /// and evicts the least recently used entries until the total fits the budget. A file
    /// larger than the whole budget is deleted and `None` returned.
    ///
    /// # Errors
    /// [`Error::Io`] when the file is missing or unreadable, or the index cannot be written.
    pub fn commit(&mut self, pending: PendingSave) -> Result<Option<StoredPrefix>> {
        let PendingSave { id, path, prefix } = pending;
        let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
        let bytes = meta.len();
        if bytes > self.options.budget_bytes {
            self.delete_file(id);
            return Ok(None);
        }
        let fingerprint = fingerprint(&path, bytes).map_err(io_err(&path))?;
        let replaced: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.context == self.context && e.prefix == prefix)
            .map(|e| e.id)
            .collect();
        self.entries.retain(|e| !replaced.contains(&e.id));
        for old in replaced {
            self.delete_file(old);
        }
        self.clock += 1;
        let prefix_len = prefix.len();
        self.entries.push(Entry {
            id,
            context: self.context.clone(),
            prefix,
            bytes,
            modified_nanos: modified_nanos(&meta),
            fingerprint,
            last_used: self.clock,
        });
        self.evict_to(self.options.budget_bytes, Some(id));
        self.save_index()?;
        Ok(Some(StoredPrefix {
            path,
            prefix_len,
            bytes,
        }))
    }

    /// Forgets a prepared save whose run failed, deleting whatever was written.
    pub fn abandon(&mut self, pending: PendingSave) {
        self.delete_file(pending.id);
    }

    /// Removes the entry of `prefix` in this context and its file; whether there was one.
    ///
    /// # Errors
    /// [`Error::Io`] when the index cannot be written.
    pub fn remove(&mut self, prefix: &Prefix) -> Result<bool> {
        let Some(i) = self
            .entries
            .iter()
            .position(|e| e.context == self.context && &e.prefix == prefix)
        else {
            return Ok(false);
        };
        let entry = self.entries.remove(i);
        self.delete_file(entry.id);
        self.save_index()?;
        Ok(true)
    }

    fn file_path(&self, id: u64) -> PathBuf {
        self.dir
            .join(format!("{FILE_PREFIX}{id:016x}{FILE_SUFFIX}"))
    }

    fn delete_file(&self, id: u64) {
        let path = self.file_path(id);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("prefix store file {} not deleted: {e}", path.display());
            }
        }
    }

    /// Whether the file is still the one recorded.
    fn file_matches(&self, entry: &Entry, path: &Path) -> bool {
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        meta.len() == entry.bytes
            && modified_nanos(&meta) == entry.modified_nanos
            && fingerprint(path, entry.bytes).is_ok_and(|f| f == entry.fingerprint)
    }

    /// Evicts least recently used entries (never `keep`) until the total is within `budget`.
    fn evict_to(&mut self, budget: u64, keep: Option<u64>) {
        let max_entries = self.options.max_entries.unwrap_or(usize::MAX);
        while self.total_bytes() > budget || self.entries.len() > max_entries {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| Some(e.id) != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let entry = self.entries.remove(i);
            self.delete_file(entry.id);
        }
    }

    /// Deletes cache files the index does not name, and a stale temporary index.
    fn remove_orphans(&mut self) -> Result<()> {
        let read = std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))?;
        for item in read.flatten() {
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let id = name
                .strip_prefix(FILE_PREFIX)
                .and_then(|n| n.strip_suffix(FILE_SUFFIX))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            let orphan = match id {
                Some(id) => {
                    self.next_id = self.next_id.max(id + 1);
                    !self.entries.iter().any(|e| e.id == id)
                }
                None => name == INDEX_TMP,
            };
            if orphan {
                if let Err(e) = std::fs::remove_file(item.path()) {
                    log::warn!(
                        "prefix store file {} not deleted: {e}",
                        item.path().display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Writes the index atomically: a temporary file renamed over the old one. It is not
    /// synced to the disk: a sync per turn would wait for every other write on the
    /// filesystem, and an index a crash leaves damaged is refused by its checksum (the store
    /// then starts empty), so nothing stale is ever loaded.
    fn save_index(&self) -> Result<()> {
        let text = render_index(self.clock, self.next_id, &self.entries);
        let tmp = self.dir.join(INDEX_TMP);
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
            std::fs::rename(&tmp, self.dir.join(INDEX))
        };
        write().map_err(io_err(&tmp))
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

fn modified_nanos(meta: &std::fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

/// FNV-1a, 64 bits.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// A checksum of the file's size and first 64 KiB: cheap next to loading a cache, and it
/// covers the header a runtime checks.
fn fingerprint(path: &Path, bytes: u64) -> std::io::Result<u64> {
    let mut head = Vec::new();
    File::open(path)?
        .take(FINGERPRINT_BYTES)
        .read_to_end(&mut head)?;
    Ok(fnv(fnv(FNV_START, &bytes.to_le_bytes()), &head))
}

/// Whether a filesystem of type `magic` may hold the store.
fn check_filesystem(magic: Option<i64>, allow_tmpfs: bool) -> std::result::Result<(), String> {
    match magic {
        Some(TMPFS_MAGIC | RAMFS_MAGIC) if !allow_tmpfs => Err(
            "this directory is in RAM (tmpfs or ramfs): prompt caches there take the memory the \
             model needs; choose a directory on disk, or allow tmpfs explicitly"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2 + 1);
    s.push('x');
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix('x')?;
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A path from the bytes `as_encoded_bytes` gave (raw bytes on Unix; UTF-8 elsewhere, other
/// paths refused).
fn path_from_bytes(bytes: Vec<u8>) -> Option<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    }
    #[cfg(not(unix))]
    {
        String::from_utf8(bytes).ok().map(PathBuf::from)
    }
}

fn unhex_str(s: &str) -> Option<String> {
    String::from_utf8(unhex(s)?).ok()
}

/// The index's text: a magic line, the counters, one line per entry, then a checksum line of
/// everything before it.
fn render_index(clock: u64, next_id: u64, entries: &[Entry]) -> String {
    let mut s = format!("{INDEX_MAGIC}\nclock {clock} next {next_id}\n");
    for e in entries {
        let (kind, prefix) = match &e.prefix {
            Prefix::Tokens(t) => (
                "t",
                if t.is_empty() {
                    "-".to_owned()
                } else {
                    t.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                },
            ),
            Prefix::Text(text) => ("s", hex(text.as_bytes())),
        };
        let _ = writeln!(
            s,
            "entry {} {} {} {} {} {} {} {} {} {} {} {kind} {prefix}",
            e.id,
            e.bytes,
            e.modified_nanos,
            e.fingerprint,
            e.last_used,
            hex(e.context.model.path.as_os_str().as_encoded_bytes()),
            e.context.model.size,
            e.context.model.modified_nanos,
            hex(e.context.runtime_version.as_bytes()),
            hex(e.context.template.as_bytes()),
            e.prefix.len(),
        );
    }
    let sum = fnv(FNV_START, s.as_bytes());
    let _ = writeln!(s, "checksum {sum:016x}");
    s
}

/// Reads an index; `None` when it is damaged or not a prefix store's.
fn parse_index(bytes: &[u8]) -> Option<(u64, u64, Vec<Entry>)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
    let (body, last) = text.split_at(body_end);
    let sum = u64::from_str_radix(last.trim_end().strip_prefix("checksum ")?, 16).ok()?;
    if sum != fnv(FNV_START, body.as_bytes()) {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != INDEX_MAGIC {
        return None;
    }
    let counters: Vec<&str> = lines.next()?.split(' ').collect();
    let ["clock", clock, "next", next_id] = counters.as_slice() else {
        return None;
    };
    let (clock, next_id) = (clock.parse().ok()?, next_id.parse().ok()?);
    let mut entries = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split(' ').collect();
        let ["entry", id, bytes, modified, fp, used, mpath, msize, mmod, runtime, template, len, kind, prefix] =
            f.as_slice()
        else {
            return None;
        };
        let prefix = match (*kind, *prefix) {
            ("t", "-") => Prefix::Tokens(Vec::new()),
            ("t", list) => Prefix::Tokens(
                list.split(',')
                    .map(|t| t.parse().ok())
                    .collect::<Option<Vec<u32>>>()?,
            ),
            ("s", text) => Prefix::Text(unhex_str(text)?),
            _ => return None,
        };
        if prefix.len() != len.parse::<usize>().ok()? {
            return None;
        }
        let model = ModelFileIdentity {
            path: path_from_bytes(unhex(mpath)?)?,
            size: msize.parse().ok()?,
            modified_nanos: mmod.parse().ok()?,
        };
        entries.push(Entry {
            id: id.parse().ok()?,
            context: CacheContext {
                model,
                runtime_version: unhex_str(runtime)?,
                template: unhex_str(template)?,
            },
            prefix,
            bytes: bytes.parse().ok()?,
            modified_nanos: modified.parse().ok()?,
            fingerprint: fp.parse().ok()?,
            last_used: used.parse().ok()?,
        });
    }
    Some((clock, next_id, entries))
}

/// Whether reusing or saving a prompt cache pays, from the prefill it saves and the disk time
/// it costs.
///
/// Every figure is the caller's: the prefill speed of the model on the board, the cache's
/// size per token (the probe measures it; for a model's KV shape it is `layers × 2 × kv_heads
/// × head_dim × bytes per value`), and the disk's speed measured where the caches go.
///
/// See `an_sd_card_is_too_slow_for_the_cache` in the tests for an example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReuseCost {
    /// Seconds of prefill per prompt token.
    pub prefill_seconds_per_token: f64,
    /// Bytes of prompt cache per prompt token.
    pub cache_bytes_per_token: f64,
    /// Disk read throughput where the caches are, bytes per second.
    pub read_bytes_per_second: f64,
    /// Disk write throughput where the caches are, bytes per second.
    pub write_bytes_per_second: f64,
}

impl ReuseCost {
    /// A cost model with one disk speed for reading and writing.
    #[cfg(test)]
    pub fn new(
        prefill_seconds_per_token: f64,
        cache_bytes_per_token: f64,
        disk_bytes_per_second: f64,
    ) -> Self {
        ReuseCost {
            prefill_seconds_per_token,
            cache_bytes_per_token,
            read_bytes_per_second: disk_bytes_per_second,
            write_bytes_per_second: disk_bytes_per_second,
        }
    }

    /// Seconds to prefill `tokens`.
    pub fn prefill_seconds(&self, tokens: usize) -> f64 {
        tokens as f64 * self.prefill_seconds_per_token
    }

    /// Bytes of a cache of `tokens`.
    pub fn cache_bytes(&self, tokens: usize) -> f64 {
        tokens as f64 * self.cache_bytes_per_token
    }

    /// Seconds to read `bytes` (infinite without a positive read speed).
    pub fn read_seconds(&self, bytes: f64) -> f64 {
        seconds(bytes, self.read_bytes_per_second)
    }

    /// Seconds to write `bytes` (infinite without a positive write speed).
    pub fn write_seconds(&self, bytes: f64) -> f64 {
        seconds(bytes, self.write_bytes_per_second)
    }

    /// Whether loading a cache of a `prefix_tokens` prefix costs less than prefilling it (the
    /// probe's advice; the chat session compares whole turns, see `chat::cache`).
    #[cfg(any(test, feature = "probe"))]
    pub fn should_reuse(&self, prefix_tokens: usize) -> bool {
        self.should_reuse_file(prefix_tokens, self.cache_bytes(prefix_tokens) as u64)
    }

    /// Whether loading a cache file of `file_bytes` (its real size, when known) costs less
    /// than prefilling the `prefix_tokens` it covers.
    #[cfg(any(test, feature = "probe"))]
    pub fn should_reuse_file(&self, prefix_tokens: usize, file_bytes: u64) -> bool {
        prefix_tokens > 0
            && self.read_seconds(file_bytes as f64) < self.prefill_seconds(prefix_tokens)
    }

    /// Whether saving a cache of `prefix_tokens` pays, when it is expected to be loaded
    /// `expected_reuses` times: each reuse must save more prefill than its load costs, and
    /// together they must save more than the write costs.
    pub fn should_save(&self, prefix_tokens: usize, expected_reuses: f64) -> bool {
        let bytes = self.cache_bytes(prefix_tokens);
        let gain_per_reuse = self.prefill_seconds(prefix_tokens) - self.read_seconds(bytes);
        prefix_tokens > 0
            && gain_per_reuse > 0.0
            && expected_reuses * gain_per_reuse > self.write_seconds(bytes)
    }
}

fn seconds(bytes: f64, per_second: f64) -> f64 {
    if per_second > 0.0 {
        bytes / per_second
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
#[path = "prefix_store_tests.rs"]
mod behaviour;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_check() {
        assert!(check_filesystem(Some(TMPFS_MAGIC), false).is_err());
        assert!(check_filesystem(Some(RAMFS_MAGIC), false).is_err());
        assert!(check_filesystem(Some(TMPFS_MAGIC), true).is_ok());
        assert!(check_filesystem(Some(0xef53), false).is_ok());
        assert!(check_filesystem(None, false).is_ok());
    }

    #[test]
    fn index_round_trip_and_damage() {
        let context = CacheContext::new(
            ModelFileIdentity::new("/models/a b.rkllm", 10, 123),
            "1.1.1",
            "gemma2 merge",
        );
        let entries = vec![
            Entry {
                id: 3,
                context: context.clone(),
                prefix: Prefix::Tokens(vec![2, 106, 1645]),
                bytes: 4096,
                modified_nanos: 77,
                fingerprint: 9,
                last_used: 5,
            },
            Entry {
                id: 4,
                context,
                prefix: Prefix::Text("<bos>line\none two".to_owned()),
                bytes: 1,
                modified_nanos: 0,
                fingerprint: u64::MAX,
                last_used: 6,
            },
        ];
        let text = render_index(6, 5, &entries);
        assert_eq!(parse_index(text.as_bytes()), Some((6, 5, entries)));
        let damaged = text.replacen("4096", "4097", 1);
        assert_eq!(parse_index(damaged.as_bytes()), None);
        assert_eq!(parse_index(b"{\"format\": \"something else\"}"), None);
        assert_eq!(parse_index(b""), None);
    }

    #[test]
    fn prefixes_match_their_own_kind_only() {
        let tokens = Prefix::Tokens(vec![1, 2]);
        assert!(tokens.is_prefix_of(PromptRef::Tokens(&[1, 2, 3])));
        assert!(!tokens.is_prefix_of(PromptRef::Tokens(&[1, 3])));
        assert!(!tokens.is_prefix_of(PromptRef::Text("12")));
        let text = Prefix::Text("<bos>Hi".to_owned());
        assert!(text.is_prefix_of(PromptRef::Text("<bos>Hi there")));
        assert!(!text.is_prefix_of(PromptRef::Text("<bos>H")));
    }
}
