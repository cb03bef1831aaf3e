//! The chat session's prompt cache: a [`PrefixStore`] driven turn by turn, and the cost model
//! that decides, from what it measures as the session runs, whether loading or saving a cache
//! is worth its disk time.
//!
//! [`ChatSession`](super::ChatSession) calls it at two points of a turn: before the run
//! ([`PromptCacheState::prepare`]: find the longest stored prefix of the prompt, load it if it
//! pays, name a file for the run to save if saving pays) and after it
//! ([`PromptCacheState::finish`]: record the saved file, and the turn's measurements).
//!
//! ## What it measures
//!
//! Prompt lengths count tokens in token mode and bytes of text in text mode; each mode has its
//! own figures ("units" below).
//!
//! * **Prefill seconds per unit:** the time to first token minus the cache load and one decode
//!   step, over the units prefilled. Before the first turn: Gemma2-2B's 5.35 ms per token on
//!   RK3588 (the fastest published prefill, so the least favourable to the cache), a quarter
//!   of it per byte of text.
//! * **Cache bytes per unit:** the saved files' sizes over their prompts' lengths.
//! * **Disk read and write speed:** bytes over the time of each load
//!   (`rkllm_load_prompt_cache`) and each save (the time `rkllm_run` takes after its last
//!   token). Before any measurement: 20 MB/s, a slow SD card
//!   ([`DEFAULT_DISK_BYTES_PER_SECOND`]); a read speed not yet measured takes the write speed.
//!
//! ## What it decides (cost-aware mode, the default)
//!
//! * A turn starts the cheapest way: with the cache already loaded (its prefix reused, the rest
//!   prefilled), with the longest stored prefix loaded (its read plus the rest's prefill), or
//!   from nothing (the whole prefill). Keeping a loaded cache a turn or two behind often beats
//!   reading a newer, larger file.
//! * A turn's prompt is saved only when one reuse of it (by the conversation's next turn)
//!   saves more prefill than its write and its read cost together. Until the session has saved
//!   once, it has no cache size to judge with: the first turn saves (the measuring save).
//!
//! So on a disk too slow for the model, the cache stops saving after one turn and loads
//! nothing, and every turn costs what it costs without a cache.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::prefix_store::{
    CacheContext, ModelFileIdentity, PendingSave, Prefix, PrefixStore, PromptRef, ReuseCost,
    StoreOptions, StoredPrefix,
};
use super::Conversation;
use crate::error::{Error, Result};
use crate::input::{GenerateOptions, Input};
use crate::session::Session;
use crate::stream::{FinishReason, Timings};

/// The disk budget of [`PromptCacheConfig::new`]: 1 GiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 1 << 30;
/// The disk speed assumed before the session has measured one: 20 MB/s, a slow SD card.
pub const DEFAULT_DISK_BYTES_PER_SECOND: f64 = 20e6;
/// The prefill speed assumed before the session has measured one: Gemma2-2B w8a8 on RK3588,
/// 342 ms for 64 tokens (the vendor's table for runtime 1.1), the fastest published figure.
pub const DEFAULT_PREFILL_SECONDS_PER_TOKEN: f64 = 0.342_29 / 64.0;
/// Bytes of prompt text per token assumed to turn the default prefill speed into one per byte.
const TEXT_BYTES_PER_TOKEN: f64 = 4.0;

/// How [`ChatSession::enable_prompt_cache`](super::ChatSession::enable_prompt_cache) caches.
///
/// * [`new`](Self::new): a prefix store in `dir`, cost-aware, files kept across restarts, a
///   1 GiB budget.
/// * [`rolling`](Self::rolling): one cache file, the last turn's, always used, deleted when
///   the cache is turned off (the behaviour before the prefix store).
///
/// A directory in RAM (tmpfs or ramfs, such as `/tmp` or `/dev/shm` on many images) is refused
/// unless [`allow_tmpfs`](Self::allow_tmpfs) is set: a cache there spends the memory the
/// model needs, a few hundred megabytes per long conversation.
///
/// A path converts into `PromptCacheConfig::rolling(path)`, the behaviour
/// `enable_prompt_cache(dir)` always had; the prefix store needs `PromptCacheConfig::new`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptCacheConfig {
    pub(crate) dir: PathBuf,
    budget_bytes: u64,
    max_entries: Option<usize>,
    allow_tmpfs: bool,
    keep_files: bool,
    cost_aware: bool,
    disk_bytes_per_second: f64,
    prefill_seconds_per_token: f64,
    cache_bytes_per_token: Option<f64>,
}

impl PromptCacheConfig {
    /// A cost-aware prefix store in `dir` within [`DEFAULT_BUDGET_BYTES`], its files kept when
    /// the session ends (a stored system prefix serves the next process).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PromptCacheConfig {
            dir: dir.into(),
            budget_bytes: DEFAULT_BUDGET_BYTES,
            max_entries: None,
            allow_tmpfs: false,
            keep_files: true,
            cost_aware: true,
            disk_bytes_per_second: DEFAULT_DISK_BYTES_PER_SECOND,
            prefill_seconds_per_token: DEFAULT_PREFILL_SECONDS_PER_TOKEN,
            cache_bytes_per_token: None,
        }
    }

    /// One rolling cache file in `dir`: each turn saves its prompt and the next turn loads it,
    /// whatever the disk costs; the file is deleted when the cache is turned off or the
    /// session dropped.
    pub fn rolling(dir: impl Into<PathBuf>) -> Self {
        PromptCacheConfig {
            max_entries: Some(1),
            keep_files: false,
            cost_aware: false,
            ..PromptCacheConfig::new(dir)
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// At most `bytes` of cache files; the least recently used are deleted first.
    pub fn budget_bytes(mut self, bytes: u64) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// At most `entries` cache files (at least 1) besides the byte budget.
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.max_entries = Some(entries.max(1));
        self
    }

    /// Accepts a directory in RAM (tmpfs or ramfs). Its files take memory the model needs.
    pub fn allow_tmpfs(mut self, allow: bool) -> Self {
        self.allow_tmpfs = allow;
        self
    }

    /// Whether the files stay when the cache is turned off or the session dropped (default
    /// `true` for [`new`](Self::new)); `false` deletes them and the index.
    pub fn keep_files(mut self, keep: bool) -> Self {
        self.keep_files = keep;
        self
    }

    /// Whether loads and saves are weighed against the prefill they save (default `true` for
    /// [`new`](Self::new)); `false` loads every match and saves every turn.
    pub fn cost_aware(mut self, on: bool) -> Self {
        self.cost_aware = on;
        self
    }

    /// The disk speed to assume until the session has measured one (bytes per second; the
    /// probe's figure for the board, say). Default [`DEFAULT_DISK_BYTES_PER_SECOND`].
    pub fn disk_bytes_per_second(mut self, bytes_per_second: f64) -> Self {
        self.disk_bytes_per_second = bytes_per_second;
        self
    }

    /// The cache size per prompt token to assume until the session has saved a cache (the
    /// probe's figure for the model, say). Without it, the first turn saves to measure it.
    pub fn cache_bytes_per_token(mut self, bytes: f64) -> Self {
        self.cache_bytes_per_token = Some(bytes);
        self
    }

    /// The prefill speed to assume until the session has measured one. Default
    /// [`DEFAULT_PREFILL_SECONDS_PER_TOKEN`].
    pub fn prefill_seconds_per_token(mut self, seconds: f64) -> Self {
        self.prefill_seconds_per_token = seconds;
        self
    }
}

impl From<PathBuf> for PromptCacheConfig {
    fn from(dir: PathBuf) -> Self {
        PromptCacheConfig::rolling(dir)
    }
}

impl From<String> for PromptCacheConfig {
    fn from(dir: String) -> Self {
        PromptCacheConfig::rolling(dir)
    }
}

impl<T: AsRef<Path> + ?Sized> From<&T> for PromptCacheConfig {
    fn from(dir: &T) -> Self {
        PromptCacheConfig::rolling(dir.as_ref())
    }
}

/// What the prompt cache did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChatCacheStats {
    /// Turns that ran with a stored prefix loaded.
    pub reused: u64,
    /// Turns that prefilled in full (nothing stored for the prompt, or not worth loading).
    pub rebuilt: u64,
    /// Of the rebuilt turns, those where a stored prefix matched but loading it would have
    /// cost more than prefilling it.
    pub load_skipped: u64,
    /// Turns whose prompt was not saved because the save would not pay.
    pub save_skipped: u64,
    /// Prompt units (tokens, or bytes of text) covered by the prefixes loaded.
    pub reused_units: u64,
    /// Bytes of cache files loaded.
    pub loaded_bytes: u64,
    /// Bytes of cache files saved.
    pub saved_bytes: u64,
}

/// The figures the cost-aware cache decides with, measured or assumed.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct CacheEstimates {
    /// Seconds of prefill per prompt unit (token, or byte of text).
    pub prefill_seconds_per_unit: f64,
    /// Cache bytes per prompt unit (`None` before the first save, unless configured).
    pub cache_bytes_per_unit: Option<f64>,
    /// Disk read speed, bytes per second.
    pub read_bytes_per_second: f64,
    /// Disk write speed, bytes per second.
    pub write_bytes_per_second: f64,
    /// Whether the prefill speed was measured (else it is the configured default).
    pub prefill_measured: bool,
    /// Whether the read speed was measured (else the write speed or the default).
    pub read_measured: bool,
    /// Whether the write speed was measured (else the read speed or the default).
    pub write_measured: bool,
}

/// Sums behind one ratio.
#[derive(Clone, Copy, Debug, Default)]
struct Ratio {
    num: f64,
    den: f64,
}

impl Ratio {
    fn add(&mut self, num: f64, den: f64) {
        if num.is_finite() && den > 0.0 && num >= 0.0 {
            self.num += num;
            self.den += den;
        }
    }

    fn get(&self) -> Option<f64> {
        (self.den > 0.0 && self.num > 0.0).then(|| self.num / self.den)
    }
}

/// Token mode and text mode count prompts in different units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Token = 0,
    TextByte = 1,
}

fn unit_of(prefix: &Prefix) -> Unit {
    match prefix {
        Prefix::Tokens(_) => Unit::Token,
        Prefix::Text(_) => Unit::TextByte,
    }
}

fn prompt_ref(prefix: &Prefix) -> PromptRef<'_> {
    match prefix {
        Prefix::Tokens(t) => PromptRef::Tokens(t),
        Prefix::Text(s) => PromptRef::Text(s),
    }
}

/// How a turn starts.
#[derive(Debug)]
enum Plan {
    /// With the loaded cache, which covers this many units.
    Keep(usize),
    /// With this stored prefix loaded.
    Load(StoredPrefix),
    /// With nothing reused.
    Fresh,
}

/// What one turn arranged, for [`PromptCacheState::finish`].
#[derive(Debug)]
pub(crate) struct PendingTurn {
    save: Option<PendingSave>,
    unit: Unit,
    prompt_units: usize,
    reused_units: usize,
    load: Duration,
    /// The loaded entry, when it was this session's own turn entry (superseded by the save).
    superseded: Option<Prefix>,
    /// A prefix stored for every conversation (never superseded by a turn).
    shared: bool,
}

/// The cache's state, owned by the chat session.
#[derive(Debug)]
pub(crate) struct PromptCacheState {
    store: PrefixStore,
    config: PromptCacheConfig,
    model: ModelFileIdentity,
    runtime_version: String,
    /// The cache file loaded into the runtime, and its prefix.
    loaded: Option<(PathBuf, Prefix)>,
    /// Entries saved by this session's chat turns (a conversation's latest prompt): dropped
    /// when the conversation's next save supersedes them. Other entries (stored system
    /// prefixes, entries from earlier processes) leave only by eviction.
    turn_entries: HashSet<Prefix>,
    stats: ChatCacheStats,
    prefill: [Ratio; 2],
    cache_size: [Ratio; 2],
    decode: Ratio,
    read: Ratio,
    write: Ratio,
    /// A turn whose stream was dropped while its run was in flight, with its timings then:
    /// the runtime may still be writing its cache file, so it is recorded (or abandoned) by
    /// the session's next use of the cache, once the run has returned.
    dropped: Option<(PendingTurn, bool, Timings)>,
}

impl PendingTurn {
    /// Where the run should save its prompt cache, when it should.
    pub(crate) fn save_path(&self) -> Option<&Path> {
        self.save.as_ref().map(PendingSave::path)
    }
}

impl PromptCacheState {
    /// Opens the store for `session`'s model.
    pub(crate) fn open(session: &Session, config: PromptCacheConfig) -> Result<Self> {
        let model = session.model();
        let identity = ModelFileIdentity::of_file(model.path()).unwrap_or_else(|e| {
            // The file went after the load: an identity no stored entry has, nor will have.
            log::warn!(target: "rkllm", "prompt cache: the model file cannot be identified \
                ({e}); nothing stored before is used, and nothing stored now will be");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            ModelFileIdentity::new(model.path(), u64::MAX, now)
        });
        let runtime_version = model
            .init_diagnosis()
            .runtime_version()
            .unwrap_or("unknown")
            .to_owned();
        let mut options = StoreOptions::new(config.budget_bytes).allow_tmpfs(config.allow_tmpfs);
        if let Some(n) = config.max_entries {
            options = options.max_entries(n);
        }
        let context = CacheContext::new(identity.clone(), runtime_version.clone(), "");
        let store = PrefixStore::open(&config.dir, context, options)?;
        Ok(PromptCacheState {
            store,
            config,
            model: identity,
            runtime_version,
            loaded: None,
            turn_entries: HashSet::new(),
            stats: ChatCacheStats::default(),
            prefill: [Ratio::default(); 2],
            cache_size: [Ratio::default(); 2],
            decode: Ratio::default(),
            read: Ratio::default(),
            write: Ratio::default(),
            dropped: None,
        })
    }

    pub(crate) fn stats(&self) -> ChatCacheStats {
        self.stats
    }

    /// The figures for prompts counted in `unit`.
    fn estimates(&self, unit: Unit) -> CacheEstimates {
        let u = unit as usize;
        let per_unit = match unit {
            Unit::Token => 1.0,
            Unit::TextByte => 1.0 / TEXT_BYTES_PER_TOKEN,
        };
        let prior_prefill = self.config.prefill_seconds_per_token * per_unit;
        let prior_size = self.config.cache_bytes_per_token.map(|b| b * per_unit);
        let (read, write) = (self.read.get(), self.write.get());
        let prior_disk = self.config.disk_bytes_per_second;
        CacheEstimates {
            prefill_seconds_per_unit: self.prefill[u].get().unwrap_or(prior_prefill),
            cache_bytes_per_unit: self.cache_size[u].get().or(prior_size),
            read_bytes_per_second: read.or(write).unwrap_or(prior_disk),
            write_bytes_per_second: write.or(read).unwrap_or(prior_disk),
            prefill_measured: self.prefill[u].get().is_some(),
            read_measured: read.is_some(),
            write_measured: write.is_some(),
        }
    }

    /// The figures for token prompts, or for text prompts when only those ran.
    pub(crate) fn current_estimates(&self) -> CacheEstimates {
        let text = Unit::TextByte as usize;
        if self.prefill[text].den > 0.0 && self.prefill[Unit::Token as usize].den == 0.0 {
            self.estimates(Unit::TextByte)
        } else {
            self.estimates(Unit::Token)
        }
    }

    fn cost(&self, unit: Unit) -> ReuseCost {
        let e = self.estimates(unit);
        ReuseCost {
            prefill_seconds_per_token: e.prefill_seconds_per_unit,
            cache_bytes_per_token: e.cache_bytes_per_unit.unwrap_or(0.0),
            read_bytes_per_second: e.read_bytes_per_second,
            write_bytes_per_second: e.write_bytes_per_second,
        }
    }

    fn set_template(&mut self, template_id: String) {
        let context = CacheContext::new(
            self.model.clone(),
            self.runtime_version.clone(),
            template_id,
        );
        if &context != self.store.context() {
            self.store.set_context(context);
        }
    }

    /// Before a run of `prompt`: loads the best stored prefix when it pays (releasing another
    /// loaded cache), and names the file the run saves to when saving pays.
    pub(crate) fn prepare(
        &mut self,
        session: &mut Session,
        conversation: &Conversation,
        prompt: Prefix,
    ) -> Result<PendingTurn> {
        self.settle(session)?;
        self.set_template(template_id(conversation, &prompt));
        let unit = unit_of(&prompt);
        let cost = self.cost(unit);
        let hit = self.store.lookup(prompt_ref(&prompt));
        let prompt_units = prompt.len();
        // The loaded cache stays usable while the prompt begins with its prefix.
        let kept = self
            .loaded
            .as_ref()
            .filter(|(_, p)| p.is_prefix_of(prompt_ref(&prompt)))
            .map(|(path, p)| (path.clone(), p.len()));
        let plan = self.plan(&cost, prompt_units, hit.as_ref(), kept.as_ref());
        if hit.is_some() && !matches!(plan, Plan::Load(_)) {
            let same = hit.as_ref().map(|h| &h.path) == kept.as_ref().map(|(p, _)| p);
            if !same {
                self.stats.load_skipped += 1;
            }
        }
        if self.loaded.is_some() && !matches!(plan, Plan::Keep(_)) {
            self.loaded = None;
            session.release_cache_raw()?;
        }
        let mut load = Duration::ZERO;
        let reused_units = match plan {
            Plan::Keep(len) => len,
            Plan::Load(hit) => {
                let started = Instant::now();
                session.load_cache_raw(&hit.path)?;
                load = started.elapsed();
                self.read.add(hit.bytes as f64, load.as_secs_f64());
                self.stats.loaded_bytes += hit.bytes;
                self.loaded = Some((hit.path.clone(), prefix_of(&prompt, hit.prefix_len)));
                hit.prefix_len
            }
            Plan::Fresh => 0,
        };
        if reused_units > 0 {
            self.stats.reused += 1;
            self.stats.reused_units += reused_units as u64;
        } else {
            self.stats.rebuilt += 1;
        }
        // The new save extends this session's own entry for the conversation: it goes.
        let superseded = hit
            .map(|h| prefix_of(&prompt, h.prefix_len))
            .filter(|p| self.turn_entries.contains(p));
        let save = if self.should_save(unit, prompt_units) {
            Some(self.store.prepare_save(prompt))
        } else {
            self.stats.save_skipped += 1;
            None
        };
        Ok(PendingTurn {
            save,
            unit,
            prompt_units,
            reused_units,
            load,
            superseded,
            shared: false,
        })
    }

    /// The cheapest way into a prompt of `units`: keep the loaded cache, load the best stored
    /// one, or prefill in full (without the cost model: load the best match).
    fn plan(
        &self,
        cost: &ReuseCost,
        units: usize,
        hit: Option<&StoredPrefix>,
        kept: Option<&(PathBuf, usize)>,
    ) -> Plan {
        let hit_is_loaded = |h: &StoredPrefix| kept.is_some_and(|(path, _)| path == &h.path);
        if !self.config.cost_aware {
            return match hit {
                Some(h) if hit_is_loaded(h) => Plan::Keep(h.prefix_len),
                Some(h) => Plan::Load(h.clone()),
                None => Plan::Fresh,
            };
        }
        let mut best = (cost.prefill_seconds(units), Plan::Fresh);
        if let Some((_, len)) = kept {
            let keep = cost.prefill_seconds(units - len);
            if keep <= best.0 {
                best = (keep, Plan::Keep(*len));
            }
        }
        if let Some(h) = hit.filter(|h| !hit_is_loaded(h)) {
            let load =
                cost.read_seconds(h.bytes as f64) + cost.prefill_seconds(units - h.prefix_len);
            if load < best.0 {
                best = (load, Plan::Load(h.clone()));
            }
        }
        best.1
    }

    fn should_save(&self, unit: Unit, prompt_units: usize) -> bool {
        if !self.config.cost_aware {
            return true;
        }
        let cost = self.cost(unit);
        if self.estimates(unit).cache_bytes_per_unit.is_none() {
            // No size to judge with yet: this save measures it (and the disk).
            return prompt_units > 0;
        }
        cost.should_save(prompt_units, 1.0)
    }

    /// A turn whose run did not start: deletes anything named for it.
    pub(crate) fn abandon(&mut self, turn: PendingTurn) {
        if let Some(pending) = turn.save {
            self.store.abandon(pending);
        }
    }

    /// Defers [`finish`](Self::finish) of a turn whose run may still be in flight (its
    /// stream was dropped) to the session's next use of the cache.
    pub(crate) fn finish_later(&mut self, turn: PendingTurn, ok: bool, timings: Timings) {
        if let Some((earlier, ok, timings)) = self.dropped.replace((turn, ok, timings)) {
            // Every turn settles the one before it first: there is none left here.
            self.finish(earlier, ok, &timings);
        }
    }

    /// Waits for a dropped turn's run to return (at most the stop timeout), then records it.
    fn settle(&mut self, session: &mut Session) -> Result<()> {
        let Some((turn, ok, timings)) = self.dropped.take() else {
            return Ok(());
        };
        // When the run did not return in time the runtime may still write the file: it is
        // neither recorded nor deleted (the model is unusable from now on anyway).
        session.wait_idle()?;
        self.finish(turn, ok, &timings);
        Ok(())
    }

    /// After the run: records the saved file (or deletes it, when the run failed) and the
    /// run's measurements.
    pub(crate) fn finish(&mut self, mut turn: PendingTurn, ok: bool, timings: &Timings) {
        let Some(pending) = turn.save.take() else {
            if ok {
                self.record_prefill(&turn, timings);
            }
            return;
        };
        if !ok || !pending.path().exists() {
            self.store.abandon(pending);
            return;
        }
        self.record_prefill(&turn, timings);
        let prefix = pending.prefix().clone();
        match self.store.commit(pending) {
            Ok(Some(stored)) => {
                self.stats.saved_bytes += stored.bytes;
                self.cache_size[turn.unit as usize]
                    .add(stored.bytes as f64, stored.prefix_len as f64);
                if let Some(save) = save_time(timings) {
                    self.write.add(stored.bytes as f64, save.as_secs_f64());
                }
                if let Some(old) = turn.superseded.filter(|old| old != &prefix) {
                    self.turn_entries.remove(&old);
                    if let Err(e) = self.store.remove(&old) {
                        log::warn!(target: "rkllm", "dropping a superseded prompt cache: {e}");
                    }
                }
                if !turn.shared {
                    self.turn_entries.insert(prefix);
                }
            }
            Ok(None) => {
                log::info!(target: "rkllm", "a prompt cache larger than the budget was not kept")
            }
            Err(e) => log::warn!(target: "rkllm", "recording the prompt cache: {e}"),
        }
    }

    fn record_prefill(&mut self, turn: &PendingTurn, timings: &Timings) {
        if timings.generated_tokens > 1 {
            self.decode.add(
                timings.decode.as_secs_f64(),
                (timings.generated_tokens - 1) as f64,
            );
        }
        let Some(ttft) = timings.time_to_first_token else {
            return;
        };
        let one_step = self.decode.get().unwrap_or(0.0);
        let prefill = ttft.as_secs_f64() - turn.load.as_secs_f64() - one_step;
        let units = turn.prompt_units.saturating_sub(turn.reused_units);
        if units > 0 && prefill > 0.0 {
            self.prefill[turn.unit as usize].add(prefill, units as f64);
        }
    }

    /// Stores `prefix` on its own (one run of it, one token generated) unless it is stored
    /// already; returns its length in units.
    pub(crate) fn store_prefix(
        &mut self,
        session: &mut Session,
        conversation: &Conversation,
        prefix: Prefix,
    ) -> Result<usize> {
        self.settle(session)?;
        self.set_template(template_id(conversation, &prefix));
        let len = prefix.len();
        if len == 0 {
            return Err(Error::InvalidInput(
                "the conversation's shared prefix is empty: nothing to store".into(),
            ));
        }
        if self.store.contains(&prefix) {
            return Ok(len);
        }
        let input = to_input(&prefix)?;
        let unit = unit_of(&prefix);
        let key = prefix.clone();
        let pending = self.store.prepare_save(prefix);
        let options = GenerateOptions::new()
            .max_tokens(1)
            .save_prompt_cache(pending.path());
        let mut stream = match session.generate(input, &options) {
            Ok(stream) => stream,
            Err(e) => {
                self.store.abandon(pending);
                return Err(e);
            }
        };
        let mut failed = None;
        for item in stream.by_ref() {
            if let Err(e) = item {
                failed.get_or_insert(e);
            }
        }
        let timings = stream.timings();
        let finished = !matches!(stream.finish_reason(), Some(FinishReason::Error) | None);
        drop(stream);
        if let Some(e) = failed {
            self.store.abandon(pending);
            return Err(e);
        }
        let turn = PendingTurn {
            save: Some(pending),
            unit,
            prompt_units: len,
            reused_units: 0,
            load: Duration::ZERO,
            superseded: None,
            shared: true,
        };
        // The loaded cache, if any, shortened this run's prefill: no prefill figure from it.
        let turn = if self.loaded.is_some() {
            PendingTurn {
                reused_units: len,
                ..turn
            }
        } else {
            turn
        };
        self.finish(turn, finished, &timings);
        if self.store.contains(&key) {
            Ok(len)
        } else {
            Err(Error::InvalidInput(
                "the runtime saved no prompt cache for the shared prefix".into(),
            ))
        }
    }

    /// Releases the loaded cache; deletes every file unless they are kept.
    pub(crate) fn close(mut self, session: &mut Session) -> Result<()> {
        self.settle(session)?;
        let released = if self.loaded.take().is_some() {
            session.release_cache_raw()
        } else {
            Ok(())
        };
        if !self.config.keep_files {
            self.store.remove_all()?;
        }
        released
    }
}

/// The time a run spent after its last token: the cache save, for a run that saved one.
fn save_time(timings: &Timings) -> Option<Duration> {
    let ttft = timings.time_to_first_token?;
    timings.total.checked_sub(ttft + timings.decode)
}

fn prefix_of(prompt: &Prefix, len: usize) -> Prefix {
    match prompt {
        Prefix::Tokens(t) => Prefix::Tokens(t[..len.min(t.len())].to_vec()),
        Prefix::Text(s) => Prefix::Text(s.get(..len).unwrap_or(s).to_owned()),
    }
}

/// What else a cached prompt depends on: the template and its settings, and the prompt's form.
fn template_id(conversation: &Conversation, prompt: &Prefix) -> String {
    let form = match prompt {
        Prefix::Tokens(_) => "tokens",
        Prefix::Text(_) => "text",
    };
    format!("{}/{form}", conversation.template_key())
}

pub(crate) fn to_input(prompt: &Prefix) -> Result<Input> {
    Ok(match prompt {
        Prefix::Text(s) => Input::Prompt(s.clone()),
        Prefix::Tokens(ids) => Input::Tokens(ids.clone()),
    })
}
