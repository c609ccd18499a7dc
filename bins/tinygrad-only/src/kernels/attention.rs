//! Causal grouped-query attention over the KV cache in two kernels (flash-decoding).
//!
//! Decoding has one query per head but hundreds to thousands of keys: one workgroup per head
//! would leave most of a GPU idle. So the keys are split into blocks of [`SPLIT`]: one workgroup
//! per (head, query, key block) computes its block's scores, their max and exp-sum, and the
//! exp-weighted sum of its values (softmax never leaves shared memory); a second kernel merges
//! the blocks' partial results with the usual rescaling by `exp(max_block - max_all)`.
//! Keys and values are read in place through their strides, so the cache view is never copied.
//! Every query row reads its own position and cache slot from two small device tensors made once
//! per step, so one launch serves a prompt's rows (each seeing the keys up to its own position),
//! one decoded token, or a server's step of several sequences, each in its own slot.

use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::places::{Places, RowPlaces, position_of, slot_of};
use super::stream::{CubeT, count_launch};

/// Keys per workgroup; also its thread count (one key score per thread).
const SPLIT: u32 = 64;
/// Largest head dimension the query's shared-memory copy holds.
const MAX_HEAD_DIM: usize = 256;
/// Stands for -∞ (WGSL has no infinity literal); exp of it minus any score is 0.
const NEG_BIG: f32 = -1.0e30;

#[cube(launch_unchecked)]
fn attention_split_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    places: &Places,
    part_out: &mut Tensor<f32>,
    part_max: &mut Tensor<f32>,
    part_sum: &mut Tensor<f32>,
    kv_heads: u32,
    scale: f32,
    #[comptime] per_row: bool,
    #[define(F)] _dtype: StorageType,
) {
    // q [rows, heads, head_dim]; k, v [slots · kv_heads, capacity, head_dim] (strided): row
    // `token` reads its slot's block, positions 0 ..= its own.
    let heads = q.shape(1);
    let head_dim = q.shape(2);
    let head = CUBE_POS_X as usize;
    let token = CUBE_POS_Y as usize;
    let split = CUBE_POS_Z as usize;
    let splits = CUBE_COUNT_Z as usize;
    let kv_heads = kv_heads as usize;
    let kv_head = slot_of(places, token, per_row) * kv_heads + head / (heads / kv_heads);
    let lane = UNIT_POS_X as usize;
    let visible = position_of(places, token, per_row) + 1;
    let first = split * comptime!(SPLIT as usize);
    let end = min(first + comptime!(SPLIT as usize), visible);

    let mut query = SharedMemory::<f32>::new(MAX_HEAD_DIM);
    let mut weights = SharedMemory::<f32>::new(comptime!(SPLIT as usize));
    let mut scratch = SharedMemory::<f32>::new(comptime!(SPLIT as usize));
    let q_base = token * q.stride(0) + head * q.stride(1);
    let mut d = lane;
    while d < head_dim {
        query[d] = f32::cast_from(q[q_base + d * q.stride(2)]) * scale;
        d += comptime!(SPLIT as usize);
    }
    sync_cube();

    let key = first + lane;
    let mut score = f32::new(NEG_BIG);
    if key < end {
        let k_base = kv_head * k.stride(0) + key * k.stride(1);
        let mut dot = f32::new(0.0);
        for d in 0..head_dim {
            dot += query[d] * f32::cast_from(k[k_base + d * k.stride(2)]);
        }
        score = dot;
    }
    scratch[lane] = score;
    sync_cube();
    #[unroll]
    for step in 1..7u32 {
        let stride = comptime!((SPLIT >> step) as usize);
        if lane < stride {
            scratch[lane] = max(scratch[lane], scratch[lane + stride]);
        }
        sync_cube();
    }
    let block_max = scratch[0];
    sync_cube();
    let mut weight = f32::new(0.0);
    if key < end {
        weight = f32::exp(score - block_max);
    }
    weights[lane] = weight;
    scratch[lane] = weight;
    sync_cube();
    #[unroll]
    for step in 1..7u32 {
        let stride = comptime!((SPLIT >> step) as usize);
        if lane < stride {
            scratch[lane] += scratch[lane + stride];
        }
        sync_cube();
    }

    let part = (token * heads + head) * splits + split;
    let count = select(end > first, end - first, 0);
    let v_base = kv_head * v.stride(0) + first * v.stride(1);
    let mut d = lane;
    while d < head_dim {
        let mut acc = f32::new(0.0);
        for j in 0..count {
            acc += weights[j] * f32::cast_from(v[v_base + j * v.stride(1) + d * v.stride(2)]);
        }
        part_out[part * head_dim + d] = acc;
        d += comptime!(SPLIT as usize);
    }
    if lane == 0 {
        part_max[part] = block_max;
        part_sum[part] = scratch[0];
    }
}

#[cube(launch_unchecked)]
fn attention_merge_kernel<F: Float>(
    part_out: &Tensor<f32>,
    part_max: &Tensor<f32>,
    part_sum: &Tensor<f32>,
    out: &mut Tensor<F>,
    splits: u32,
    #[define(F)] _dtype: StorageType,
) {
    // One workgroup per (head, token); out is [tokens, heads * head_dim].
    let heads = CUBE_COUNT_X as usize;
    let head = CUBE_POS_X as usize;
    let token = CUBE_POS_Y as usize;
    let head_dim = out.shape(1) / heads;
    let splits = splits as usize;
    let first_part = (token * heads + head) * splits;
    let mut overall = f32::new(NEG_BIG);
    for s in 0..splits {
        overall = max(overall, part_max[first_part + s]);
    }
    let mut total = f32::new(0.0);
    for s in 0..splits {
        total += f32::exp(part_max[first_part + s] - overall) * part_sum[first_part + s];
    }
    let mut d = UNIT_POS_X as usize;
    while d < head_dim {
        let mut acc = f32::new(0.0);
        for s in 0..splits {
            acc += f32::exp(part_max[first_part + s] - overall) * part_out[(first_part + s) * head_dim + d];
        }
        out[token * heads * head_dim + head * head_dim + d] = F::cast_from(acc / total);
        d += CUBE_DIM_X as usize;
    }
}

/// GQA of `q` `[rows, heads, head_dim]`, each row over its slot of `k`, `v` `[slots · kv_heads,
/// capacity, head_dim]` (any strides) up to its position (`places`). Returns
/// `[rows, heads * head_dim]`.
pub fn attention(q: CubeT, [k, v]: [CubeT; 2], places: RowPlaces) -> CubeT {
    let q_shape = q.meta.shape().clone();
    let (tokens, heads, head_dim) = (q_shape[0], q_shape[1], q_shape[2]);
    assert!(head_dim <= MAX_HEAD_DIM, "head_dim {head_dim} above the attention kernel's {MAX_HEAD_DIM}");
    let capacity = k.meta.shape()[1].min(v.meta.shape()[1]);
    let longest = places.last_position + 1;
    assert!(longest <= capacity, "attention over {longest} of {capacity} cached positions");
    assert!(
        places.positions.dtype == DType::I32
            && places.slots.dtype == DType::I32
            && places.positions.meta.shape()[0] == tokens,
        "a row's position and slot are one i32 each"
    );
    let splits = longest.div_ceil(SPLIT as usize);
    let (client, device) = (q.client.clone(), q.device.clone());
    let f32_tensor = |shape: Shape| empty_device_contiguous_dtype(client.clone(), device.clone(), shape, DType::F32);
    let part_out = f32_tensor(Shape::new([tokens * heads * splits * head_dim]));
    let part_max = f32_tensor(Shape::new([tokens * heads * splits]));
    let part_sum = f32_tensor(Shape::new([tokens * heads * splits]));
    let out = empty_device_contiguous_dtype(client.clone(), device, Shape::new([tokens, heads * head_dim]), q.dtype);
    let dtype = q.dtype;
    let (places_arg, per_row) = places.arg();
    count_launch();
    // SAFETY: the provider hands in each row's position below its slot's length, within `longest`
    // (asserted within both caches) and slots within the cache's blocks, so keys are read below
    // `visible` and values below the split's `count`; the query's shared copy stops at head_dim,
    // asserted ≤ MAX_HEAD_DIM above.
    unsafe {
        attention_split_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &client,
            CubeCount::Static(heads as u32, tokens as u32, splits as u32),
            CubeDim::new_1d(SPLIT),
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            places_arg,
            part_out.clone().into_tensor_arg(),
            part_max.clone().into_tensor_arg(),
            part_sum.clone().into_tensor_arg(),
            places.kv_heads as u32,
            1.0 / (head_dim as f32).sqrt(),
            per_row,
            dtype.into(),
        )
    };
    count_launch();
    // SAFETY: the partial buffers hold an entry (of head_dim values, for `part_out`) per (token, head,
    // split), exactly the range the workgroups and `splits` cover.
    unsafe {
        attention_merge_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &client,
            CubeCount::Static(heads as u32, tokens as u32, 1),
            CubeDim::new_1d(64),
            part_out.into_tensor_arg(),
            part_max.into_tensor_arg(),
            part_sum.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            splits as u32,
            dtype.into(),
        )
    };
    out
}
