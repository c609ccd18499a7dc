//! pytorch-only: the Llama model of llama-core on burn-tch, i.e. libtorch's eager kernels.

use std::process::ExitCode;

use anyhow::bail;
use burn_tch::{LibTorch, LibTorchDevice};
use llama_app::cli::{BackendOptions, FloatType};
use llama_app::framework::{Framework, Opened, apply_dtype, refuse_quantize};
use pytorch_only::TchKernels;

struct PytorchOnly;

impl Framework for PytorchOnly {
    type Backend = LibTorch<f32>;
    type Kernels = TchKernels;

    fn name(&self) -> &'static str {
        "pytorch-only"
    }

    fn stack(&self) -> &'static str {
        "burn-tch 0.21 (libtorch eager, fused ATen ops)"
    }

    fn open(&self, options: &BackendOptions) -> anyhow::Result<Opened<Self>> {
        refuse_quantize(self.name(), options.quantize)?;
        let device = device(&options.device)?;
        let (dtype, note) = apply_dtype::<LibTorch<f32>>(&device, options, half_dtype(&device))?;
        let description = match device {
            LibTorchDevice::Cpu => format!("CPU, libtorch with {} threads", tch::get_num_threads()),
            other => format!("{other:?}, libtorch"),
        };
        let mut opened = Opened::new(device, dtype, TchKernels, description);
        opened.notes.extend(note);
        if options.compile {
            opened.notes.push(format!("--compile: {}", compile_note(&device)));
            #[cfg(feature = "cuda-graph")]
            if matches!(device, LibTorchDevice::Cuda(_)) {
                opened.runner = Box::new(pytorch_only::cuda_graph::CudaGraphStep::default());
            }
        }
        #[cfg(feature = "cuda-graph")]
        {
            opened.memory = pytorch_only::cuda_graph::memory_reserved;
        }
        Ok(opened)
    }
}

/// `--device`: `auto` (CUDA when libtorch sees it), `cpu`, `cuda` or `cuda:N`.
fn device(spec: &str) -> anyhow::Result<LibTorchDevice> {
    let cuda = |index: usize| {
        let available = tch::Cuda::device_count() as usize;
        if index < available {
            Ok(LibTorchDevice::Cuda(index))
        } else {
            bail!("--device cuda:{index}: libtorch sees {available} CUDA device(s)")
        }
    };
    match spec {
        "auto" if tch::Cuda::is_available() => Ok(LibTorchDevice::Cuda(0)),
        "auto" | "cpu" => Ok(LibTorchDevice::Cpu),
        "cuda" => cuda(0),
        _ => match spec.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(index) => cuda(index),
            None => bail!("unknown --device `{spec}`: use auto, cpu, cuda or cuda:N"),
        },
    }
}

/// What `--half` means on `device`, and why when it is not f16 (docs/pytorch.md has the
/// measurements).
fn half_dtype(device: &LibTorchDevice) -> (FloatType, Option<&'static str>) {
    match device {
        LibTorchDevice::Cpu => (FloatType::Bf16, Some("libtorch's CPU f16 matmuls are several times slower than bf16")),
        _ => (FloatType::F16, None),
    }
}

/// What `--compile` does on `device`.
fn compile_note(device: &LibTorchDevice) -> String {
    let steps = match device {
        LibTorchDevice::Cpu => "CUDA graph capture needs a CUDA device, so each step runs eagerly",
        _ if cfg!(feature = "cuda-graph") => "captured as a CUDA graph at the second step, then replayed",
        _ => "this binary was built without CUDA graph capture (feature cuda-graph), so each step runs eagerly",
    };
    format!("static-shape decode step with libtorch's fused ops; {steps}")
}

fn main() -> ExitCode {
    pytorch_only::enter_inference_mode();
    llama_app::run::main(PytorchOnly)
}
