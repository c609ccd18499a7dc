//! The reference forms of the seam's operations, each a plain composition of Burn tensor ops.
//! They are the trait's defaults, and a provider that fuses only some cases calls them for the
//! rest.

use burn::tensor::{Bool, DType, Int, Tensor, TensorData, activation, backend::Backend};

use super::{Kernels, Normed, Pass, Position, Product, Projections, QkvIntoCache, StaticStep, StepPosition};
use crate::kv_cache::CachedKv;
use crate::rope::RopeTables;

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

/// `norm(x) · Wᵀ` for every part of `weights`, side by side: `[tokens, Σ rows]`.
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
    rope_into_cache(qkv, args.pass, args.cache)
}

/// From one `[tokens, (heads + 2·kv_heads)·head_dim]` Q/K/V projection: rotates the queries and
/// keys for the pass's positions, writes keys and values into `cache` there, and returns the
/// queries `[tokens, heads, head_dim]` and the cache.
pub fn rope_into_cache<B: Backend>(
    qkv: Tensor<B, 2>,
    pass: &Pass<'_, B>,
    (keys, values): (Tensor<B, 3>, Tensor<B, 3>),
) -> (Tensor<B, 3>, CachedKv<B>) {
    let (kv_heads, at) = (pass.kv_heads, &pass.at);
    let (cos, sin) = match at {
        Position::Host(start) => pass.rope.range(*start, qkv.dims()[0]),
        Position::Device(step) => (step.cos.clone(), step.sin.clone()),
    };
    let (q, new_keys, new_values) = rotate_qkv(qkv, pass.heads, kv_heads, cos, sin);
    let (new_keys, new_values) = (new_keys.swap_dims(0, 1), new_values.swap_dims(0, 1));
    let head_dim = q.dims()[2];
    let [_, capacity, _] = keys.dims();
    let kv = match at {
        Position::Host(start) => CachedKv::written((keys, values), *start, new_keys, new_values),
        Position::Device(step) => {
            // Without a host position there is no slice to assign: blend the new row in where the
            // position matches (every cache row is read and written, O(capacity), fine for a
            // reference).
            let row = Tensor::<B, 1, Int>::arange(0..capacity as i64, &keys.device())
                .equal(step.position.clone().expand([capacity]));
            let shape = [kv_heads, capacity, head_dim];
            let row = row.reshape([1, capacity, 1]).expand(shape);
            let keys = keys.mask_where(row.clone(), new_keys.expand(shape));
            CachedKv::whole(keys, values.mask_where(row, new_values.expand(shape)))
        }
    };
    (q, kv)
}

/// One `[tokens, (heads + 2·kv_heads)·head_dim]` Q/K/V projection split into queries
/// `[tokens, heads, head_dim]`, keys and values `[tokens, kv_heads, head_dim]`, the queries and
/// keys rotated by the `cos`, `sin` rows `[tokens, head_dim / 2]` of their positions.
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

/// [`Kernels::attention`] (see there).
pub fn attention<B: Backend>(q: Tensor<B, 3>, kv: CachedKv<B>, at: &Position<B>) -> Tensor<B, 2> {
    let [tokens, heads, head_dim] = q.dims();
    let (k, v) = kv.visible();
    let [kv_heads, keys, _] = k.dims();
    let group = heads / kv_heads;
    // Query head h reads KV head h / group (llama.cpp and HF's repeat_kv agree). Grouping the
    // queries as [kv_heads, group * tokens, head_dim] lets one batched matmul per KV head do
    // the work without materialising repeated keys.
    let q = q.swap_dims(0, 1).reshape([kv_heads, group * tokens, head_dim]);
    let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (head_dim as f64).sqrt());
    let hidden = match at {
        Position::Device(step) => Some(step.visible.clone().bool_not().reshape([1, 1, keys])),
        // A single query at the newest position may see every key.
        Position::Host(_) if tokens == 1 => None,
        Position::Host(_) => Some(causal_mask::<B>(group, tokens, keys, &scores.device()).unsqueeze::<3>()),
    };
    let scores = match hidden {
        Some(mask) => scores.mask_fill(mask.expand([kv_heads, group * tokens, keys]), f32::NEG_INFINITY),
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

/// [`Kernels::step_position`]: the half-width rotary rows at `position` and the visible rows.
pub fn step_position<B: Backend>(
    tables: &RopeTables<B>,
    position: Tensor<B, 1, Int>,
    capacity: usize,
) -> StepPosition<B> {
    let (cos, sin) = tables.tables();
    let device = position.device();
    let visible =
        Tensor::<B, 1, Int>::arange(0..capacity as i64, &device).lower_equal(position.clone().expand([capacity]));
    StepPosition {
        cos: cos.clone().select(0, position.clone()),
        sin: sin.clone().select(0, position.clone()),
        position,
        visible,
    }
}

/// The static decode step run as it is: the position put on `x`'s device, then `step` called
/// ([`Kernels::run_static_step`]'s default, and what a capturing provider does when it cannot).
pub fn run_step_eagerly<B: Backend>(x: Tensor<B, 2>, position: usize, step: &mut StaticStep<B>) -> Tensor<B, 2> {
    let position = Tensor::<B, 1, Int>::from_data(TensorData::from([position as i64]), &x.device());
    step(x, position)
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

/// `[group * tokens, keys]`: `true` where query row `(g, t)` must not see key `s`: the queries
/// are the last `tokens` of `keys` positions, so query `t` sees keys `0 ..= keys - tokens + t`.
fn causal_mask<B: Backend>(group: usize, tokens: usize, keys: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let first_query_pos = keys - tokens;
    let mask: Vec<bool> = (0..group * tokens)
        .flat_map(|row| {
            let visible = first_query_pos + row % tokens;
            (0..keys).map(move |s| s > visible)
        })
        .collect();
    Tensor::from_data(TensorData::new(mask, [group * tokens, keys]), device)
}
