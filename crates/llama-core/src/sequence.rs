//! One request as it generates ([`Sequence`]): what it asks for, the tokens it has, its text as
//! it streams, its clocks, and the checks after every token (end of generation, a stop string,
//! `max_tokens`, a full context). Every mode runs its requests as sequences of the one
//! [`crate::scheduler::Scheduler`].

use std::time::Instant;

use serde::Serialize;

use crate::sampling::{self, Sampler};
use crate::stop::StopStrings;
use crate::tokenizer::Tokenizer;
use crate::tokenizer::stream::StreamDecoder;

/// What one request asks to generate.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: Sampler,
    pub stop: StopStrings,
    /// Keep going past end-of-generation tokens (fixed-length measurements).
    pub ignore_eos: bool,
    /// How many of the largest logits to record at each generated token (0: none).
    pub record_top_logits: usize,
}

impl Request {
    /// `prompt`, up to `max_tokens` tokens drawn by `sampler`, nothing else asked.
    pub fn new(prompt: Vec<u32>, max_tokens: usize, sampler: Sampler) -> Self {
        Self { prompt, max_tokens, sampler, stop: StopStrings::default(), ignore_eos: false, record_top_logits: 0 }
    }

    /// Greedy with nothing to record: the next token is the logits' argmax alone, which the
    /// device may pick, and the step after may be queued before it is read.
    pub(crate) fn plain_greedy(&self) -> bool {
        self.sampler.is_plain_greedy() && self.record_top_logits == 0
    }
}

/// Why a sequence's generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-generation token (not part of the reply).
    EndOfGeneration,
    /// A stop string appeared (cut from the reply).
    StopString,
    MaxTokens,
    /// The sequence's cache slot has no room for another token.
    ContextFull,
    /// Stopped from outside (Ctrl-C, a client that went away).
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason`: `stop` for an end token or a stop string, else `length`.
    pub fn openai(self) -> &'static str {
        match self {
            Self::EndOfGeneration | Self::StopString => "stop",
            Self::MaxTokens | Self::ContextFull | Self::Cancelled => "length",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Admitted → first generated token on the host (prefill and first sample).
    pub time_to_first_token_s: f64,
    /// Admitted → the logits after the prompt's last token on the host.
    pub prefill_s: f64,
    /// Every decode step after the first token, each ending with its token on the host.
    pub decode_s: f64,
    pub decode_step_s: Vec<f64>,
}

/// A sequence's account once it has ended.
#[derive(Debug, Clone)]
pub struct Finished {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Of the prompt, how many tokens its cache slot already held.
    pub reused_tokens: usize,
    pub tokens: Vec<u32>,
    pub text: String,
    /// Per generated token, the largest logits at the position that produced it.
    pub top_logits: Vec<Vec<(u32, f32)>>,
    pub timings: Timings,
    /// Whether any of its tokens was read one step behind ([`crate::kernels::Capabilities::pipelines_greedy`]).
    pub pipelined: bool,
    /// The request's sampler, its history and random state advanced (a chat keeps it).
    pub sampler: Sampler,
}

/// What a step produced for one request.
#[derive(Debug, Clone)]
pub enum Event {
    /// The next piece of the reply: whole characters, a possible stop string held back.
    Text(String),
    Finished(Box<Finished>),
}

/// What a sequence should do after taking a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Decode the token just taken.
    Decode(u32),
    Finish(FinishReason),
}

/// One request as it runs in a cache slot.
pub(crate) struct Sequence<'t> {
    pub id: u64,
    request: Request,
    /// How many prompt tokens are in the slot (reused, or prefilled so far).
    pub prompt_done: usize,
    reused: usize,
    /// The last token taken, not yet in the cache: the next step decodes it.
    pub next: Option<u32>,
    tokenizer: Option<&'t Tokenizer>,
    decoder: Option<StreamDecoder<'t>>,
    tokens: Vec<u32>,
    text: String,
    top_logits: Vec<Vec<(u32, f32)>>,
    timings: Timings,
    admitted: Instant,
    last_token: Instant,
    pub pipelined: bool,
}

impl<'t> Sequence<'t> {
    /// `request` in a slot that already holds its first `reused` prompt tokens. Without a
    /// tokenizer (random-weight benchmark models) there is no text and no end-of-generation token.
    pub fn new(id: u64, mut request: Request, reused: usize, tokenizer: Option<&'t Tokenizer>) -> Self {
        // The penalties look at the prompt too.
        for &token in &request.prompt {
            request.sampler.accept(token);
        }
        let now = Instant::now();
        Self {
            id,
            request,
            prompt_done: reused,
            reused,
            next: None,
            tokenizer,
            decoder: tokenizer.map(StreamDecoder::new),
            tokens: Vec::new(),
            text: String::new(),
            top_logits: Vec::new(),
            timings: Timings::default(),
            admitted: now,
            last_token: now,
            pipelined: false,
        }
    }

    /// Prompt tokens not yet in the cache.
    pub fn pending(&self) -> &[u32] {
        &self.request.prompt[self.prompt_done..]
    }

    pub fn plain_greedy(&self) -> bool {
        self.request.plain_greedy()
    }

    /// Tokens taken into the reply so far.
    pub fn generated(&self) -> usize {
        self.tokens.len()
    }

    /// Whether this many more tokens are wanted after the ones taken (the pipeline queues a
    /// step ahead only when the token it decodes would be kept).
    pub fn wants_more_than(&self, taken_ahead: usize) -> bool {
        self.tokens.len() + taken_ahead < self.request.max_tokens
    }

    /// The prompt's last logits reached the host.
    pub fn prompt_read(&mut self) {
        self.timings.prefill_s = self.admitted.elapsed().as_secs_f64();
    }

    /// Samples the next token from `logits` (recording the largest where asked).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.request.record_top_logits > 0 {
            self.top_logits.push(sampling::top_k(logits, self.request.record_top_logits));
        }
        self.request.sampler.sample(logits)
    }

    /// Takes `token` (`room`: the slot has a row for it), appending the text it lets through to
    /// `out`; says what comes next (to decode it, it becomes [`Self::next`]).
    pub fn accept(&mut self, token: u32, room: bool, out: &mut String) -> Next {
        let now = Instant::now();
        if self.tokens.is_empty() {
            self.timings.time_to_first_token_s = (now - self.admitted).as_secs_f64();
        } else {
            self.timings.decode_step_s.push((now - self.last_token).as_secs_f64());
        }
        self.last_token = now;
        if !self.request.ignore_eos && self.tokenizer.is_some_and(|t| t.is_end_of_generation(token)) {
            return Next::Finish(FinishReason::EndOfGeneration);
        }
        self.tokens.push(token);
        self.request.sampler.accept(token);
        let piece = self.decoder.as_mut().map(|d| d.push(token)).unwrap_or_default();
        let filtered = self.request.stop.push(&piece);
        self.emit(&filtered.text, out);
        if filtered.stopped {
            Next::Finish(FinishReason::StopString)
        } else if self.tokens.len() >= self.request.max_tokens {
            Next::Finish(FinishReason::MaxTokens)
        } else if !room {
            Next::Finish(FinishReason::ContextFull)
        } else {
            self.next = Some(token);
            Next::Decode(token)
        }
    }

    fn emit(&mut self, text: &str, out: &mut String) {
        self.text.push_str(text);
        out.push_str(text);
    }

    /// Ends the sequence for `reason`: the text still held back (a partial character, a possible
    /// stop string) goes to `out`, unless it completes a stop string.
    pub fn finish(mut self, reason: FinishReason, out: &mut String) -> Finished {
        // After a stop string nothing more is sent.
        let mut reason = reason;
        if reason != FinishReason::StopString {
            let stop = &mut self.request.stop;
            let tail = stop.push(&self.decoder.as_mut().map(|d| d.finish()).unwrap_or_default());
            let text = if tail.stopped {
                reason = FinishReason::StopString;
                tail.text
            } else {
                tail.text + &stop.finish()
            };
            self.emit(&text, out);
        }
        self.timings.decode_s = self.timings.decode_step_s.iter().sum();
        Finished {
            reason,
            prompt_tokens: self.request.prompt.len(),
            reused_tokens: self.reused,
            tokens: self.tokens,
            text: self.text,
            top_logits: self.top_logits,
            timings: self.timings,
            pipelined: self.pipelined,
            sampler: self.request.sampler,
        }
    }
}

/// Tokens per second for `n` tokens in `seconds` (0 when nothing was timed).
pub fn rate(n: usize, seconds: f64) -> f64 {
    if seconds > 0.0 { n as f64 / seconds } else { 0.0 }
}
