//! pytorch-only: the Llama model of llama-core on burn-tch, i.e. libtorch's eager kernels.

use std::process::ExitCode;

use anyhow::bail;
use burn_tch::{LibTorch, LibTorchDevice};
use llama_core::framework::{self, Framework};
use llama_core::kernels::Composed;

struct PytorchOnly;

impl Framework for PytorchOnly {
    type Backend = LibTorch<f32>;
    type Kernels = Composed;

    fn name(&self) -> &'static str {
        "pytorch-only"
    }

    fn stack(&self) -> &'static str {
        "burn-tch 0.21 (libtorch eager)"
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

    fn kernels(&self) -> Composed {
        Composed
    }
}

fn main() -> ExitCode {
    framework::main(PytorchOnly)
}
