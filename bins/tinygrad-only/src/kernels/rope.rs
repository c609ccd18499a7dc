//! Rotary embedding fused with the KV-cache write, reading the position tables in place.
//!
//! Composed, RoPE gathers the table rows for the positions, splits `x` in halves, does four
//! multiplies and two adds and concatenates: several kernels and a copy, twice (queries and
//! keys), then two transposes and two slice-assigns into the cache. Here
//! [`rope_qkv_into_cache`], from the fused Q/K/V projection, has each thread rotate one
//! `(x[i], x[i + d/2])` pair with `cos`/`sin` read straight from the whole tables at the row's
//! position (no table rows are gathered), write the rotated queries, and write the rotated keys
//! and the values straight into the layer's cache at the row's position in the row's slot (in
//! place: the cache buffer is handed over, not copied): one launch per layer, whichever
//! sequences the rows belong to.
//!
//! For one token the launch disappears into the Q/K/V product (`matvec.rs` with
//! [`RopeInto`]): the product's threads take the rows of each head in pair order
//! ([`pair_order_row`]: `0, d/2, 1, d/2 + 1, …`), so the two rows RoPE rotates together are summed
//! by neighbouring threads of one workgroup, which then rotate them and write them where this
//! file's kernel would have ([`rotate_and_store_pair`]).

use burn::tensor::Shape;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::layout::{ChunkSpan, Layout, local_row, reduce_lanes};
use super::places::{Places, RowPlaces, position_of, slot_of};
use super::stream::{CubeT, count_launch};
use super::weights::tensor_arg;

#[cube(launch_unchecked)]
fn rope_qkv_cache_kernel<F: Float>(
    qkv: &Tensor<F>,
    cos: &Tensor<F>,
    sin: &Tensor<F>,
    places: &Places,
    q_out: &mut Tensor<F>,
    cache_k: &mut Tensor<F>,
    cache_v: &mut Tensor<F>,
    kv_heads: u32,
    #[comptime] per_row: bool,
    #[define(F)] _dtype: StorageType,
) {
    // One workgroup per (row, head slot): head slots are the query heads, then the key heads,
    // then the value heads, as the fused projection lays them out in a row of qkv. Row `token`
    // goes to its position in its cache slot's block.
    let heads = q_out.shape(1);
    let head_dim = q_out.shape(2);
    let half = head_dim / 2;
    let kv_heads = kv_heads as usize;
    let slots = heads + 2 * kv_heads;
    let token = CUBE_POS_X as usize / slots;
    let slot = CUBE_POS_X as usize % slots;
    let src = token * slots * head_dim + slot * head_dim;
    let position = position_of(places, token, per_row);
    let block = slot_of(places, token, per_row) * kv_heads;
    let table_row = position * half;
    let mut i = UNIT_POS_X as usize;
    while i < half {
        let a = qkv[src + i];
        let b = qkv[src + i + half];
        if slot < heads + kv_heads {
            let c = cos[table_row + i];
            let s = sin[table_row + i];
            let first = a * c - b * s;
            let second = b * c + a * s;
            if slot < heads {
                let dst = (token * heads + slot) * head_dim;
                q_out[dst + i] = first;
                q_out[dst + i + half] = second;
            } else {
                let dst = (block + slot - heads) * cache_k.stride(0) + position * cache_k.stride(1);
                cache_k[dst + i * cache_k.stride(2)] = first;
                cache_k[dst + (i + half) * cache_k.stride(2)] = second;
            }
        } else {
            let dst = (block + slot - heads - kv_heads) * cache_v.stride(0) + position * cache_v.stride(1);
            cache_v[dst + i * cache_v.stride(2)] = a;
            cache_v[dst + (i + half) * cache_v.stride(2)] = b;
        }
        i += CUBE_DIM_X as usize;
    }
}

/// A tensor this kernel may write: the cache itself when nothing else holds its buffer (the
/// usual case: the model hands it over), else a copy.
pub(super) fn writable(t: CubeT) -> CubeT {
    if t.can_mut() { t } else { t.copy() }
}

/// `qkv` `[rows, (heads + 2·kv_heads)·head_dim]` contiguous → rotated queries
/// `[rows, heads, head_dim]`, with each row's rotated keys and its values written into its slot
/// of the caches `[slots · kv_heads, capacity, head_dim]` at its position. Returns
/// `(queries, keys, values)`.
pub fn rope_qkv_into_cache(
    qkv: CubeT,
    heads: usize,
    [cos, sin]: [CubeT; 2],
    rows: RowPlaces,
    [cache_k, cache_v]: [CubeT; 2],
) -> (CubeT, CubeT, CubeT) {
    let tokens = qkv.meta.shape()[0];
    let [capacity, head_dim] = [cache_k.meta.shape()[1], cache_k.meta.shape()[2]];
    let positions = cos.meta.shape()[0].min(capacity);
    assert!(
        rows.last_position < positions,
        "position {} past the RoPE tables or the cache ({positions})",
        rows.last_position
    );
    let (cache_k, cache_v) = (writable(cache_k), writable(cache_v));
    let q = empty_device_contiguous_dtype(
        qkv.client.clone(),
        qkv.device.clone(),
        Shape::new([tokens, heads, head_dim]),
        qkv.dtype,
    );
    let client = qkv.client.clone();
    let dtype = qkv.dtype;
    let (places_arg, per_row) = rows.arg();
    count_launch();
    // SAFETY: one workgroup per (row, head slot) of `qkv`; the table rows read and the cache rows written
    // are at most `last_position`, below the tables' and the cache's length (asserted above), in the
    // rows' own slots, which the provider takes from the cache's.
    unsafe {
        rope_qkv_cache_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
            &client,
            CubeCount::Static((tokens * (heads + 2 * rows.kv_heads)) as u32, 1, 1),
            CubeDim::new_1d((head_dim as u32 / 2).clamp(1, 64)),
            qkv.into_tensor_arg(),
            cos.into_tensor_arg(),
            sin.into_tensor_arg(),
            places_arg,
            q.clone().into_tensor_arg(),
            cache_k.clone().into_tensor_arg(),
            cache_v.clone().into_tensor_arg(),
            rows.kv_heads as u32,
            per_row,
            dtype.into(),
        )
    };
    (q, cache_k, cache_v)
}

/// The tensors a product's RoPE ending reads and writes, as one kernel argument: the
/// `[positions, head_dim / 2]` tables, and the `[slots · kv_heads, capacity, head_dim]` caches
/// it writes in place (which is why the kernel takes it `&mut`), at the token's `position` in
/// the slot whose heads begin at row block `block`.
#[derive(CubeLaunch, CubeType)]
pub struct RopeCache<F: Float> {
    pub cos: Tensor<F>,
    pub sin: Tensor<F>,
    pub keys: Tensor<F>,
    pub values: Tensor<F>,
    pub position: u32,
    pub block: u32,
    pub kv_heads: u32,
}

/// Where a one-token Q/K/V product puts its rows instead of a `[1, rows]` output: rotated by
/// the tables' row `position` into the queries (the product's output) and the key cache, the
/// values into the value cache, all at `position` (see the module's doc).
#[derive(Debug)]
pub struct RopeInto {
    pub cos: CubeT,
    pub sin: CubeT,
    pub position: usize,
    /// The cache slot the token's keys and values go to, and its KV heads.
    pub slot: usize,
    pub kv_heads: usize,
    /// `[slots · kv_heads, capacity, head_dim]`, written in place.
    pub cache_keys: CubeT,
    pub cache_values: CubeT,
}

impl RopeInto {
    pub fn head_dim(&self) -> usize {
        self.cache_keys.meta.shape()[2]
    }

    /// Panics unless `position` has a table row and a cache row, and `slot` a block of the cache.
    pub fn assert_in_bounds(&self) {
        let [blocks, capacity] = [self.cache_keys.meta.shape()[0], self.cache_keys.meta.shape()[1]];
        let positions = self.cos.meta.shape()[0].min(capacity);
        assert!(
            self.position < positions,
            "position {} past the RoPE tables or the cache ({positions})",
            self.position
        );
        assert!((self.slot + 1) * self.kv_heads <= blocks, "slot {} past the cache's {blocks} heads", self.slot);
    }

    /// The kernel argument [`rotate_and_store_pair`] reads.
    pub fn arg<F: Float>(&self) -> RopeCacheLaunch<F, burn_wgpu::WgpuRuntime> {
        let [cos, sin, keys, values] = [&self.cos, &self.sin, &self.cache_keys, &self.cache_values].map(tensor_arg);
        let (block, kv_heads) = ((self.slot * self.kv_heads) as u32, self.kv_heads as u32);
        RopeCacheLaunch::new(cos, sin, keys, values, self.position as u32, block, kv_heads)
    }
}

/// The row of a head's `head_dim` rows that product row `row` reads in pair order: rows
/// `2i` and `2i + 1` of each head read rows `i` and `i + head_dim/2`, the pair RoPE rotates
/// together (half-split layout, as `crate::rope` lays Q and K out).
#[cube]
pub(super) fn pair_order_row(row: usize, head_dim: usize) -> usize {
    let within = row % head_dim;
    row - within + (within % 2) * (head_dim / 2) + within / 2
}

/// The tail of a one-token product in pair order ([`pair_order_row`]), in place of
/// `reduce_and_store`: adds the lanes' sums of each row, then the row's first lane takes its
/// pair's other sum from the neighbouring row, rotates, and writes a query into `out`
/// `[1, heads, head_dim]` or a key into `into.keys`, or writes a value into `into.values` unrotated,
/// at `into.position`. Rows past the chunk's end write nothing (a chunk is whole heads, so every
/// written row's pair is in it).
#[cube]
pub(super) fn rotate_and_store_pair<F: Float>(
    sum: f32,
    out: &mut Tensor<F>,
    into: &mut RopeCache<F>,
    span: &ChunkSpan,
    #[comptime] layout: Layout,
) {
    let lanes = comptime!(layout.lanes);
    let local_row = local_row(layout);
    let mut acc = Array::<f32>::new(1usize);
    acc[0] = sum;
    let mut partial = SharedMemory::<f32>::new(comptime!(layout.threads() as usize));
    reduce_lanes(&acc, &acc, &mut partial, false, 1u32, layout);
    // With one lane per row nothing synced yet, and the pair's sum is another thread's.
    sync_cube();
    if UNIT_POS_X == 0 && local_row < span.rows as usize {
        let own = partial[UNIT_POS_Y as usize * comptime!(lanes as usize)];
        let other = partial[(UNIT_POS_Y ^ 1) as usize * comptime!(lanes as usize)];
        let (heads, kv_heads, head_dim) = (out.shape(1), into.kv_heads as usize, into.keys.shape(2));
        let block = into.block as usize;
        let half = head_dim / 2;
        let row = span.first_row as usize + local_row;
        let slot = row / head_dim;
        let pair = (row % head_dim) / 2;
        let second = row % 2 == 1;
        let dim = pair + half * (row % 2);
        let at = into.position as usize;
        if slot < heads + kv_heads {
            let c = f32::cast_from(into.cos[at * half + pair]);
            let s = f32::cast_from(into.sin[at * half + pair]);
            // (a, b) → (a·c - b·s, b·c + a·s), with a the pair's first row.
            let mut rotated = own * c + other * s;
            if !second {
                rotated = own * c - other * s;
            }
            if slot < heads {
                out[slot * head_dim + dim] = F::cast_from(rotated);
            } else {
                let keys = &mut into.keys;
                let dst = (block + slot - heads) * keys.stride(0) + at * keys.stride(1) + dim * keys.stride(2);
                keys[dst] = F::cast_from(rotated);
            }
        } else {
            let values = &mut into.values;
            let dst =
                (block + slot - heads - kv_heads) * values.stride(0) + at * values.stride(1) + dim * values.stride(2);
            values[dst] = F::cast_from(own);
        }
    }
}
