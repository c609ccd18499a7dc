//! Running our own CubeCL kernels inside burn-wgpu's `Fusion` stream.
//!
//! burn-wgpu's default backend is `Fusion<CubeBackend>`: tensor operations are not run when called
//! but recorded as `OperationIr`s, and the fuser later compiles runs of them into one kernel. A
//! tensor primitive is therefore a lazy `FusionTensor` with no buffer yet. We record each kernel
//! as an `OperationIr::Custom` with its inputs and outputs; when the stream executes, our
//! [`Operation`] receives the inputs' real `CubeTensor`s, launches, and registers the outputs.
//!
//! Why this and not flushing the stream (`resolve_tensor_float`) and launching directly: a flush
//! forces a host round trip per call, which at ~30 calls per layer would cost more than the
//! kernels save. A custom op keeps the stream lazy: the fuser still fuses the element-wise work
//! between our kernels, and the only sync per token is reading back the logits. Burn's own
//! custom-kernel example leaves this `Fusion` case as `todo!()`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::{CubeBackend, tensor::CubeTensor};
use burn_fusion::{
    FusionBackend, FusionRuntime, FusionTensor,
    stream::{Operation, OperationStreams},
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use burn_wgpu::WgpuRuntime;

/// The backend these kernels run on.
pub type Wgpu = burn_wgpu::Wgpu<f32, i32, u32>;

/// The backend under `burn_wgpu::Wgpu<f32, i32, u32>`'s fusion layer. The `f32` only names the
/// default element type; a tensor's real dtype is a runtime property (`--dtype f16` works too).
pub type Cube = CubeBackend<WgpuRuntime, f32, i32, u32>;
/// A device tensor with its buffer: what kernels are launched on.
pub type CubeT = CubeTensor<WgpuRuntime>;
pub type FusionRt = <Cube as FusionBackend>::FusionRuntime;
pub type LazyTensor = FusionTensor<FusionRt>;

type Body<const I: usize, const O: usize> = Box<dyn Fn([CubeT; I]) -> [CubeT; O] + Send + Sync>;

/// One recorded kernel launch: `body` runs when the fusion stream reaches it.
struct CustomOp<const I: usize, const O: usize> {
    desc: CustomOpIr,
    body: Body<I, O>,
}

impl<const I: usize, const O: usize> fmt::Debug for CustomOp<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomOp({})", self.desc.id)
    }
}

impl<const I: usize, const O: usize> Operation<FusionRt> for CustomOp<I, O> {
    fn execute(&self, handles: &mut HandleContainer<<FusionRt as FusionRuntime>::FusionHandle>) {
        let (inputs, outputs) = self.desc.as_fixed::<I, O>();
        // Float, int and bool primitives are all `CubeTensor`s here; the dtype travels with it.
        let inputs = inputs.each_ref().map(|ir| handles.get_float_tensor::<Cube>(ir));
        for (ir, tensor) in outputs.iter().zip((self.body)(inputs)) {
            handles.register_float_tensor::<Cube>(&ir.id, tensor);
        }
    }
}

/// Records a kernel reading `inputs` and producing tensors of the given shapes and dtypes.
/// `body` gets the inputs' device tensors and must return outputs of exactly those shapes.
pub fn custom_op<const I: usize, const O: usize>(
    name: &'static str,
    inputs: [LazyTensor; I],
    outputs: [(Shape, DType); O],
    body: impl Fn([CubeT; I]) -> [CubeT; O] + Send + Sync + 'static,
) -> [LazyTensor; O] {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(inputs.iter());
    let outputs = outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let inputs = inputs.map(|t| t.into_ir());
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = CustomOp::<I, O> { desc: desc.clone(), body: Box::new(body) };
    let results = client.register(streams, OperationIr::Custom(desc), op);
    results.try_into().unwrap_or_else(|_| unreachable!("fusion returns one tensor per declared output"))
}

static LAUNCHES: AtomicU64 = AtomicU64::new(0);

/// Counts one kernel launch (every `launch` call in these modules is preceded by one).
pub fn count_launch() {
    LAUNCHES.fetch_add(1, Ordering::Relaxed);
}

/// Our kernels launched so far in this process (`--benchmark --verbose` prints them per token).
pub fn launches() -> u64 {
    LAUNCHES.load(Ordering::Relaxed)
}

/// The lazy fusion tensor a float tensor of [`Wgpu`] is: what [`custom_op`] records.
pub fn lazy<const D: usize>(t: Tensor<Wgpu, D>) -> LazyTensor {
    t.into_primitive().tensor()
}

/// A lazy fusion tensor back as a float tensor of [`Wgpu`].
pub fn tensor<const D: usize>(t: LazyTensor) -> Tensor<Wgpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}
