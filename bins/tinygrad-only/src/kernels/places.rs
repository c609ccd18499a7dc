//! Where each row of a step goes, as kernels read it: each row's position and cache slot from
//! two small `i32` tensors made once per step (rows of several sequences), or, for one
//! sequence's rows, its first position and its slot as plain launch arguments. The second is
//! uniform across a workgroup where a CPU driver cannot tell that a value read from a buffer is,
//! so loops bounded by it are not run under a lane mask.

use cubecl::prelude::*;

use super::stream::CubeT;
use super::weights::tensor_arg;

/// Each row's position and slot (`per_row`), or one sequence's first position and slot.
#[derive(CubeLaunch, CubeType)]
pub struct Places {
    pub positions: Tensor<i32>,
    pub slots: Tensor<i32>,
    pub first_position: u32,
    pub slot: u32,
}

/// Row `row`'s position.
#[cube]
pub fn position_of(places: &Places, row: usize, #[comptime] per_row: bool) -> usize {
    let mut position = places.first_position as usize + row;
    if comptime!(per_row) {
        position = places.positions[row] as usize;
    }
    position
}

/// Row `row`'s cache slot.
#[cube]
pub fn slot_of(places: &Places, row: usize, #[comptime] per_row: bool) -> usize {
    let mut slot = places.slot as usize;
    if comptime!(per_row) {
        slot = places.slots[row] as usize;
    }
    slot
}

/// The host's side of [`Places`]: the tensors, and the one sequence's span where the rows are one.
pub struct RowPlaces {
    /// `[rows]` i32 each.
    pub positions: CubeT,
    pub slots: CubeT,
    /// One sequence's first position and slot, when every row is that sequence's.
    pub one_span: Option<(usize, usize)>,
    /// The highest position of any row, and the most positions any row sees.
    pub last_position: usize,
    pub kv_heads: usize,
}

impl RowPlaces {
    /// The kernel argument, and whether it is read per row.
    pub fn arg(&self) -> (PlacesLaunch<burn_wgpu::WgpuRuntime>, bool) {
        let (first, slot) = self.one_span.unwrap_or((0, 0));
        let arg = PlacesLaunch::new(tensor_arg(&self.positions), tensor_arg(&self.slots), first as u32, slot as u32);
        (arg, self.one_span.is_none())
    }
}
