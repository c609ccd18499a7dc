//! `cargo xtask gpu-bundle`: everything one call on a lent GPU machine needs, in `.gpubundle/`.
//!
//! The lent machine (see docs/gpu.md) has CUDA, PyTorch 2.11 and NVIDIA's Vulkan driver, but no
//! Rust, no network and no Vulkan loader. So we build here and carry: the stripped release
//! binary, the Vulkan loader and libglvnd as Debian packages (NVIDIA's ICD needs both; unpacked
//! there by `scripts/gpu_measure.sh`), and the PyTorch anchor script, which the same call reruns
//! so our figure and the anchor's come from the same card and clocks; and pytorch-only built
//! against that machine's libtorch 2.11 with CUDA graph capture (`gpu_torch.rs`). The device tool
//! carries at most 64 MiB.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::run_status;

/// Debian packages of the Vulkan loader and the GL dispatch libraries NVIDIA's ICD links.
const GL_PACKAGES: &[&str] = &["libvulkan1", "libegl1", "libglvnd0", "libopengl0", "libgl1", "libglx0", "libgles2"];

pub fn run(root: &Path) -> anyhow::Result<()> {
    let bundle = root.join(".gpubundle");
    let bin = bundle.join("bin");
    std::fs::create_dir_all(&bin)?;

    run_status(Command::new(env!("CARGO")).current_dir(root).args(["build", "--release", "-p", "tinygrad-only"]))?;
    pack_binary(&root.join("target/release/tinygrad-only"), &bin.join("tinygrad-only"))?;
    pack_binary(&crate::gpu_torch::build(root)?, &bin.join("pytorch-only"))?;

    let gl = bundle.join("gl");
    std::fs::create_dir_all(&gl)?;
    let have_debs =
        std::fs::read_dir(&gl)?.filter_map(Result::ok).any(|e| e.path().extension().is_some_and(|x| x == "deb"));
    if !have_debs {
        // amd64 packages whatever this machine's own apt is set up for, with a private list folder.
        let lists = std::env::temp_dir().join("gpubundle-apt-lists");
        std::fs::create_dir_all(lists.join("partial"))?;
        let options = [
            "-oAPT::Architecture=amd64".to_string(),
            "-oAPT::Architectures=amd64".to_string(),
            format!("-oDir::State::Lists={}", lists.display()),
        ];
        run_status(Command::new("apt-get").args(&options).arg("update"))?;
        run_status(Command::new("apt-get").current_dir(&gl).args(&options).arg("download").args(GL_PACKAGES))?;
    }

    let anchor = root.join("../shared/anchors/torch_llama_anchor.py");
    if !anchor.exists() {
        bail!("{} is missing: the PyTorch anchor script comes from the shared anchors folder", anchor.display());
    }
    let anchor_copy = bundle.join("torch_llama_anchor.py");
    let _ = std::fs::remove_file(&anchor_copy);
    std::fs::copy(&anchor, &anchor_copy)?;

    let size: u64 = walk_size(&bundle)?;
    println!("{}: {:.1} MiB", bundle.display(), size as f64 / 1048576.0);
    println!("On the lent GPU, in one call: command `bash scripts/gpu_measure.sh`, carry [\".gpubundle\"]");
    Ok(())
}

/// Copies a release binary to `to`, stripped and xz-compressed (`to.xz`): the device tool carries
/// at most 64 MiB, and the stripped tinygrad-only alone is 56 MiB (9 MiB compressed).
/// scripts/gpu_measure.sh unpacks it with Python's lzma (the device has no guaranteed xz).
fn pack_binary(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    run_status(Command::new("strip").arg(to))?;
    run_status(Command::new("xz").args(["-T2", "-6", "-f"]).arg(to))
}

fn walk_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { walk_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
