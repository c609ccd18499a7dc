//! A multi-turn conversation that keeps its KV cache between turns.
//!
//! Each turn renders the whole conversation with the chat template and tokenizes it, then keeps
//! the longest prefix already in the cache and prefills only the rest. Comparing ids, rather than
//! trusting that the new prompt extends the old, stays correct for templates that rewrite earlier
//! turns (some strip whitespace from past replies) and for replies whose text tokenizes
//! differently from the ids that were sampled.

use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::chat_template::{ChatTemplate, Message, TemplateError};
use crate::kernels::Kernels;
use crate::sampling::Sampler;
use crate::scheduler::{EngineError, Scheduler};
use crate::sequence::{FinishReason, Request, rate};
use crate::tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(
        "this message makes a prompt of {tokens} tokens, which leaves no room for a reply in the {capacity}-token context: shorten it, or raise --ctx-size"
    )]
    TooLong { tokens: usize, capacity: usize },
}

/// What one turn did, for the line printed after each reply and for `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct TurnStats {
    /// The whole rendered conversation, in tokens.
    pub prompt_tokens: usize,
    /// Of those, how many were already in the KV cache and were not computed again.
    pub reused_tokens: usize,
    /// How many were prefilled this turn (`prompt_tokens - reused_tokens`).
    pub prefilled_tokens: usize,
    pub generated_tokens: usize,
    pub finish_reason: FinishReason,
    /// Older turns dropped before this one to make room in the context.
    pub dropped_turns: usize,
    pub time_to_first_token_s: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

/// How a chat replies: its template and system message, its sampler (kept across turns), and
/// each reply's limits.
pub struct ChatSettings {
    pub template: ChatTemplate,
    pub system: Option<String>,
    pub sampler: Sampler,
    /// Most tokens per reply.
    pub max_tokens: usize,
    pub ignore_eos: bool,
}

/// A conversation run as requests of a one-slot [`Scheduler`], whose slot keeps the cache
/// between turns.
pub struct ChatSession<'m, B: Backend, K: Kernels<B>> {
    scheduler: Scheduler<'m, B, K>,
    tokenizer: &'m Tokenizer,
    template: ChatTemplate,
    system: Option<String>,
    /// User and assistant messages, oldest first.
    turns: Vec<Message>,
    /// `None` only while a reply runs (the request holds it).
    sampler: Option<Sampler>,
    max_tokens: usize,
    ignore_eos: bool,
}

impl<'m, B: Backend, K: Kernels<B>> ChatSession<'m, B, K> {
    pub fn new(scheduler: Scheduler<'m, B, K>, tokenizer: &'m Tokenizer, settings: ChatSettings) -> Self {
        let ChatSettings { template, system, sampler, max_tokens, ignore_eos } = settings;
        Self {
            scheduler,
            tokenizer,
            template,
            system,
            turns: Vec::new(),
            sampler: Some(sampler),
            max_tokens,
            ignore_eos,
        }
    }

    pub fn template_origin(&self) -> crate::chat_template::TemplateSource {
        self.template.origin
    }

    /// Tokens currently held in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.scheduler.cached_tokens(0)
    }

    pub fn context(&self) -> usize {
        self.scheduler.context()
    }

    /// Forgets the conversation (the system message stays) and empties the cache.
    pub fn reset(&mut self) {
        self.turns.clear();
        self.scheduler.forget(0);
        if let Some(sampler) = &mut self.sampler {
            sampler.clear_history();
        }
    }

    /// Adds the user's message, generates the assistant's reply (streamed through `on_text`) and
    /// adds it too; an interrupted or cut-off reply is kept as far as it went. Older turns are
    /// dropped, and counted in the stats, when the conversation would not leave room for a reply;
    /// a message refused as too long changes nothing. `interrupted` is asked between tokens.
    pub fn reply(
        &mut self,
        user: &str,
        on_text: impl FnMut(&str),
        interrupted: &dyn Fn() -> bool,
    ) -> Result<TurnStats, ChatError> {
        let mut turns = self.turns.clone();
        turns.push(Message::new("user", user));
        let (prompt, dropped_turns) = self.fit_prompt(&mut turns)?;
        self.turns = turns;
        let sampler = self.sampler.take().expect("a sampler between replies");
        let request = Request { ignore_eos: self.ignore_eos, ..Request::new(prompt, self.max_tokens, sampler.clone()) };
        let finished = match self.scheduler.generate(request, on_text, interrupted) {
            Ok(finished) => finished,
            Err(e) => {
                self.sampler = Some(sampler);
                return Err(match e {
                    EngineError::TooLong { tokens, capacity } => ChatError::TooLong { tokens, capacity },
                    e => e.into(),
                });
            }
        };
        self.sampler = Some(finished.sampler.clone());
        self.turns.push(Message::new("assistant", &finished.text));
        let t = &finished.timings;
        let prefilled = finished.prompt_tokens - finished.reused_tokens;
        Ok(TurnStats {
            prompt_tokens: finished.prompt_tokens,
            reused_tokens: finished.reused_tokens,
            prefilled_tokens: prefilled,
            generated_tokens: finished.tokens.len(),
            finish_reason: finished.reason,
            dropped_turns,
            time_to_first_token_s: t.time_to_first_token_s,
            prefill_tok_s: rate(prefilled, t.prefill_s),
            decode_tok_s: rate(t.decode_step_s.len(), t.decode_s),
        })
    }

    /// The prompt ids for `turns` (ending with the new user message), after dropping the oldest
    /// user/assistant pairs from `turns` while it leaves less room than a reply may take
    /// (`--max-tokens`, at most half the context). Returns how many messages were dropped.
    fn fit_prompt(&self, turns: &mut Vec<Message>) -> Result<(Vec<u32>, usize), ChatError> {
        let capacity = self.scheduler.context();
        let reserve = self.max_tokens.clamp(1, (capacity / 2).max(1));
        let mut dropped = 0;
        loop {
            let messages: Vec<Message> =
                self.system.iter().map(|s| Message::new("system", s)).chain(turns.iter().cloned()).collect();
            let prompt = self.template.encode(self.tokenizer, &messages, true)?;
            if prompt.is_empty() {
                return Err(TemplateError::Render("the template renders the conversation as no text".into()).into());
            }
            if prompt.len() + reserve <= capacity {
                return Ok((prompt, dropped));
            }
            // Only the new user message left: take it if any reply fits, else refuse.
            if turns.len() <= 1 {
                return if prompt.len() < capacity {
                    Ok((prompt, dropped))
                } else {
                    Err(ChatError::TooLong { tokens: prompt.len(), capacity })
                };
            }
            let pair = if turns.len() >= 3 { 2 } else { 1 };
            turns.drain(..pair);
            dropped += pair;
        }
    }
}
