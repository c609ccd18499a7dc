// Embeds an rpath to libtorch's lib folder so the binary (and its test executables) run with no
// LD_LIBRARY_PATH, and with the `cuda-graph` feature compiles the CUDA graph shim.
// torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=<dir>`; Cargo passes that to
// the build scripts of crates depending on torch-sys directly, as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(dir) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    #[cfg(feature = "cuda-graph")]
    cuda_graph::build(lib.as_deref());
}

#[cfg(feature = "cuda-graph")]
mod cuda_graph {
    use std::path::Path;

    /// Compiles cuda/graph_shim.cpp against the headers of the libtorch torch-sys links (its lib
    /// folder's sibling `include`), as torch-sys compiles its own wrapper.
    pub fn build(lib: Option<&str>) {
        println!("cargo:rerun-if-changed=cuda/graph_shim.cpp");
        println!("cargo:rerun-if-env-changed=LBB_CUDA_INCLUDE");
        let lib = lib.expect("cuda-graph: torch-sys did not report libtorch's lib folder (DEP_TCH_LIBTORCH_LIB)");
        let include = Path::new(lib).parent().expect("libtorch's lib folder has a parent").join("include");
        let cuda = std::env::var("LBB_CUDA_INCLUDE").expect(
            "cuda-graph: set LBB_CUDA_INCLUDE to a folder holding cuda_runtime_api.h (`cargo xtask gpu-bundle` does)",
        );
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .std("c++17")
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .define("GLOG_USE_GLOG_EXPORT", None)
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            .include(cuda)
            .warnings(false)
            .file("cuda/graph_shim.cpp")
            .compile("lbb_cuda_graph");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
}
