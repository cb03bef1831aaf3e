//! A run: prefill, then tokens delivered one callback each, then FINISH; or the last hidden
//! layer. Every knob of [`RuntimeBehaviour`] that concerns runs is applied here.

use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkllm_sys::{
    LLMCallState, RKLLMResult, RKLLMResultLastHiddenLayer, RKLLM_RUN_ERROR, RKLLM_RUN_FINISH,
    RKLLM_RUN_GET_LAST_HIDDEN_LAYER, RKLLM_RUN_NORMAL, RKLLM_RUN_WAITING,
};

use super::handle::{lock, Instance, Job, RunScope, UserData};
use super::input::{Infer, Input};
use super::log;
use super::model_file::{AfterLastTurn, Answer, RunFailure, RuntimeBehaviour, DEFAULT_ANSWER};
use super::prompt_cache;
use super::stats::{self, RunStats};
use super::tokenizer::ends_inside_char;
use crate::settings::{
    AddsBos, ContextOverflow, FinishText, PromptCacheReuse, SecondModel, WaitingText,
};

/// The token id of FINISH, ERROR and hidden-layer callbacks (they carry no token).
pub const NO_TOKEN: i32 = -1;

/// The step at which simulated waits look at the abort flag.
const ABORT_POLL: Duration = Duration::from_millis(2);

/// Executes a run on the current thread (the worker's or the caller's), then marks the
/// handle idle. Returns what `rkllm_run` returns.
pub(crate) fn execute(job: Job) -> i32 {
    let Job {
        instance,
        input,
        infer,
        userdata,
        reply,
    } = job;
    let rc = if instance.destroyed.load(Ordering::SeqCst) {
        -1
    } else {
        let _gate = lock(&instance.run_gate);
        let _scope = RunScope::enter(instance.id);
        // A panic in the mock must not kill the worker or cross into C; the run fails.
        catch_unwind(AssertUnwindSafe(|| {
            Run::new(&instance, userdata, &infer, &input).go()
        }))
        .unwrap_or(-1)
    };
    instance.abort.store(false, Ordering::SeqCst);
    let behaviour = instance.model.spec.runtime_behaviour();
    if behaviour.run_never_returns {
        // A wedged runtime: rkllm_run's caller waits for good.
        loop {
            std::thread::park();
        }
    }
    instance.running.store(false, Ordering::SeqCst);
    if let Some(reply) = reply {
        // The caller is blocked in rkllm_run waiting for this; it cannot have gone.
        let _ = reply.send(rc);
    }
    if behaviour.late_callback_after_return {
        std::thread::sleep(Duration::from_millis(20));
        late_callback(&instance, userdata);
    }
    rc
}

/// A NORMAL callback after `rkllm_run` returned, which the real runtime should never send.
fn late_callback(instance: &Instance, userdata: UserData) {
    if let Some(callback) = instance.callback {
        let text = c"late";
        let mut result = RKLLMResult {
            text: text.as_ptr(),
            token_id: 100,
            ..RKLLMResult::default()
        };
        // SAFETY: the callback was registered at rkllm_init for this handle; the result is
        // valid for the call (its text is static) and the userdata is the run's, untouched.
        unsafe { callback(&mut result, userdata.0, RKLLM_RUN_NORMAL) };
    }
}

/// One row of the prompt as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    /// A token id.
    Token(i32),
    /// Row `n` of the input's embedding buffer.
    Embedding(usize),
}

struct Run<'a> {
    inst: &'a Arc<Instance>,
    rt: &'a RuntimeBehaviour,
    userdata: UserData,
    infer: &'a Infer,
    input: &'a Input,
    stats: RunStats,
    prefill_wall: Duration,
    decode_wall: Duration,
    reached_prefill: bool,
}

impl<'a> Run<'a> {
    fn new(
        inst: &'a Arc<Instance>,
        userdata: UserData,
        infer: &'a Infer,
        input: &'a Input,
    ) -> Self {
        let (run_index, (cache_load_bytes, cache_load)) = {
            let mut st = lock(&inst.state);
            st.runs += 1;
            (st.runs, std::mem::take(&mut st.loaded_since_run))
        };
        Run {
            inst,
            rt: inst.model.spec.runtime_behaviour(),
            userdata,
            infer,
            input,
            stats: RunStats {
                handle: inst.id,
                model_path: inst.model.path.clone(),
                run_index,
                input: input.kind(),
                hidden_layer_mode: infer.hidden_layer,
                lora: infer.lora.clone(),
                prompt_tokens: 0,
                prompt_ids: Vec::new(),
                prompt_text: None,
                reused_tokens: 0,
                prefilled_tokens: 0,
                prefill: Duration::ZERO,
                cache_load_bytes,
                cache_load,
                cache_save_bytes: 0,
                cache_save: Duration::ZERO,
                generated_tokens: 0,
                finished: false,
                errored: false,
                aborted: false,
                return_code: 0,
            },
            prefill_wall: Duration::ZERO,
            decode_wall: Duration::ZERO,
            reached_prefill: false,
        }
    }

    /// Runs to the end, records the stats, prints the performance table when asked.
    fn go(mut self) -> i32 {
        let rc = self.run();
        // Writing the saved cache's payload takes the disk's time, after the last callback.
        std::thread::sleep(self.stats.cache_save);
        self.stats.return_code = rc;
        if self.reached_prefill && self.inst.settings.log_level >= 1 {
            log::perf_table(
                log::Out::of(&self.inst.model.spec),
                &[
                    log::Stage {
                        name: "Prefill",
                        millis: self.prefill_wall.as_secs_f64() * 1000.0,
                        tokens: self.stats.prefilled_tokens,
                    },
                    log::Stage {
                        name: "Generate",
                        millis: self.decode_wall.as_secs_f64() * 1000.0,
                        tokens: self.stats.generated_tokens,
                    },
                ],
            );
        }
        stats::record(self.stats);
        rc
    }

    fn error_line(&self, msg: &str) {
        log::rkllm_error(log::Out::of(&self.inst.model.spec), msg);
    }

    fn aborted(&self) -> bool {
        self.inst.abort.load(Ordering::SeqCst)
    }

    fn run(&mut self) -> i32 {
        let spec = &self.inst.model.spec;
        let failure = spec.run_failure_for(self.stats.run_index);
        if failure == Some(RunFailure::ReturnError) {
            self.error_line("run failed (injected by the mock model)");
            return -1;
        }
        if self.rt.second_model == SecondModel::LoadsButRunFails && super::handle::live_count() > 1
        {
            self.error_line("run failed: another model is loaded in this process");
            return -1;
        }
        if let Some(name) = &self.infer.lora {
            if !lock(&self.inst.state).loras.contains_key(name) {
                self.error_line(&format!(
                    "lora adapter {name} has not been loaded; call rkllm_load_lora first"
                ));
                return -1;
            }
        }
        let (mut rows, text) = match self.prompt_rows() {
            Ok(r) => r,
            Err(msg) => {
                self.error_line(&msg);
                return -1;
            }
        };
        let max_ctx = self.inst.settings.max_context_len;
        if rows.len() > max_ctx {
            match self.rt.context_overflow {
                ContextOverflow::Refused => {
                    self.error_line(&format!(
                        "the input has {} tokens, more than max_context_len {max_ctx}",
                        rows.len()
                    ));
                    return -1;
                }
                ContextOverflow::ErrorCallback => return self.error_end(),
                ContextOverflow::Truncated => {
                    let keep = max_ctx.saturating_sub(1).max(1);
                    rows.drain(..rows.len() - keep);
                }
            }
        }
        self.stats.prompt_tokens = rows.len();
        self.stats.prompt_ids = rows
            .iter()
            .filter_map(|r| match r {
                Row::Token(t) => u32::try_from(*t).ok(),
                Row::Embedding(_) => None,
            })
            .collect();
        self.stats.prompt_text = text
            .as_deref()
            .map(|t| String::from_utf8_lossy(t).into_owned());

        // Prefill, skipping the prefix a loaded prompt cache covers.
        let leading_tokens: Vec<i32> = rows
            .iter()
            .map_while(|r| {
                if let Row::Token(t) = r {
                    Some(*t)
                } else {
                    None
                }
            })
            .collect();
        let cache = lock(&self.inst.state).prompt_cache.clone();
        let reused = match (&cache, self.rt.prompt_cache_reuse) {
            (Some(c), PromptCacheReuse::Reused) => {
                prompt_cache::reusable_prefix(c, &leading_tokens)
            }
            _ => 0,
        };
        self.stats.reused_tokens = reused;
        self.reached_prefill = true;
        let per_token = spec.spec_timing().prefill_seconds_per_token;
        let to_prefill = rows.len() - reused;
        let started = Instant::now();
        let interruptible = self.rt.abort_interrupts_prefill;
        let slept = sleep(
            secs(to_prefill as f64 * per_token),
            interruptible.then_some(&*self),
        );
        self.prefill_wall = started.elapsed();
        let prefilled = if per_token > 0.0 {
            ((slept.as_secs_f64() / per_token).round() as usize).min(to_prefill)
        } else {
            to_prefill
        };
        self.stats.prefilled_tokens = prefilled;
        self.stats.prefill = secs(prefilled as f64 * per_token);
        if prefilled == to_prefill {
            if let Some(path) = &self.infer.save_cache {
                let identity = &self.inst.model.identity;
                let cost = spec.spec_cache_cost();
                match prompt_cache::save(path, identity, cost.payload_bytes(1), &leading_tokens) {
                    Ok(bytes) => {
                        self.stats.cache_save_bytes = bytes;
                        self.stats.cache_save = cost.io_time(bytes);
                    }
                    Err(e) => {
                        self.error_line(&format!(
                            "failed to save prompt cache {}: {e}",
                            path.display()
                        ));
                        return -1;
                    }
                }
            }
        }

        if self.infer.hidden_layer {
            if self.aborted() {
                return self.abort_end();
            }
            self.hidden_layer(&rows);
            if failure == Some(RunFailure::NoFinish) {
                return 0;
            }
            self.finish();
            return 0;
        }
        self.generate(rows.len(), text, failure)
    }

    /// The prompt as rows, and its text (for echo) when it has one.
    fn prompt_rows(&self) -> Result<(Vec<Row>, Option<Vec<u8>>), String> {
        let tok = &*self.inst.model.tokenizer;
        let text_rows = |text: &[u8]| {
            let mut rows = Vec::new();
            let ids = tok.encode(text);
            let add = match self.rt.adds_bos {
                AddsBos::Always => true,
                AddsBos::UnlessPresent => ids.first() != tok.bos().as_ref(),
                _ => false,
            };
            if let (true, Some(bos)) = (add, tok.bos()) {
                rows.push(Row::Token(bos));
            }
            rows.extend(ids.into_iter().map(Row::Token));
            rows
        };
        let (rows, text) = match self.input {
            Input::Prompt(text) => (text_rows(text), Some(text.clone())),
            Input::Tokens(ids) => {
                let text = tok
                    .decode(ids)
                    .map_err(|id| format!("token id {id} is outside the model's vocabulary"))?;
                (ids.iter().copied().map(Row::Token).collect(), Some(text))
            }
            Input::Embed { n_tokens, .. } => ((0..*n_tokens).map(Row::Embedding).collect(), None),
            Input::Multimodal {
                prompt,
                n_image_tokens,
                ..
            } => {
                // The image sits before the text.
                let mut rows: Vec<Row> = (0..*n_image_tokens).map(Row::Embedding).collect();
                rows.extend(text_rows(prompt));
                (rows, Some(prompt.clone()))
            }
        };
        if rows.is_empty() {
            return Err("the input has no tokens".to_owned());
        }
        Ok((rows, text))
    }

    /// The hidden-layer callback: `rows × embed_dim` floats, see the module docs of
    /// [`crate::mock`] for the values.
    fn hidden_layer(&mut self, rows: &[Row]) {
        let dim = self.inst.model.spec.spec_embed_dim();
        let embedding = match self.input {
            Input::Embed { data, .. } => Some(data),
            Input::Multimodal { image, .. } => Some(image),
            _ => None,
        };
        let mut buf = Vec::with_capacity(rows.len() * dim);
        for row in rows {
            match (row, embedding) {
                (Row::Token(id), _) => buf.extend((0..dim).map(|d| hidden_value(*id, d, dim))),
                (Row::Embedding(n), Some(e)) => buf.extend_from_slice(&e[n * dim..(n + 1) * dim]),
                (Row::Embedding(_), None) => buf.extend(std::iter::repeat_n(0.0, dim)),
            }
        }
        let mut result = RKLLMResult {
            text: std::ptr::null(),
            token_id: NO_TOKEN,
            last_hidden_layer: RKLLMResultLastHiddenLayer {
                hidden_states: buf.as_ptr(),
                embd_size: dim as i32,
                num_tokens: rows.len() as i32,
            },
        };
        self.deliver(&mut result, RKLLM_RUN_GET_LAST_HIDDEN_LAYER);
        // The runtime frees the buffer at the next callback: a reader that kept the pointer
        // sees garbage, not the values.
        buf.fill(f32::NAN);
        drop(buf);
    }

    /// Picks the answer's text.
    fn answer(&self, prompt_text: Option<Vec<u8>>) -> Vec<u8> {
        let spec = &self.inst.model.spec;
        let answered = {
            let mut st = lock(&self.inst.state);
            st.answered += 1;
            st.answered
        };
        if let Some(text) = self
            .infer
            .lora
            .as_ref()
            .and_then(|n| spec.spec_lora_answers().get(n))
        {
            return text.clone().into_bytes();
        }
        match spec.spec_answer() {
            Answer::Script { text } => text.clone().into_bytes(),
            Answer::Turns { turns, after_last } => {
                let i = (answered - 1) as usize;
                let i = match after_last {
                    _ if i < turns.len() => i,
                    AfterLastTurn::Cycle => i % turns.len(),
                    _ => turns.len() - 1,
                };
                turns[i].clone().into_bytes()
            }
            Answer::Bytes { bytes } => bytes.clone(),
            Answer::Echo => match prompt_text {
                Some(t) => last_user_message(&t).to_vec(),
                None => DEFAULT_ANSWER.as_bytes().to_vec(),
            },
        }
    }

    fn generate(
        &mut self,
        prompt_len: usize,
        text: Option<Vec<u8>>,
        failure: Option<RunFailure>,
    ) -> i32 {
        let tok = &*self.inst.model.tokenizer;
        let eot = tok.end_of_turn();
        let mut answer = tok.encode(&self.answer(text));
        answer.push(eot);
        let settings = self.inst.settings;
        let room = settings.max_context_len.saturating_sub(prompt_len);
        let limit = settings.max_new_tokens.map_or(room, |m| m.min(room));
        let error_after = match failure {
            Some(RunFailure::ErrorAfterTokens { tokens }) => Some(tokens),
            _ => None,
        };
        let stops = self.rt.stops_at_end_of_turn;
        let per_token = secs(self.inst.model.spec.spec_timing().decode_seconds_per_token);
        let mut stream =
            answer
                .iter()
                .copied()
                .cycle()
                .take(if stops { answer.len() } else { usize::MAX });
        let mut pending: Vec<u8> = Vec::new();
        let started = Instant::now();
        let mut aborted = false;
        while self.stats.generated_tokens < limit {
            if self.aborted() {
                aborted = true;
                break;
            }
            if error_after == Some(self.stats.generated_tokens) {
                self.decode_wall = started.elapsed();
                return self.error_end();
            }
            let Some(id) = stream.next() else { break };
            sleep(per_token, None);
            if self.aborted() {
                aborted = true;
                break;
            }
            self.token(id, &mut pending);
            if id == eot && stops {
                break;
            }
        }
        self.decode_wall = started.elapsed();
        if aborted {
            self.stats.aborted = true;
            if self.rt.finish_after_abort {
                self.finish();
            }
            return self.rt.run_return_after_abort;
        }
        if error_after.is_some() {
            return self.error_end();
        }
        if failure == Some(RunFailure::NoFinish) {
            return 0;
        }
        self.finish();
        0
    }

    /// One NORMAL or WAITING callback for token `id`.
    fn token(&mut self, id: i32, pending: &mut Vec<u8>) {
        let tok = &*self.inst.model.tokenizer;
        let bytes = tok
            .token_bytes(id)
            .map(|b| b.into_owned())
            .unwrap_or_default();
        let (state, text): (LLMCallState, Option<Vec<u8>>) = if tok.is_special(id) {
            let text = if self.inst.settings.skip_special_token {
                Vec::new()
            } else {
                bytes
            };
            (RKLLM_RUN_NORMAL, Some(text))
        } else {
            pending.extend_from_slice(&bytes);
            if ends_inside_char(pending) {
                let text = match self.rt.waiting_text {
                    WaitingText::PartialBytes | WaitingText::PartialBytesThenWhole => Some(bytes),
                    WaitingText::Null => None,
                    WaitingText::Empty => Some(Vec::new()),
                };
                (RKLLM_RUN_WAITING, text)
            } else {
                let text = match self.rt.waiting_text {
                    WaitingText::PartialBytes => bytes,
                    WaitingText::Null | WaitingText::Empty | WaitingText::PartialBytesThenWhole => {
                        pending.clone()
                    }
                };
                pending.clear();
                (RKLLM_RUN_NORMAL, Some(text))
            }
        };
        self.call(text.as_deref(), id, state);
        self.stats.generated_tokens += 1;
    }

    fn finish(&mut self) {
        let text = self.end_text();
        self.call(text.as_deref(), NO_TOKEN, RKLLM_RUN_FINISH);
        self.stats.finished = true;
    }

    /// An ERROR callback ends the run.
    fn error_end(&mut self) -> i32 {
        let text = self.end_text();
        self.call(text.as_deref(), NO_TOKEN, RKLLM_RUN_ERROR);
        self.stats.errored = true;
        self.rt.run_return_after_error
    }

    /// Aborted before generating: FINISH or not, and the configured return code.
    fn abort_end(&mut self) -> i32 {
        self.stats.aborted = true;
        if self.rt.finish_after_abort {
            self.finish();
        }
        self.rt.run_return_after_abort
    }

    fn end_text(&self) -> Option<Vec<u8>> {
        match &self.rt.finish_text {
            FinishText::Empty => Some(Vec::new()),
            FinishText::Text(t) => Some(t.clone().into_bytes()),
            _ => None,
        }
    }

    /// Calls back with `text` (NUL-terminated for the duration of the call) and `token_id`.
    fn call(&mut self, text: Option<&[u8]>, token_id: i32, state: LLMCallState) {
        // A NUL byte (only from a byte-fallback token in token input) cannot cross a C
        // string; the text stops there, as it would on the C side.
        let text = text.map(|t| {
            let end = t.iter().position(|&b| b == 0).unwrap_or(t.len());
            CString::new(&t[..end]).unwrap_or_default()
        });
        let mut result = RKLLMResult {
            text: text.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            token_id,
            ..RKLLMResult::default()
        };
        self.deliver(&mut result, state);
        // `text` lives until here: valid for the whole callback, gone right after.
        drop(text);
    }

    fn deliver(&mut self, result: &mut RKLLMResult, state: LLMCallState) {
        if let Some(callback) = self.inst.callback {
            // SAFETY: the callback was registered at rkllm_init for this handle and is called
            // as the C ABI declares it: a result valid for the duration of the call (its text
            // and hidden-state buffers are owned by this frame), the caller's userdata
            // untouched, and a state value of the 1.1.1 enum.
            unsafe { callback(result, self.userdata.0, state) };
        }
    }
}

/// The hidden-state value of dimension `d` of a token row: `(id mod 1000) + d / dim`,
/// computed in `f32` exactly as written.
pub fn hidden_value(token_id: i32, d: usize, dim: usize) -> f32 {
    token_id.rem_euclid(1000) as f32 + d as f32 / dim as f32
}

/// The user turn markers of the chat formats the echo model knows: Gemma 2, ChatML (Qwen,
/// ...), Llama 3.
const USER_TURNS: [(&[u8], &[u8]); 3] = [
    (b"<start_of_turn>user\n", b"<end_of_turn>"),
    (b"<|im_start|>user\n", b"<|im_end|>"),
    (
        b"<|start_header_id|>user<|end_header_id|>\n\n",
        b"<|eot_id|>",
    ),
];

/// For a chat-formatted prompt (Gemma 2, ChatML or Llama 3), the text of its last user turn
/// (to the end of the prompt if the turn is unterminated); otherwise the whole prompt.
pub(crate) fn last_user_message(prompt: &[u8]) -> &[u8] {
    let Some((start, close)) = USER_TURNS
        .iter()
        .filter_map(|(open, close)| rfind(prompt, open).map(|i| (i + open.len(), *close)))
        .max_by_key(|(start, _)| *start)
    else {
        return prompt;
    };
    let rest = &prompt[start..];
    match find(rest, close) {
        Some(end) => &rest[..end],
        None => rest,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// Waits `d`; when `abort_of` is given, stops early once that run is aborted. Returns the
/// time waited.
fn sleep(d: Duration, abort_of: Option<&Run<'_>>) -> Duration {
    if d.is_zero() {
        return d;
    }
    let start = Instant::now();
    match abort_of {
        None => std::thread::sleep(d),
        Some(run) => loop {
            let waited = start.elapsed();
            if waited >= d || run.aborted() {
                return waited.min(d);
            }
            std::thread::sleep((d - waited).min(ABORT_POLL));
        },
    }
    d
}

#[cfg(test)]
mod tests {
    use super::last_user_message;

    #[test]
    fn echo_finds_the_last_user_turn() {
        let p = b"<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n";
        assert_eq!(last_user_message(p), b"How are you?");
        assert_eq!(last_user_message(b"plain text"), b"plain text");
        assert_eq!(last_user_message(b"<start_of_turn>user\nopen"), b"open");
        let chatml = b"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
            <|im_start|>assistant\nYo<|im_end|>\n<|im_start|>user\nAgain?<|im_end|>\n\
            <|im_start|>assistant\n";
        assert_eq!(last_user_message(chatml), b"Again?");
        let llama = b"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there\
            <|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
        assert_eq!(last_user_message(llama), b"Hi there");
    }
}
