// Embeds an rpath to libtorch's lib folder so the binary (and its test executables) run with no
// LD_LIBRARY_PATH.
// torch-sys declares `links = "tch"` and prints `cargo:libtorch_lib=<dir>`; Cargo passes that to
// the build scripts of crates depending on torch-sys directly, as DEP_TCH_LIBTORCH_LIB.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
