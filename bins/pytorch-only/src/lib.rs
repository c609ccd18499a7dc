//! pytorch-only's library half: libtorch's fused operations behind llama-core's fast-path
//! trait, shared by the binary and its tests. `main.rs` stays a thin front end.

mod attention;
#[cfg(feature = "cuda-graph")]
pub mod cuda_graph;
pub mod kernels;
mod ops;
mod weight;

pub use kernels::TchKernels;
pub use ops::Tch;

unsafe extern "C" {
    fn lbb_enter_inference_mode();
}

/// Puts the calling thread in libtorch's `InferenceMode` for the rest of its life, as
/// `torch.inference_mode()` does for a PyTorch script: no autograd bookkeeping on any op
/// (cpp/inference_mode.cpp says why it pays). Tensors made in it must not be modified in place
/// by a thread outside it, so the binary enters it on its one model thread, before loading.
pub fn enter_inference_mode() {
    // SAFETY: the shim takes no arguments and only sets the calling thread's libtorch state.
    unsafe { lbb_enter_inference_mode() }
}
