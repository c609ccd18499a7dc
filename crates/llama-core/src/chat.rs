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
use crate::generation::{self, GenerationParams, StopReason};
use crate::kernels::Kernels;
use crate::kv_cache::KvCache;
use crate::model::{Llama, ModelError};
use crate::sampling::Sampler;
use crate::tokenizer::Tokenizer;

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Model(#[from] ModelError),
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
    pub stop_reason: StopReason,
    /// Older turns dropped before this one to make room in the context.
    pub dropped_turns: usize,
    pub time_to_first_token_s: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
}

pub struct ChatSession<'m, B: Backend, K: Kernels<B>> {
    model: &'m Llama<B, K>,
    tokenizer: &'m Tokenizer,
    template: ChatTemplate,
    system: Option<String>,
    /// User and assistant messages, oldest first.
    turns: Vec<Message>,
    cache: KvCache<B>,
    /// The ids whose keys and values the cache holds, in order.
    cached: Vec<u32>,
    sampler: Sampler,
    params: GenerationParams,
}

impl<'m, B: Backend, K: Kernels<B>> ChatSession<'m, B, K> {
    pub fn new(
        model: &'m Llama<B, K>,
        tokenizer: &'m Tokenizer,
        template: ChatTemplate,
        system: Option<String>,
        context: usize,
        sampler: Sampler,
        params: GenerationParams,
    ) -> Self {
        let cache = model.new_cache(context);
        Self { model, tokenizer, template, system, turns: Vec::new(), cache, cached: Vec::new(), sampler, params }
    }

    pub fn template_origin(&self) -> crate::chat_template::TemplateSource {
        self.template.origin
    }

    /// Tokens currently held in the KV cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    pub fn context(&self) -> usize {
        self.cache.capacity()
    }

    /// Forgets the conversation (the system message stays) and empties the cache.
    pub fn reset(&mut self) {
        self.turns.clear();
        self.cache.clear();
        self.cached.clear();
        self.sampler.clear_history();
    }

    /// Adds the user's message, generates the assistant's reply (streamed through `on_text`) and
    /// adds it too; an interrupted or cut-off reply is kept as far as it went. Older turns are
    /// dropped, and counted in the stats, when the conversation would not leave room for a reply;
    /// a message refused as too long changes nothing.
    pub fn reply(&mut self, user: &str, on_text: impl FnMut(&str)) -> Result<TurnStats, ChatError> {
        let mut turns = self.turns.clone();
        turns.push(Message::new("user", user));
        let (prompt, dropped_turns) = self.fit_prompt(&mut turns)?;
        self.turns = turns;
        let reused = common_prefix(&self.cached, &prompt).min(prompt.len() - 1);
        self.cache.truncate(reused);
        self.cached.truncate(reused);
        let new_tokens = &prompt[reused..];
        let generation = generation::generate(
            self.model,
            &mut self.cache,
            Some(self.tokenizer),
            new_tokens,
            &self.params,
            &mut self.sampler,
            on_text,
        )?;
        self.cached.extend_from_slice(new_tokens);
        self.cached.extend_from_slice(&generation.generated_tokens);
        // The last sampled token is in the cache only if a later step consumed it.
        self.cached.truncate(self.cache.len());
        self.turns.push(Message::new("assistant", &generation.text));
        let t = &generation.timings;
        Ok(TurnStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            prefilled_tokens: new_tokens.len(),
            generated_tokens: generation.generated_tokens.len(),
            stop_reason: generation.stop_reason,
            dropped_turns,
            time_to_first_token_s: t.time_to_first_token_s,
            prefill_tok_s: generation::rate(new_tokens.len(), t.prefill_s),
            decode_tok_s: generation::rate(t.decode_step_s.len(), t.decode_s),
        })
    }

    /// The prompt ids for `turns` (ending with the new user message), after dropping the oldest
    /// user/assistant pairs from `turns` while it leaves less room than a reply may take
    /// (`--max-tokens`, at most half the context). Returns how many messages were dropped.
    fn fit_prompt(&self, turns: &mut Vec<Message>) -> Result<(Vec<u32>, usize), ChatError> {
        let capacity = self.cache.capacity();
        let reserve = self.params.max_tokens.clamp(1, (capacity / 2).max(1));
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

/// How many leading ids `a` and `b` share.
pub(crate) fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_counts_matching_leading_ids() {
        assert_eq!(common_prefix(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix(&[], &[1]), 0);
        assert_eq!(common_prefix(&[1, 2], &[1, 2, 3]), 2);
    }
}
