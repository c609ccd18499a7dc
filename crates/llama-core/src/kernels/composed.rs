//! The reference forms of the seam's operations, each a plain composition of Burn tensor ops:
//! [`super::Composed`] is made of them, and a provider that fuses only some cases calls them for
//! the rest.

use burn::tensor::{Bool, DType, Int, Tensor, TensorData, activation, backend::Backend};

use super::seam::{Kernels, Normed, Placement, Product, Projections, QkvIntoCache, Rows};
use crate::kv_cache::CachedKv;

/// `x / sqrt(mean(x²) + eps) * weight` over the last dimension.
pub fn rms_norm<B: Backend>(input: Normed<'_, B>) -> Tensor<B, 2> {
    // The mean of squares in f32: in f16 a residual stream value above 256 squares past the
    // largest f16 (65504).
    let dtype = input.x.dtype();
    let in_f32 = |t: Tensor<B, 2>| if dtype == DType::F32 { t } else { t.cast(DType::F32) };
    let x32 = in_f32(input.x);
    let inv_rms = x32.clone().powi_scalar(2).mean_dim(1).add_scalar(input.norm.eps).sqrt().recip();
    let normed = x32 * inv_rms;
    let normed = if dtype == DType::F32 { normed } else { normed.cast(dtype) };
    normed * input.norm.weight.clone().unsqueeze::<2>()
}

/// [`Kernels::product`]: the norm, the provider's `linear`, the add.
pub fn product<B: Backend, K: Kernels<B> + ?Sized>(k: &K, p: Product<'_, B, K::Weight>) -> Tensor<B, 2> {
    let x = match p.norm {
        Some(norm) => rms_norm(norm.of(p.x)),
        None => p.x,
    };
    let y = k.linear(x, p.weight);
    match p.residual {
        Some(residual) => residual + y,
        None => y,
    }
}

/// `norm(x) · Wᵀ` for every part of `weights`, side by side: `[rows, Σ out]`.
pub fn project<B: Backend, K: Kernels<B> + ?Sized>(
    k: &K,
    input: Normed<'_, B>,
    weights: &Projections<K::Weight>,
) -> Tensor<B, 2> {
    match weights {
        Projections::Stacked(w) => k.product(Product::normed(input, w)),
        // The norm once per part: the provider's own, through its `product`.
        Projections::Separate(ws) => {
            Tensor::cat(ws.iter().map(|w| k.product(Product::normed(input.clone(), w))).collect(), 1)
        }
    }
}

/// [`Kernels::qkv_into_cache`]: the projection, then [`rope_into_cache`].
pub fn qkv_into_cache<B: Backend, K: Kernels<B> + ?Sized>(
    k: &K,
    args: QkvIntoCache<'_, B, K::Weight>,
) -> (Tensor<B, 3>, CachedKv<B>) {
    let qkv = project(k, args.input, args.weight);
    rope_into_cache(qkv, args.rows, args.cache)
}

/// From one `[rows, (heads + 2·kv_heads)·head_dim]` Q/K/V projection: rotates the queries and
/// keys at each row's position (`rows.cos`, `rows.sin`, half width), writes each row's keys and
/// values into its slot of `cache` there, and returns the queries `[rows, heads, head_dim]` and
/// the cache.
pub fn rope_into_cache<B: Backend>(
    qkv: Tensor<B, 2>,
    rows: &Rows<B>,
    mut cache: CachedKv<B>,
) -> (Tensor<B, 3>, CachedKv<B>) {
    let (cos, sin) = (rows.cos.clone(), rows.sin.clone());
    let (q, keys, values) = rotate_qkv(qkv, rows.heads, rows.kv_heads, cos, sin);
    let head_dim = q.dims()[2];
    for (span, first) in rows.spans_from() {
        let at = [first..first + span.rows, 0..rows.kv_heads, 0..head_dim];
        let own = |t: &Tensor<B, 3>| t.clone().slice(at.clone()).swap_dims(0, 1); // [kv_heads, rows, head_dim]
        let (new_keys, new_values) = (own(&keys), own(&values));
        cache = match &rows.visible {
            None => cache.written(span.slot, span.start, new_keys, new_values),
            Some(_) => {
                let position = rows.positions.clone().narrow(0, first, 1);
                blend_at_position(cache, span.slot, position, new_keys, new_values)
            }
        };
    }
    (q, cache)
}

/// The static step's cache write without a host position: the new row `[kv_heads, 1, head_dim]`
/// blended into slot `slot` where the positions match `position` `[1]` (every row of the slot is
/// read and written, O(capacity): fine for a reference).
fn blend_at_position<B: Backend>(
    cache: CachedKv<B>,
    slot: usize,
    position: Tensor<B, 1, Int>,
    new_keys: Tensor<B, 3>,
    new_values: Tensor<B, 3>,
) -> CachedKv<B> {
    let [kv_heads, _, head_dim] = new_keys.dims();
    let capacity = cache.keys.dims()[1];
    let at = [slot * kv_heads..(slot + 1) * kv_heads, 0..capacity, 0..head_dim];
    let positions = Tensor::<B, 1, Int>::arange(0..capacity as i64, &position.device());
    let shape = [kv_heads, capacity, head_dim];
    let row = positions.equal(position.expand([capacity])).reshape([1, capacity, 1]).expand(shape);
    let blend = |all: Tensor<B, 3>, new: Tensor<B, 3>| {
        let own = all.clone().slice(at.clone()).mask_where(row.clone(), new.expand(shape));
        all.slice_assign(at.clone(), own)
    };
    CachedKv { keys: blend(cache.keys, new_keys), values: blend(cache.values, new_values) }
}

/// One `[rows, (heads + 2·kv_heads)·head_dim]` Q/K/V projection split into queries
/// `[rows, heads, head_dim]`, keys and values `[rows, kv_heads, head_dim]`, the queries and
/// keys rotated by the `cos`, `sin` rows `[rows, head_dim / 2]` of their positions.
pub fn rotate_qkv<B: Backend>(
    qkv: Tensor<B, 2>,
    heads: usize,
    kv_heads: usize,
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
) -> (Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let [tokens, width] = qkv.dims();
    let head_dim = width / (heads + 2 * kv_heads);
    let qkv = qkv.reshape([tokens, heads + 2 * kv_heads, head_dim]);
    let part = |first: usize, n: usize| qkv.clone().slice([0..tokens, first..first + n, 0..head_dim]);
    let q = rotate_half_split(part(0, heads), cos.clone(), sin.clone());
    let k = rotate_half_split(part(heads, kv_heads), cos, sin);
    (q, k, part(heads + kv_heads, kv_heads))
}

/// [`Kernels::attention`] (see there): each span over its own slot.
pub fn attention<B: Backend>(q: Tensor<B, 3>, kv: CachedKv<B>, rows: &Rows<B>) -> Tensor<B, 2> {
    let [_, heads, head_dim] = q.dims();
    let attended = rows.spans_from().map(|(span, first)| {
        let q = q.clone().slice([first..first + span.rows, 0..heads, 0..head_dim]);
        match &rows.visible {
            None => {
                let (k, v) = kv.slot(span.slot, rows.kv_heads, span.end());
                let hidden = (span.rows > 1).then(|| causal_mask::<B>(span.rows, span.end(), &q.device()));
                grouped_attention(q, k, v, hidden)
            }
            Some(visible) => {
                let capacity = visible.dims()[1];
                let (k, v) = kv.slot(span.slot, rows.kv_heads, capacity);
                let hidden = visible.clone().slice([first..first + span.rows, 0..capacity]).bool_not();
                grouped_attention(q, k, v, Some(hidden))
            }
        }
    });
    Tensor::cat(attended.collect(), 0)
}

/// `q` `[tokens, heads, head_dim]` over `k`, `v` `[kv_heads, keys, head_dim]`, with `hidden`
/// `[tokens, keys]` (true: may not attend) where some keys are out of a query's sight.
fn grouped_attention<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    hidden: Option<Tensor<B, 2, Bool>>,
) -> Tensor<B, 2> {
    let [tokens, heads, head_dim] = q.dims();
    let [kv_heads, keys, _] = k.dims();
    let group = heads / kv_heads;
    // Query head h reads KV head h / group (llama.cpp and HF's repeat_kv agree). Grouping the
    // queries as [kv_heads, group * tokens, head_dim] lets one batched matmul per KV head do
    // the work without materialising repeated keys.
    let q = q.swap_dims(0, 1).reshape([kv_heads, group * tokens, head_dim]);
    let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (head_dim as f64).sqrt());
    let scores = match hidden {
        // Rows of `scores` are (query head in the group, token): the mask repeats per head.
        Some(mask) => {
            let mask = mask.unsqueeze::<3>().expand([group, tokens, keys]).reshape([1, group * tokens, keys]);
            scores.mask_fill(mask.expand([kv_heads, group * tokens, keys]), f32::NEG_INFINITY)
        }
        None => scores,
    };
    let out = activation::softmax(scores, 2).matmul(v); // [kv_heads, group * tokens, head_dim]
    out.reshape([heads, tokens, head_dim]).swap_dims(0, 1).reshape([tokens, heads * head_dim])
}

/// [`Kernels::swiglu_product`]: the products, then `silu(gate) * up`.
pub fn swiglu_product<B: Backend, K: Kernels<B> + ?Sized>(
    k: &K,
    input: Normed<'_, B>,
    gate_up: &Projections<K::Weight>,
) -> Tensor<B, 2> {
    let both = project(k, input, gate_up);
    let [tokens, width] = both.dims();
    let ffn = width / 2;
    activation::silu(both.clone().slice([0..tokens, 0..ffn])) * both.slice([0..tokens, ffn..width])
}

/// [`Kernels::rows`]: the half-width rotary rows at each position and, for the static step,
/// the visible positions.
pub fn rows<B: Backend>(placement: Placement<'_, B>) -> Rows<B> {
    let (cos, sin) = placement.rope.tables();
    let positions = placement.positions;
    let visible = placement.static_capacity.map(|capacity| visible_positions(positions.clone(), capacity));
    Rows {
        cos: cos.clone().select(0, positions.clone()),
        sin: sin.clone().select(0, positions.clone()),
        spans: placement.spans,
        positions,
        slots: placement.slots,
        heads: placement.heads,
        kv_heads: placement.kv_heads,
        visible,
    }
}

/// `[rows, capacity]`: true for the positions at or before each row's position `[rows]`.
pub fn visible_positions<B: Backend>(positions: Tensor<B, 1, Int>, capacity: usize) -> Tensor<B, 2, Bool> {
    let rows = positions.dims()[0];
    let all = Tensor::<B, 1, Int>::arange(0..capacity as i64, &positions.device()).reshape([1, capacity]);
    all.expand([rows, capacity]).lower_equal(positions.reshape([rows, 1]).expand([rows, capacity]))
}

/// Half-split rotary embedding of `x` `[tokens, heads, head_dim]` with the `cos`, `sin` rows
/// `[tokens, head_dim / 2]` of its positions: `(x₁·cos - x₂·sin, x₂·cos + x₁·sin)`.
pub fn rotate_half_split<B: Backend>(x: Tensor<B, 3>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 3> {
    let [tokens, heads, head_dim] = x.dims();
    let half = head_dim / 2;
    let x1 = x.clone().slice([0..tokens, 0..heads, 0..half]);
    let x2 = x.slice([0..tokens, 0..heads, half..head_dim]);
    let cos = cos.unsqueeze_dim::<3>(1);
    let sin = sin.unsqueeze_dim::<3>(1);
    let rotated_first = x1.clone() * cos.clone() - x2.clone() * sin.clone();
    let rotated_second = x2 * cos + x1 * sin;
    Tensor::cat(vec![rotated_first, rotated_second], 2)
}

/// Row-major `rows × cols` → `cols × rows`, in cache-sized tiles.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

/// `[tokens, keys]`: `true` where query `t` must not see key `s`: the queries are the last
/// `tokens` of `keys` positions, so query `t` sees keys `0 ..= keys - tokens + t`.
fn causal_mask<B: Backend>(tokens: usize, keys: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let first_query_pos = keys - tokens;
    let mask: Vec<bool> = (0..tokens).flat_map(|t| (0..keys).map(move |s| s > first_query_pos + t)).collect();
    Tensor::from_data(TensorData::new(mask, [tokens, keys]), device)
}
