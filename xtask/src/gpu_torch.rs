//! pytorch-only for the lent GPU machine, part of `cargo xtask gpu-bundle`.
//!
//! That machine runs PyTorch 2.11.0+cu130, and a binary linked against this project's libtorch
//! 2.9 fails against 2.11's libraries. PyPI's `torch==2.11.0` is the same build, so we unpack its
//! wheel's `lib/` and `include/` here (no install, no CUDA: only headers and link-time
//! libraries are needed), add the CUDA 13 runtime headers the CUDA graph shim includes (PyPI's
//! `nvidia-cuda-runtime` and `nvidia-cuda-crt`), and build pytorch-only against them with the
//! `cuda-graph` feature in its own target dir. On the device the binary finds libtorch through
//! `LD_LIBRARY_PATH` (scripts/gpu_measure.sh points it at the installed torch's lib folder).
//! Everything lives under `target/gpu-torch/` (ignored; a first run downloads about 0.5 GB).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::run_status;

const TORCH: &str = "torch==2.11.0";
const CUDA_HEADERS: &[&str] = &["nvidia-cuda-runtime==13.0.96", "nvidia-cuda-crt==13.0.88"];

/// Builds pytorch-only against torch 2.11 and returns the release binary's path.
pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let work = root.join("target/gpu-torch");
    let wheels = work.join("wheels");
    let unpacked = work.join("unpacked");
    std::fs::create_dir_all(&wheels)?;
    let pip = root.join(".venv/bin/pip");
    if !pip.exists() {
        bail!("{} is missing: run `cargo xtask setup` first", pip.display());
    }
    if !has_wheel(&wheels, "torch-2.11.0")? {
        run_status(Command::new(&pip).args(["download", "--no-deps", "-d"]).arg(&wheels).arg(TORCH))?;
    }
    if !has_wheel(&wheels, "nvidia_cuda_crt")? {
        run_status(Command::new(&pip).args(["download", "--no-deps", "-d"]).arg(&wheels).args(CUDA_HEADERS))?;
    }
    let libtorch = unpacked.join("torch");
    let cuda_include = unpacked.join("nvidia/cu13/include");
    if !libtorch.join("lib/libtorch_cuda.so").exists() || !cuda_include.join("cuda_runtime_api.h").exists() {
        for wheel in std::fs::read_dir(&wheels)?.filter_map(Result::ok).map(|e| e.path()) {
            let mut unzip = Command::new("unzip");
            unzip.args(["-o", "-q"]).arg(&wheel);
            if wheel.file_name().is_some_and(|n| n.to_string_lossy().starts_with("torch-")) {
                unzip.args(["torch/lib/*", "torch/include/*"]);
            }
            run_status(unzip.arg("-d").arg(&unpacked)).with_context(|| format!("unpack {}", wheel.display()))?;
        }
    }
    // libtorch_cuda.so needs the CUDA 13 libraries, which only the device has: let the linker
    // leave their symbols to the dynamic loader there.
    let target_dir = work.join("target");
    run_status(
        Command::new(env!("CARGO"))
            .current_dir(root)
            .env("LIBTORCH", &libtorch)
            .env("LIBTORCH_BYPASS_VERSION_CHECK", "1")
            .env("LBB_CUDA_INCLUDE", &cuda_include)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C link-arg=-Wl,--allow-shlib-undefined")
            .args(["build", "--release", "-p", "pytorch-only", "--features", "pytorch-only/cuda-graph"]),
    )?;
    Ok(target_dir.join("release/pytorch-only"))
}

fn has_wheel(dir: &Path, prefix: &str) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(dir)?.filter_map(Result::ok).any(|e| {
        e.file_name().to_string_lossy().starts_with(prefix) && e.path().extension().is_some_and(|x| x == "whl")
    }))
}
