//! How the product kernels (`matvec_kernel.rs`, `block_matvec_kernel.rs`, `linear.rs`) lay
//! their threads over weight rows, and the tail they share: adding up the partial sums of a
//! row's lanes and storing the row.
//!
//! One workgroup owns `rows` weight rows, and the `lanes` threads of a row each take a share of
//! its columns; a shared-memory tree then adds the lanes' sums. This module imports no other
//! kernel module, so every product kernel can build on it.

use cubecl::prelude::*;

/// How threads are laid out over the weight rows (a kernel's comptime argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    /// Threads sharing one weight row (a power of two).
    pub lanes: u32,
    /// Weight rows per workgroup.
    pub rows: u32,
}

impl Layout {
    /// GPUs: 32 lanes per row (a warp), 4 rows per workgroup. CPU drivers (lavapipe): 8 lanes,
    /// its SIMD width, and 16 rows, the fastest of the layouts timed in docs/kernels.md.
    pub fn for_device(is_cpu: bool) -> Self {
        if is_cpu { Layout { lanes: 8, rows: 16 } } else { Layout { lanes: 32, rows: 4 } }
    }

    /// Threads per workgroup.
    pub fn threads(self) -> u32 {
        self.lanes * self.rows
    }

    /// Workgroups covering `rows` weight rows (and `tiles` tiles of tokens), and their shape.
    pub fn grid(self, rows: usize, tiles: usize) -> (CubeCount, CubeDim) {
        let count = CubeCount::Static(rows.div_ceil(self.rows as usize) as u32, tiles as u32, 1);
        (count, CubeDim::new_2d(self.lanes, self.rows))
    }
}

/// Most tokens one workgroup of `linear.rs` multiplies per pass over its rows (prefill).
pub const MAX_TILE: u32 = 8;

/// Most input rows one launch of `matvec.rs` applies each weight row to (a server's step of
/// several sequences); more run as several launches.
pub const MAX_ROWS: usize = 16;

/// The run of a weight's rows one launch covers: one chunk of it (`weights.rs`).
#[derive(CubeLaunch, CubeType)]
pub struct ChunkSpan {
    /// The chunk's first row in the whole weight (and in the output).
    pub first_row: u32,
    /// Rows in the chunk.
    pub rows: u32,
}

/// The chunk row this thread owns: `rows` per workgroup, one per `UNIT_POS_Y`.
#[cube]
pub fn local_row(#[comptime] layout: Layout) -> usize {
    (CUBE_POS_X * comptime!(layout.rows) + UNIT_POS_Y) as usize
}

/// The chunk row this thread reads: its own, or for threads past the chunk's end (they still
/// take part in the barriers, and write nothing) the last one.
#[cube]
pub fn row_to_read(local_row: usize, span: &ChunkSpan) -> usize {
    min(local_row, span.rows as usize - 1)
}

/// Adds the lanes' partial sums of each row in `partial` (`lanes · rows` per sum, the gate sums
/// first and, `gated`, the up sums after them): afterwards the row's first lane's slot,
/// `partial[s · lanes · rows + UNIT_POS_Y · lanes]`, holds the row's sum `s`.
#[cube]
pub fn reduce_lanes(
    acc: &Array<f32>,
    acc_up: &Array<f32>,
    partial: &mut SharedMemory<f32>,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
) {
    let lanes = comptime!(layout.lanes);
    let lane = UNIT_POS_X as usize;
    let width = comptime!(layout.threads() as usize);
    let slot = UNIT_POS_Y as usize * comptime!(lanes as usize) + lane;
    let sums = comptime!(if gated { 2 * tile } else { tile });
    #[unroll]
    for t in 0..tile {
        partial[t as usize * width + slot] = acc[t as usize];
        if comptime!(gated) {
            partial[(tile + t) as usize * width + slot] = acc_up[t as usize];
        }
    }
    if comptime!(lanes > 1) {
        sync_cube();
        #[unroll]
        for step in 1..comptime!(lanes.trailing_zeros() + 1) {
            let stride = comptime!((lanes >> step) as usize);
            if lane < stride {
                #[unroll]
                for s in 0..sums {
                    let at = s as usize * width + slot;
                    partial[at] += partial[at + stride];
                }
            }
            sync_cube();
        }
    }
}

/// Adds the lanes' partial sums of each row ([`reduce_lanes`]) and writes
/// `out[token, span.first_row + local_row]` for the `tile` tokens from `first_token` (or,
/// `gated`, `silu(gate) · up`, the gate sums in `acc` and the up sums in `acc_up`); rows past the
/// chunk's end write nothing.
#[cube]
pub fn reduce_and_store<F: Float>(
    acc: &Array<f32>,
    acc_up: &Array<f32>,
    out: &mut Tensor<F>,
    span: &ChunkSpan,
    first_token: usize,
    #[comptime] gated: bool,
    #[comptime] tile: u32,
    #[comptime] layout: Layout,
) {
    let tokens = out.shape(0);
    let n = out.shape(1);
    let width = comptime!(layout.threads() as usize);
    let slot = UNIT_POS_Y as usize * comptime!(layout.lanes as usize);
    let local_row = local_row(layout);
    let sums = comptime!(if gated { 2 * tile } else { tile });
    let mut partial = SharedMemory::<f32>::new(comptime!((layout.threads() * sums) as usize));
    reduce_lanes(acc, acc_up, &mut partial, gated, tile, layout);
    if UNIT_POS_X == 0 && local_row < span.rows as usize {
        let row = span.first_row as usize + local_row;
        #[unroll]
        for t in 0..tile {
            let token = first_token + t as usize;
            if token < tokens {
                let mut value = partial[t as usize * width + slot];
                if comptime!(gated) {
                    let up = partial[(tile + t) as usize * width + slot];
                    value = value / (f32::new(1.0) + f32::exp(-value)) * up;
                }
                out[token * n + row] = F::cast_from(value);
            }
        }
    }
}
