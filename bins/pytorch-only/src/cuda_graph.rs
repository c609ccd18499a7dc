//! `--compile` on CUDA: the static decode step captured once as a CUDA graph and replayed for
//! every later token (feature `cuda-graph`; the C++ side is `cpp/graph_shim.cpp`).
//!
//! What PyTorch's CUDA-graph recipe does, on the tensors inside burn-tch: the step's inputs (the
//! token's embedding and its position) live in fixed device buffers; the first step of a cache
//! runs eagerly (libtorch sets up cuBLAS and its allocator then); the second is captured, with
//! the KV cache written in place so the graph's addresses stay the cache's, and every later step
//! copies its inputs into the buffers and replays. A new cache (another id) is captured afresh.
//!
//! Unmeasured: no GPU has run this yet (docs/pytorch.md).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::Mutex;

use burn::tensor::Tensor;
use burn_tch::TchTensor;

use llama_core::kernels::{StaticStep, run_step_eagerly};

use crate::ops::{Tch, raw, wrap};

unsafe extern "C" {
    fn lbb_cuda_graph_last_error() -> *const c_char;
    fn lbb_cuda_graph_begin(device: c_int) -> *mut c_void;
    fn lbb_cuda_graph_end(graph: *mut c_void) -> c_int;
    fn lbb_cuda_graph_replay(graph: *mut c_void) -> c_int;
    fn lbb_cuda_graph_free(graph: *mut c_void);
}

fn last_error() -> String {
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    unsafe { CStr::from_ptr(lbb_cuda_graph_last_error()) }.to_string_lossy().into_owned()
}

/// A captured graph (owned handle of the shim's `Graph`).
struct CudaGraph(*mut c_void);

// SAFETY: the handle is used under StepGraph's mutex only; CUDA graphs may be replayed from any thread.
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
    cache_id: u64,
    x: tch::Tensor,
    position: tch::Tensor,
    logits: tch::Tensor,
}

enum State {
    Idle,
    /// One eager step has run against this cache.
    Warm(u64),
    Captured(Captured),
    /// Capture failed once: every step stays eager (the reason was printed).
    Eager,
}

/// The captured decode step of one cache at a time.
pub struct StepGraph(Mutex<State>);

impl Default for StepGraph {
    fn default() -> Self {
        StepGraph(Mutex::new(State::Idle))
    }
}

fn position_tensor(position: usize, device: tch::Device) -> tch::Tensor {
    tch::Tensor::from_slice(&[position as i64]).to_device(device)
}

/// A replay that failed: says why, drops the graph and runs this token's step eagerly, as every
/// later one. That is correct whatever part of the replay ran: the step only writes this
/// position's keys and values, the same ones again, and reads them back.
fn replay_failed(
    state: &mut State,
    error: &str,
    x: tch::Tensor,
    position: usize,
    step: &mut StaticStep<Tch>,
) -> Tensor<Tch, 2> {
    eprintln!("pytorch-only: --compile: replaying the CUDA graph failed ({error}); decoding eagerly");
    *state = State::Eager;
    run_step_eagerly(wrap(x), position, step)
}

impl StepGraph {
    /// `Kernels::run_static_step` on a CUDA device.
    pub fn run(&self, x: Tensor<Tch, 2>, position: usize, cache_id: u64, step: &mut StaticStep<Tch>) -> Tensor<Tch, 2> {
        let mut state = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let x = raw(x);
        let device = x.device();
        match &mut *state {
            State::Captured(c) if c.cache_id == cache_id => {
                c.x.copy_(&x);
                let _ = c.position.fill_(position as i64);
                match c.graph.replay() {
                    Ok(()) => wrap(c.logits.copy()),
                    Err(e) => replay_failed(&mut state, &e, x, position, step),
                }
            }
            State::Warm(id) if *id == cache_id => {
                let static_x = x.copy();
                let static_position = position_tensor(position, device);
                let tch::Device::Cuda(index) = device else { unreachable!("StepGraph runs on CUDA only") };
                let captured = CudaGraph::capture(index, || {
                    let position = Tensor::from_primitive(TchTensor::new(static_position.shallow_clone()));
                    raw(step(wrap(static_x.shallow_clone()), position))
                });
                match captured {
                    Ok((graph, logits)) => {
                        // Capture only recorded the step: run it for this token.
                        if let Err(e) = graph.replay() {
                            return replay_failed(&mut state, &e, x, position, step);
                        }
                        let out = wrap(logits.copy());
                        *state = State::Captured(Captured {
                            graph,
                            cache_id,
                            x: static_x,
                            position: static_position,
                            logits,
                        });
                        out
                    }
                    Err(e) => {
                        // The step's kernels were recorded into a failed capture and did not run.
                        eprintln!("pytorch-only: --compile: CUDA graph capture failed ({e}); decoding eagerly");
                        *state = State::Eager;
                        run_step_eagerly(wrap(x), position, step)
                    }
                }
            }
            State::Eager => run_step_eagerly(wrap(x), position, step),
            _ => {
                *state = State::Warm(cache_id);
                run_step_eagerly(wrap(x), position, step)
            }
        }
    }
}
