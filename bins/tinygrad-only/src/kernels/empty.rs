//! A kernel that does nothing, recorded and launched exactly as ours are (a custom op in
//! burn-fusion's stream, then a cubecl launch with its metadata and bindings). Timing chains of
//! them gives the host cost per launch that belongs to the dependencies alone: the floor under
//! our own (`examples/launch_floor.rs`, docs/benchmarks/).

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::stream::{CubeT, Wgpu, custom_op, lazy, tensor};

#[cube(launch_unchecked)]
fn empty_kernel<F: Float>(
    _inputs: &Sequence<Tensor<F>>,
    _outputs: &mut Sequence<Tensor<F>>,
    #[define(F)] _dtype: StorageType,
) {
}

/// `O` new tensors shaped like the first of `inputs`, made by one launch of a kernel that binds
/// every input and output and reads and writes nothing (their contents are undefined): an
/// operation with a real kernel's inputs and outputs, at no device cost.
pub fn empty_op<const I: usize, const O: usize>(inputs: [BurnTensor<Wgpu, 1>; I]) -> [BurnTensor<Wgpu, 1>; O] {
    let (shape, dtype) = (inputs[0].dims(), inputs[0].dtype());
    let outputs = std::array::from_fn(|_| (shape.into(), dtype));
    let outputs = custom_op("empty", inputs.map(lazy), outputs, |inputs: [CubeT; I]| {
        let first = &inputs[0];
        let outputs: [CubeT; O] = std::array::from_fn(|_| {
            empty_device_contiguous_dtype(
                first.client.clone(),
                first.device.clone(),
                first.meta.shape().clone(),
                first.dtype,
            )
        });
        let mut input_args = SequenceArg::new();
        inputs.iter().for_each(|t| input_args.push(t.clone().into_tensor_arg()));
        let mut output_args = SequenceArg::new();
        outputs.iter().for_each(|t| output_args.push(t.clone().into_tensor_arg()));
        // SAFETY: the kernel reads and writes nothing.
        unsafe {
            empty_kernel::launch_unchecked::<burn_wgpu::WgpuRuntime>(
                &first.client,
                CubeCount::Static(1, 1, 1),
                CubeDim::new_1d(32),
                input_args,
                output_args,
                first.dtype.into(),
            )
        };
        outputs
    });
    outputs.map(tensor)
}
