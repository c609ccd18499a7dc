//! Attention on the libtorch tensors inside burn-tch, for every kind of step's rows: one
//! sequence's (a prompt's, or one token's), the static step's one token over its slot's whole
//! cache, and a server's step, where the sequences decoding one token each are attended to
//! together in one set of ATen calls over the cache block of their slots, whatever their count.

use burn::tensor::Tensor;
use llama_core::kernels::{Rows, Span};
use llama_core::kv_cache::CachedKv;

use crate::ops::{Tch, grouped_attention, raw, wrap};

/// Every row of `q` `[rows, heads, head_dim]` over its own slot of `kv`: `[rows, heads · head_dim]`.
pub fn attention(q: Tensor<Tch, 3>, kv: CachedKv<Tch>, rows: &Rows<Tch>) -> Tensor<Tch, 2> {
    let kv_heads = rows.kv_heads as i64;
    let (q, keys, values) = (raw(q), raw(kv.keys), raw(kv.values));
    let slot_of =
        |t: &tch::Tensor, slot: usize, len: i64| t.narrow(0, slot as i64 * kv_heads, kv_heads).narrow(1, 0, len);
    if let Some(visible) = &rows.visible {
        let (span, visible) = (rows.spans[0], visible.clone().into_primitive().tensor);
        let capacity = keys.size()[1];
        let (k, v) = (slot_of(&keys, span.slot, capacity), slot_of(&values, span.slot, capacity));
        return wrap(static_step(&q, &k, &v, &visible));
    }
    let mut parts = Vec::new();
    let spans: Vec<(Span, usize)> = rows.spans_from().collect();
    let mut i = 0;
    while i < spans.len() {
        let (span, first) = spans[i];
        // A run of sequences decoding one token each: one set of calls for them all.
        let run = spans[i..].iter().take_while(|(s, _)| s.rows == 1).count();
        if run > 1 {
            let q = q.narrow(0, first as i64, run as i64);
            let positions = raw_int(&rows.positions).narrow(0, first as i64, run as i64);
            let slots = raw_int(&rows.slots).narrow(0, first as i64, run as i64);
            parts.push(decoding_together(&q, (&keys, &values), rows, &spans[i..i + run], (&slots, &positions)));
            i += run;
            continue;
        }
        let end = span.end() as i64;
        let q = q.narrow(0, first as i64, span.rows as i64);
        parts.push(one_sequence(&q, &slot_of(&keys, span.slot, end), &slot_of(&values, span.slot, end)));
        i += 1;
    }
    wrap(if parts.len() == 1 { parts.pop().expect("one part") } else { tch::Tensor::cat(&parts, 0) })
}

fn raw_int(t: &Tensor<Tch, 1, burn::tensor::Int>) -> tch::Tensor {
    t.clone().into_primitive().tensor
}

/// Causal attention of `q` `[tokens, heads, head_dim]`, the last `tokens` of the positions of
/// `k`, `v` `[kv_heads, keys, head_dim]`: grouped on a CPU for one query, else SDPA.
fn one_sequence(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor) -> tch::Tensor {
    let (tokens, heads, head_dim) = (q.size()[0], q.size()[1], q.size()[2]);
    let keys = k.size()[1];
    if tokens == 1 && k.device() == tch::Device::Cpu {
        return grouped_attention(q, k, v, None);
    }
    // Query t sits at position keys - tokens + t and sees keys up to it. SDPA's `is_causal`
    // aligns queries with the first keys, right only when there is no cached prefix.
    let mask = (tokens > 1 && tokens != keys).then(|| {
        let positions = tch::Tensor::arange(keys, (tch::Kind::Int64, k.device()));
        let queries = tch::Tensor::arange_start(keys - tokens, keys, (tch::Kind::Int64, k.device()));
        positions.unsqueeze(0).le_tensor(&queries.unsqueeze(1)) // true = may attend
    });
    let is_causal = tokens > 1 && tokens == keys;
    let q = q.transpose(0, 1); // [heads, tokens, head_dim]
    let out = tch::Tensor::scaled_dot_product_attention(&q, k, v, mask, 0.0, is_causal, None, true);
    out.transpose(0, 1).reshape([tokens, heads * head_dim])
}

/// The static step's one query over its slot's whole cache `k`, `v` `[kv_heads, capacity,
/// head_dim]`, `visible` `[1, capacity]` masking the later positions.
fn static_step(q: &tch::Tensor, k: &tch::Tensor, v: &tch::Tensor, visible: &tch::Tensor) -> tch::Tensor {
    let (heads, head_dim) = (q.size()[1], q.size()[2]);
    if k.device() == tch::Device::Cpu {
        return grouped_attention(q, k, v, Some(&visible.view([-1])));
    }
    let q = q.transpose(0, 1); // [heads, 1, head_dim]
    let out =
        tch::Tensor::scaled_dot_product_attention(&q, k, v, Some(visible.shallow_clone()), 0.0, false, None, true);
    out.reshape([1, heads * head_dim])
}

/// Sequences decoding one token each (`q` `[run, heads, head_dim]`, in slots `slots` at
/// `positions`, `[run]` each): one batched product over the cache block of the slots from the
/// lowest to the highest, cut to the longest of them, each slot's later positions masked. A slot
/// of that block with no row of the step is computed and thrown away; when the rows are the
/// block's slots in order (a server's slots decoding together), the queries and the output are
/// used as they are.
fn decoding_together(
    q: &tch::Tensor,
    (keys, values): (&tch::Tensor, &tch::Tensor),
    rows: &Rows<Tch>,
    spans: &[(Span, usize)],
    (slots, positions): (&tch::Tensor, &tch::Tensor),
) -> tch::Tensor {
    let (heads, kv_heads, head_dim) = (rows.heads as i64, rows.kv_heads as i64, q.size()[2]);
    let low = spans.iter().map(|(s, _)| s.slot).min().expect("a run") as i64;
    let block = spans.iter().map(|(s, _)| s.slot).max().expect("a run") as i64 + 1 - low;
    let len = spans.iter().map(|(s, _)| s.end()).max().expect("a run") as i64;
    let in_order = spans.iter().enumerate().all(|(i, (s, _))| s.slot as i64 == low + i as i64);
    let capacity = keys.size()[1];
    // [block · kv_heads, len, head_dim] views of the cache: no copy.
    let view = |t: &tch::Tensor| {
        t.view([-1, kv_heads, capacity, head_dim]).narrow(0, low, block).narrow(2, 0, len).view([-1, len, head_dim])
    };
    let (k, v) = (view(keys), view(values));
    let device = q.device();
    // Each slot of the block's query and position; a slot without a row attends to position 0.
    let at = (!in_order).then(|| slots - low);
    let (q_block, position) = match &at {
        None => (q.shallow_clone(), positions.shallow_clone()),
        Some(at) => (
            tch::Tensor::zeros([block, heads, head_dim], (q.kind(), device)).index_copy(0, at, q),
            tch::Tensor::zeros([block], (tch::Kind::Int64, device)).index_copy(0, at, positions),
        ),
    };
    let key_positions = tch::Tensor::arange(len, (tch::Kind::Int64, device));
    let visible = key_positions.unsqueeze(0).le_tensor(&position.unsqueeze(1)); // [block, len]
    let out = if device == tch::Device::Cpu {
        // Query head h reads KV head h / group: the group's queries are rows of one product.
        let q = q_block.reshape([block * kv_heads, heads / kv_heads, head_dim]);
        // At beta 0 `baddbmm`'s input is ignored but must broadcast to the scores' shape.
        let ignored = q.narrow(2, 0, 1);
        let scores = ignored.baddbmm(&q, &k.transpose(1, 2), 0.0, 1.0 / (head_dim as f64).sqrt());
        let hidden = visible.logical_not().view([block, 1, 1, len]);
        let scores = scores.view([block, kv_heads, -1, len]).masked_fill(&hidden, f64::NEG_INFINITY);
        scores.softmax(-1, None).view([block * kv_heads, -1, len]).bmm(&v)
    } else {
        let q = q_block.unsqueeze(2); // [block, heads, 1, head_dim]
        let [k, v] = [&k, &v].map(|t| t.view([block, kv_heads, len, head_dim]));
        let mask = visible.view([block, 1, 1, len]);
        tch::Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, None, true)
    };
    let out = out.reshape([block, heads * head_dim]);
    match &at {
        None => out,
        Some(at) => out.index_select(0, at),
    }
}
