//! Several sequences advanced by one forward pass: a server's slots, each with its own KV cache.
//!
//! Their new tokens are stacked into one `[tokens, dim]` input, so every product (Q/K/V, output,
//! feed-forward, head) reads its weight once for all of them: decode is memory-bound, and eight
//! sequences' rows cost about what one does. RoPE runs per row at that row's position; the cache
//! writes and attention run per sequence, over its own cache, length and position.

use std::ops::Range;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::kernels::{Kernels, Normed, Pass, Position, Projections, QkvIntoCache, TokenIds, composed};
use crate::kv_cache::{CachedKv, KvCache};
use crate::model::{Llama, ModelError};

/// One sequence's part of a batched pass: its new tokens, run after what its cache holds.
pub struct BatchEntry<'a, B: Backend> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache<B>,
}

/// The sequences one forward pass advances, each writing its own KV cache.
pub(crate) enum Sequences<'p, 'c, B: Backend> {
    /// One sequence owns every row: the provider's `qkv_into_cache`, fused where it can be.
    One {
        pass: Pass<'p, B>,
        cache: &'c mut KvCache<B>,
    },
    Many(Many<'c, B>),
}

pub(crate) struct Many<'c, B: Backend> {
    heads: usize,
    kv_heads: usize,
    /// `[tokens, head_dim / 2]`: the rotary rows of each row's own position.
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
    members: Vec<Member<'c, B>>,
}

struct Member<'c, B: Backend> {
    /// This sequence's rows of the pass.
    rows: Range<usize>,
    /// Where its first new token sits in its cache.
    start: usize,
    cache: &'c mut KvCache<B>,
}

impl<B: Backend> Sequences<'_, '_, B> {
    /// `attention(rope(Wqkv · norm(x)))` of layer `layer`, keys and values written into each
    /// sequence's cache: `[tokens, heads · head_dim]`.
    pub(crate) fn attend<K: Kernels<B>>(
        &mut self,
        k: &K,
        input: Normed<'_, B>,
        weight: &Projections<K::Weight>,
        layer: usize,
    ) -> Tensor<B, 2> {
        match self {
            Sequences::One { pass, cache } => {
                let (q, kv) = k.qkv_into_cache(QkvIntoCache { input, weight, pass, cache: cache.take(layer) });
                k.attention(q, cache.keep(layer, kv), &pass.at)
            }
            Sequences::Many(many) => {
                // The Q/K/V product once over every row, RoPE at each row's own position.
                let qkv = composed::project(k, input, weight); // [tokens, (heads + 2·kv_heads)·head_dim]
                let (cos, sin) = (many.cos.clone(), many.sin.clone());
                let (q, keys, values) = composed::rotate_qkv(qkv, many.heads, many.kv_heads, cos, sin);
                let [_, heads, head_dim] = q.dims();
                let kv_heads = many.kv_heads;
                let attended = many.members.iter_mut().map(|m| {
                    let rows = m.rows.clone();
                    let own = |t: &Tensor<B, 3>, n: usize| t.clone().slice([rows.clone(), 0..n, 0..head_dim]);
                    let (new_keys, new_values) =
                        (own(&keys, kv_heads).swap_dims(0, 1), own(&values, kv_heads).swap_dims(0, 1));
                    let kv = CachedKv::written(m.cache.take(layer), m.start, new_keys, new_values);
                    k.attention(own(&q, heads), m.cache.keep(layer, kv), &Position::Host(m.start))
                });
                Tensor::cat(attended.collect(), 0)
            }
        }
    }
}

impl<B: Backend, K: Kernels<B>> Llama<B, K> {
    /// Runs each entry's tokens after what its cache holds, all in one pass, and advances every
    /// cache; returns the logits of each entry's last token, `[entries, vocab]`. One entry is
    /// [`Self::forward`] exactly.
    pub fn forward_batch(&self, mut entries: Vec<BatchEntry<'_, B>>) -> Result<Tensor<B, 2>, ModelError> {
        if entries.len() == 1 {
            let entry = entries.pop().expect("one entry");
            return self.forward(entry.tokens, entry.cache);
        }
        for entry in &entries {
            if entry.tokens.is_empty() {
                return Err(ModelError::NoTokens);
            }
            self.check_tokens(entry.tokens, entry.cache)?;
        }
        let ids: Vec<u32> = entries.iter().flat_map(|e| e.tokens.iter().copied()).collect();
        let positions: Vec<i64> =
            entries.iter().flat_map(|e| (e.cache.len()..e.cache.len() + e.tokens.len()).map(|p| p as i64)).collect();
        let positions = Tensor::<B, 1, Int>::from_data(TensorData::new(positions, [ids.len()]), &self.device);
        let (cos, sin) = self.rope.tables();
        let mut next_row = 0;
        let members = entries
            .into_iter()
            .map(|e| {
                let rows = next_row..next_row + e.tokens.len();
                next_row = rows.end;
                Member { rows, start: e.cache.len(), cache: e.cache }
            })
            .collect::<Vec<_>>();
        let last_rows: Vec<i64> = members.iter().map(|m| m.rows.end as i64 - 1).collect();
        let c = &self.config;
        let mut sequences = Sequences::Many(Many {
            heads: c.n_heads,
            kv_heads: c.n_kv_heads,
            cos: cos.clone().select(0, positions.clone()),
            sin: sin.clone().select(0, positions),
            members,
        });
        let x = self.layers_forward(self.embed(TokenIds::Host(&ids, &self.device)), &mut sequences);
        let Sequences::Many(many) = sequences else { unreachable!("built as Many") };
        for m in many.members {
            m.cache.advance(m.rows.len());
        }
        // Only each sequence's last row picks its next token.
        let last_rows =
            Tensor::<B, 1, Int>::from_data(TensorData::new(last_rows.clone(), [last_rows.len()]), &self.device);
        Ok(self.logits(x.select(0, last_rows)))
    }
}
