// Embeds an rpath to libtorch's lib folder so the binary (and its test executables) run with no
// LD_LIBRARY_PATH, and compiles the C++ shims against the same libtorch: cpp/inference_mode.cpp
// always, cpp/graph_shim.cpp with the `cuda-graph` feature.
// torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=<dir>`; Cargo passes that to
// the build scripts of crates depending on torch-sys directly, as DEP_TCH_LIBTORCH_LIB.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report libtorch's lib folder (DEP_TCH_LIBTORCH_LIB)");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // libtorch's headers sit beside its lib folder, as torch-sys compiles its own wrapper.
    let include = PathBuf::from(&lib).parent().expect("libtorch's lib folder has a parent").join("include");
    shim(&include, "inference_mode", &[]);
    #[cfg(feature = "cuda-graph")]
    {
        println!("cargo:rerun-if-env-changed=LBB_CUDA_INCLUDE");
        let cuda = std::env::var("LBB_CUDA_INCLUDE").expect(
            "cuda-graph: set LBB_CUDA_INCLUDE to a folder holding cuda_runtime_api.h (`cargo xtask gpu-bundle` does)",
        );
        shim(&include, "graph_shim", &[PathBuf::from(cuda)]);
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
}

/// Compiles cpp/`name`.cpp with libtorch's flags into a static library linked into the crate.
fn shim(include: &std::path::Path, name: &str, extra_includes: &[PathBuf]) {
    let file = format!("cpp/{name}.cpp");
    println!("cargo:rerun-if-changed={file}");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("GLOG_USE_GLOG_EXPORT", None)
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .includes(extra_includes)
        .warnings(false)
        .file(&file);
    build.compile(&format!("lbb_{name}"));
}
