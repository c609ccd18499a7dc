//! `--compile` on CUDA: the static decode step captured once as a CUDA graph and replayed for
//! every later token (feature `cuda-graph`; the C++ side is `cpp/graph_shim.cpp`).
//!
//! What PyTorch's CUDA-graph recipe does, on the tensors inside burn-tch, wrapping the model's
//! step from outside as `torch.compile` wraps gpt-fast's `decode_one_token`: the static step's
//! inputs (the token's id and its position) live in fixed device buffers; the first step of a
//! cache slot runs eagerly (libtorch sets up cuBLAS and its allocator then); the second is
//! captured, with the KV cache written in place so the graph's addresses stay the cache's, and
//! every later step copies its inputs into the buffers and replays. Another cache or slot is
//! captured afresh.

use std::ffi::{CStr, c_char, c_int, c_void};

use burn::tensor::{Int, Tensor};
use burn_tch::{LibTorchDevice, TchTensor};
use llama_core::batch::{Batch, FixedInputs, StepError};
use llama_core::model::Llama;
use llama_core::scheduler::StepRunner;

use crate::kernels::TchKernels;
use crate::ops::{Tch, raw, wrap};

unsafe extern "C" {
    fn lbb_cuda_graph_last_error() -> *const c_char;
    fn lbb_cuda_graph_begin(device: c_int) -> *mut c_void;
    fn lbb_cuda_graph_end(graph: *mut c_void) -> c_int;
    fn lbb_cuda_graph_replay(graph: *mut c_void) -> c_int;
    fn lbb_cuda_graph_free(graph: *mut c_void);
    fn lbb_cuda_memory_reserved(device: c_int) -> i64;
}

/// Bytes libtorch's CUDA caching allocator holds on `device` (`torch.cuda.memory_reserved`);
/// nothing on a CPU.
pub fn memory_reserved(device: &LibTorchDevice) -> Option<u64> {
    let LibTorchDevice::Cuda(index) = device else { return None };
    // SAFETY: plain C call; a negative result means the allocator could not say.
    u64::try_from(unsafe { lbb_cuda_memory_reserved(*index as c_int) }).ok()
}

fn last_error() -> String {
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    unsafe { CStr::from_ptr(lbb_cuda_graph_last_error()) }.to_string_lossy().into_owned()
}

/// A captured graph (owned handle of the shim's `Graph`).
struct CudaGraph(*mut c_void);

// SAFETY: the handle is owned by one CudaGraphStep, used by one thread at a time; CUDA graphs may
// be replayed from any thread.
unsafe impl Send for CudaGraph {}

impl CudaGraph {
    /// Records the libtorch work `body` queues on `device` instead of running it.
    fn capture<R>(device: usize, body: impl FnOnce() -> R) -> Result<(Self, R), String> {
        // SAFETY: plain C call; null means failure.
        let handle = unsafe { lbb_cuda_graph_begin(device as c_int) };
        if handle.is_null() {
            return Err(last_error());
        }
        let graph = CudaGraph(handle);
        let result = body();
        // SAFETY: `handle` came from begin and is ended once.
        if unsafe { lbb_cuda_graph_end(handle) } != 0 {
            return Err(last_error());
        }
        Ok((graph, result))
    }

    fn replay(&self) -> Result<(), String> {
        // SAFETY: a live handle from `capture`.
        if unsafe { lbb_cuda_graph_replay(self.0) } != 0 { Err(last_error()) } else { Ok(()) }
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: freed once, here.
        unsafe { lbb_cuda_graph_free(self.0) }
    }
}

struct Captured {
    graph: CudaGraph,
    /// The cache and slot whose buffers the graph reads and writes.
    at: (u64, usize),
    id: tch::Tensor,
    position: tch::Tensor,
    logits: tch::Tensor,
}

enum State {
    Idle,
    /// One eager step has run against this cache slot.
    Warm((u64, usize)),
    Captured(Captured),
    /// Capture failed once: every step stays eager (the reason was printed).
    Eager,
}

/// `--compile`'s step on CUDA: the static-shape step of one cache slot at a time captured and
/// replayed; every other step runs as it is.
pub struct CudaGraphStep(State);

impl Default for CudaGraphStep {
    fn default() -> Self {
        CudaGraphStep(State::Idle)
    }
}

impl StepRunner<Tch, TchKernels> for CudaGraphStep {
    fn run(&mut self, model: &Llama<Tch, TchKernels>, batch: &mut Batch<'_, Tch>) -> Result<Tensor<Tch, 2>, StepError> {
        let Some(FixedInputs { slot, id, position }) = batch.fixed_inputs() else { return model.step(batch) };
        if !matches!(id.device(), LibTorchDevice::Cuda(_)) {
            return model.step(batch);
        }
        let at = (batch.cache_id(), slot);
        match &mut self.0 {
            State::Captured(c) if c.at == at => {
                c.id.copy_(&raw_int(id));
                c.position.copy_(&raw_int(position));
                match c.graph.replay().map(|()| wrap(c.logits.copy())) {
                    Ok(logits) => {
                        batch.mark_written();
                        Ok(logits)
                    }
                    Err(e) => self.fall_back("replaying the CUDA graph failed", &e, model, batch),
                }
            }
            State::Warm(warm) if *warm == at => self.capture(at, model, batch, (raw_int(id), raw_int(position))),
            State::Eager => model.step(batch),
            _ => {
                self.0 = State::Warm(at);
                model.step(batch)
            }
        }
    }
}

fn raw_int(t: Tensor<Tch, 1, Int>) -> tch::Tensor {
    t.into_primitive().tensor
}

impl CudaGraphStep {
    /// Captures the step of `batch` reading its id and position from buffers of its own, then
    /// replays it once for this token (capture only records).
    fn capture(
        &mut self,
        at: (u64, usize),
        model: &Llama<Tch, TchKernels>,
        batch: &mut Batch<'_, Tch>,
        (id, position): (tch::Tensor, tch::Tensor),
    ) -> Result<Tensor<Tch, 2>, StepError> {
        let (static_id, static_position) = (id.copy(), position.copy());
        let tch::Device::Cuda(index) = id.device() else { unreachable!("captured on CUDA only") };
        let as_burn = |t: &tch::Tensor| Tensor::<Tch, 1, Int>::from_primitive(TchTensor::new(t.shallow_clone()));
        batch.set_fixed_inputs(as_burn(&static_id), as_burn(&static_position));
        let captured = CudaGraph::capture(index, || model.step(batch).map(raw));
        match captured {
            Ok((graph, Ok(logits))) => {
                if let Err(e) = graph.replay() {
                    return self.fall_back("replaying the CUDA graph failed", &e, model, batch);
                }
                let out = wrap(logits.copy());
                self.0 = State::Captured(Captured { graph, at, id: static_id, position: static_position, logits });
                Ok(out)
            }
            Ok((_, Err(e))) => Err(e),
            // The step's kernels were recorded into a failed capture and did not run.
            Err(e) => self.fall_back("CUDA graph capture failed", &e, model, batch),
        }
    }

    /// Says why, and runs this token's step, as every later one, eagerly. That is correct
    /// whatever part of a replay ran: the step only writes this position's keys and values, the
    /// same ones again, and reads them back.
    fn fall_back(
        &mut self,
        what: &str,
        error: &str,
        model: &Llama<Tch, TchKernels>,
        batch: &mut Batch<'_, Tch>,
    ) -> Result<Tensor<Tch, 2>, StepError> {
        eprintln!("pytorch-only: --compile: {what} ({error}); decoding eagerly");
        self.0 = State::Eager;
        model.step(batch)
    }
}
