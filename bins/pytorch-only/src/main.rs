//! pytorch-only: the Llama model of llama-core on burn-tch, i.e. libtorch's eager kernels.

use std::process::ExitCode;

use anyhow::bail;
use burn_tch::{LibTorch, LibTorchDevice};
use llama_app::Framework;
use llama_app::cli::FloatType;
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

    fn device(&self, spec: &str) -> anyhow::Result<LibTorchDevice> {
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

    fn device_info(&self, device: &LibTorchDevice) -> String {
        match device {
            LibTorchDevice::Cpu => format!("CPU, libtorch with {} threads", tch::get_num_threads()),
            other => format!("{other:?}, libtorch"),
        }
    }

    fn half_dtype(&self, device: &LibTorchDevice) -> (FloatType, Option<&'static str>) {
        match device {
            // Measured on the default model: f16 decodes at 7.3 tok/s, bf16 at 78 (docs/pytorch.md).
            LibTorchDevice::Cpu => {
                (FloatType::Bf16, Some("libtorch's CPU f16 matmuls are several times slower than bf16"))
            }
            _ => (FloatType::F16, None),
        }
    }

    fn compile_note(&self, device: &LibTorchDevice) -> anyhow::Result<String> {
        let steps = match device {
            LibTorchDevice::Cpu => "CUDA graph capture needs a CUDA device, so each step runs eagerly",
            _ if cfg!(feature = "cuda-graph") => "captured as a CUDA graph at the second step, then replayed",
            _ => "this binary was built without CUDA graph capture (feature cuda-graph), so each step runs eagerly",
        };
        Ok(format!("static-shape decode step with libtorch's fused ops; {steps}"))
    }

    fn kernels(&self) -> TchKernels {
        TchKernels::default()
    }
}

fn main() -> ExitCode {
    pytorch_only::enter_inference_mode();
    llama_app::main(PytorchOnly)
}
