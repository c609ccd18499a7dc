// The same libtorch rpath as pytorch-only's (one script, included).
include!("../bins/pytorch-only/build.rs");
