//! Every [`Kernels`] operation checked against a naive host loop in f64, on random inputs.
//! Generic over the backend, so each binary's tests run them on its own framework, and a
//! framework's fast-path provider is held to the same bounds as [`llama_core::kernels::Composed`].

mod attention;
mod model;
mod products;
mod support;

use burn::tensor::backend::Backend;
use llama_core::kernels::Kernels;

pub use attention::{check_attention, check_kv_cache, check_qkv_into_cache};
pub use model::{
    check_argmax_on_device, check_batched_step, check_incremental_decode, check_scheduler, check_static_decode,
};
pub use products::{LINEAR_TYPES, check_products};
pub use support::assert_close;

/// All of the checks.
pub fn check_all<B: Backend, K: Kernels<B> + Clone>(k: &K, device: &B::Device) {
    check_products(k, device);
    check_qkv_into_cache(k, device);
    check_attention(k, device);
    check_kv_cache::<B>(device);
    check_incremental_decode(k, device);
    check_static_decode(k, device);
    check_batched_step(k, device);
    check_scheduler(k, device);
    check_argmax_on_device::<B>(device);
}
