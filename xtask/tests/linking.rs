//! Each binary links only its own framework. Cargo unifies features across a workspace build,
//! so a backend reached through `burn`'s own features (or a stray dependency) would end up in
//! both binaries; this reads the resolved dependency graph and fails if that ever happens.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates that bring libtorch in.
const TORCH_CRATES: &[&str] = &["burn-tch", "tch", "torch-sys"];
/// Crates that bring wgpu/Vulkan in.
const WGPU_CRATES: &[&str] = &["burn-wgpu", "cubecl-wgpu", "wgpu", "wgpu-core", "wgpu-hal"];

/// Names of every crate `package` depends on for its normal (non-dev, non-build) targets.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}", "--offline"])
        .output()
        .expect("run cargo tree");
    assert!(out.status.success(), "cargo tree -p {package} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn assert_none_of(package: &str, forbidden: &[&str]) {
    let deps = normal_dependencies(package);
    assert!(deps.contains(package), "cargo tree output for {package} looks wrong: {deps:?}");
    let found: Vec<&&str> = forbidden.iter().filter(|c| deps.contains(**c)).collect();
    assert!(found.is_empty(), "{package} must not depend on {found:?}");
}

#[test]
fn tinygrad_only_links_no_libtorch() {
    assert_none_of("tinygrad-only", TORCH_CRATES);
    assert!(normal_dependencies("tinygrad-only").contains("burn-wgpu"));
}

#[test]
fn pytorch_only_links_no_wgpu() {
    assert_none_of("pytorch-only", WGPU_CRATES);
    assert!(normal_dependencies("pytorch-only").contains("burn-tch"));
}

#[test]
fn llama_core_links_no_framework() {
    assert_none_of("llama-core", &[TORCH_CRATES, WGPU_CRATES, &["burn-ndarray", "burn-cuda", "burn-candle"]].concat());
}

/// The library holds the model and its formats: flags, terminals and logging set-up belong to
/// the app (llama-app), test helpers to the test kit.
#[test]
fn llama_core_has_no_command_line_or_terminal() {
    assert_none_of("llama-core", &["clap", "rustyline", "ctrlc", "tracing-subscriber", "indicatif", "llama-app"]);
}

/// The test kit reaches a binary only through its tests (a dev-dependency), never its build.
#[test]
fn binaries_do_not_link_the_test_kit() {
    assert_none_of("tinygrad-only", &["llama-testkit"]);
    assert_none_of("pytorch-only", &["llama-testkit"]);
}
