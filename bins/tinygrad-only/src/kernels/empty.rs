//! A kernel that does nothing, recorded and launched exactly as ours are (a custom op in
//! burn-fusion's stream, then a cubecl launch with its metadata and bindings). Timing a chain of
//! them gives the host cost per launch that belongs to the dependencies alone: the floor under
//! our own (`examples/launch_floor.rs`, docs/benchmarks/).

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::fused::{CubeT, custom_op};
use super::{Wgpu, lazy, tensor};

#[cube(launch_unchecked)]
fn empty_kernel<F: Float>(_input: &Tensor<F>, _output: &mut Tensor<F>, #[define(F)] _dtype: StorageType) {}

/// A new tensor shaped like `x`, made by one launch of a kernel that reads and writes nothing
/// (its contents are undefined).
pub fn empty_op(x: BurnTensor<Wgpu, 1>) -> BurnTensor<Wgpu, 1> {
    let shape = x.dims();
    let dtype = x.dtype();
    let [out] = custom_op("empty", [lazy(x)], [(shape.into(), dtype)], |[input]: [CubeT; 1]| {
        let out = empty_device_contiguous_dtype(
            input.client.clone(),
            input.device.clone(),
            input.meta.shape().clone(),
            input.dtype,
        );
        // SAFETY: the kernel reads and writes nothing.
        unsafe {
            empty_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                &input.client,
                CubeCount::Static(1, 1, 1),
                CubeDim::new_1d(32),
                input.clone().into_tensor_arg(),
                out.clone().into_tensor_arg(),
                input.dtype.into(),
            )
        };
        [out]
    });
    tensor(out)
}
