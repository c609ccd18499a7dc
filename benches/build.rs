// The libtorch rpath pytorch-only's build script embeds (bins/pytorch-only/build.rs), so the
// benchmarks' burn-tch runs with no LD_LIBRARY_PATH. Only the rpath: the benches call no C++ shim.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report libtorch's lib folder (DEP_TCH_LIBTORCH_LIB)");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
}
