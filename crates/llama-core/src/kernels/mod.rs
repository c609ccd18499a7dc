//! The fast-path seam: every operation a framework may do faster goes through [`Kernels`].
//!
//! Four primitives (`embed`, `linear`, `attention`, and storing weights), three fused operations
//! whose arguments are structs ([`Product`], [`QkvIntoCache`], the feed-forward's
//! `swiglu_product`), and the static-shape step's two hooks. Each fused operation's default is
//! the plain composition in [`composed`], written with Burn's primitive tensor ops; [`Composed`]
//! is the provider that keeps every default and is the reference the others are tested against.
//! A binary picks the provider; the model is written once against the trait.
//!
//! Why a provider type and not `impl Kernels for Wgpu`: Rust's orphan rule forbids a bin crate
//! implementing a llama-core trait for a burn-wgpu type, but it may implement it for a local
//! struct (`struct WgpuKernels; impl Kernels<Wgpu> for WgpuKernels`).

pub mod composed;
mod dense;

use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use crate::dequant::{DequantError, GgmlType};
use crate::kv_cache::CachedKv;
use crate::rope::RopeTables;

pub use composed::{rotate_half_split, run_step_eagerly, transpose};
pub use dense::{Composed, DenseWeight};

/// What a provider chooses to do on a device: the policy the generation loop and the loader read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Human-readable name for logs and `--json` output.
    pub name: &'static str,
    /// Greedy decoding takes the argmax on the device and reads back one id, rather than reading
    /// back the logits and scanning them on the host. Worth it where the logits must cross a bus
    /// (a GPU: 256 KB per token on a 128k vocabulary); on a CPU the host scan is cheaper than
    /// the framework's argmax call.
    pub greedy_on_device: bool,
    /// Plain greedy decoding is pipelined: the argmax stays on the device, the next step's
    /// embedding is looked up from it there, and that step is queued before the id reaches the
    /// host, which reads one step behind. Host and device work then overlap instead of adding up.
    pub pipelines_greedy: bool,
    /// Decoding without `--compile` runs the static-shape step op by op (as PyTorch's
    /// static-cache decoders do) rather than shapes that follow the cache. Where `--compile`
    /// captures that step, the capture is then the flags' only difference: the same kernels on
    /// the same shapes, so the same tokens.
    pub static_decode: bool,
    /// The loader stacks each layer's gate and up weights into one `[2·ffn, dim]` weight when the
    /// file stores both in the same format: one product where a provider's fixed cost per call
    /// matters more than a fused two-weight kernel.
    pub stacks_gate_up: bool,
}

impl Capabilities {
    /// Everything on the host and dynamic: the reference's choices.
    pub const fn plain(name: &'static str) -> Self {
        Self { name, greedy_on_device: false, pipelines_greedy: false, static_decode: false, stacks_gate_up: false }
    }
}

/// A matmul weight as stored in the file, before the provider decides how to keep it.
#[derive(Debug, Clone, Copy)]
pub struct RawWeight<'a> {
    pub name: &'a str,
    pub ggml_type: GgmlType,
    /// Row-major `rows × cols` in `ggml_type`'s block layout.
    pub bytes: &'a [u8],
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
}

/// Projections that read the same input (Q, K and V; the feed-forward's gate and up): stacked by
/// rows into one weight when the file stores them in the same format (one product instead of
/// several), else each kept on its own. Either way the output is the parts side by side.
#[derive(Debug, Clone)]
pub enum Projections<W> {
    Stacked(W),
    Separate(Vec<W>),
}

impl<W> Projections<W> {
    pub fn weights(&self) -> &[W] {
        match self {
            Self::Stacked(w) => std::slice::from_ref(w),
            Self::Separate(ws) => ws,
        }
    }
}

/// `rms_norm(x) = x / sqrt(mean(x²) + eps) * weight` over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    /// `[dim]`
    pub weight: Tensor<B, 1>,
    pub eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// `x` to be normed by this norm, kept unnormed so that the product reading it may fuse the norm.
    pub fn of(&self, x: Tensor<B, 2>) -> Normed<'_, B> {
        Normed { x, norm: self }
    }
}

/// A product's input that begins with an RMSNorm, not yet applied.
#[derive(Debug, Clone)]
pub struct Normed<'a, B: Backend> {
    /// `[tokens, dim]`: the residual stream.
    pub x: Tensor<B, 2>,
    pub norm: &'a RmsNorm<B>,
}

/// `residual + norm(x) · Wᵀ`, the norm and the residual each optional: a projection with the
/// RMSNorm before it and the residual add after it, which a provider may fuse into the product
/// (every workgroup reads the whole input row anyway; each output can be added as it is written).
pub struct Product<'a, B: Backend, W> {
    /// `[tokens, in]`
    pub x: Tensor<B, 2>,
    pub norm: Option<&'a RmsNorm<B>>,
    /// `[out, in]`
    pub weight: &'a W,
    /// `[tokens, out]`
    pub residual: Option<Tensor<B, 2>>,
}

impl<'a, B: Backend, W> Product<'a, B, W> {
    /// `x · Wᵀ`
    pub fn new(x: Tensor<B, 2>, weight: &'a W) -> Self {
        Self { x, norm: None, weight, residual: None }
    }

    /// `norm(x) · Wᵀ`
    pub fn normed(input: Normed<'a, B>, weight: &'a W) -> Self {
        Self { x: input.x, norm: Some(input.norm), weight, residual: None }
    }

    /// `residual + …`
    pub fn add_to(self, residual: Tensor<B, 2>) -> Self {
        Self { residual: Some(residual), ..self }
    }
}

/// Where the tokens of a forward pass sit.
#[derive(Debug, Clone)]
pub enum Position<B: Backend> {
    /// The first token's position, known on the host: shapes follow the cache.
    Host(usize),
    /// One token whose position is on the device: the static-shape step, where no shape and no
    /// host value depends on it, so a framework may capture the step once and replay it.
    Device(StepPosition<B>),
}

/// The static-shape step's position and what follows from it, made once per step by
/// [`Kernels::step_position`] and read by every layer.
#[derive(Debug, Clone)]
pub struct StepPosition<B: Backend> {
    /// `[1]`
    pub position: Tensor<B, 1, Int>,
    /// The rotary tables' rows at `position`, `[1, width]`, in the width the provider's
    /// `qkv_into_cache` reads.
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
    /// `[capacity]`: true for the cache rows at or before `position`.
    pub visible: Tensor<B, 1, Bool>,
}

/// What every layer of one forward pass shares besides its input.
pub struct Pass<'a, B: Backend> {
    pub at: Position<B>,
    pub rope: &'a RopeTables<B>,
    pub heads: usize,
    pub kv_heads: usize,
}

/// Attention's whole input side: `q, k, v = rope(Wqkv · norm(x))`, with k and v written into the
/// layer's cache where the pass's tokens sit.
pub struct QkvIntoCache<'a, B: Backend, W> {
    pub input: Normed<'a, B>,
    /// `[Wq; Wk; Wv]`, Q and K rows in half-split RoPE order (see [`crate::rope`]).
    pub weight: &'a Projections<W>,
    pub pass: &'a Pass<'a, B>,
    /// The layer's whole cache, `[kv_heads, capacity, head_dim]` each, taken from the
    /// [`crate::kv_cache::KvCache`] so that a provider may write it in place.
    pub cache: (Tensor<B, 3>, Tensor<B, 3>),
}

/// The static-shape decode step: the token's embedding `[1, dim]` and its device position `[1]`
/// to the logits `[1, vocab]`.
pub type StaticStep<'a, B> = dyn FnMut(Tensor<B, 2>, Tensor<B, 1, Int>) -> Tensor<B, 2> + 'a;

/// Token ids to embed: from the host, or already on the device (a greedy step's argmax, so that
/// the step reading them can be queued before they reach the host).
pub enum TokenIds<'a, B: Backend> {
    Host(&'a [u32], &'a B::Device),
    /// `[tokens]`
    Device(Tensor<B, 1, Int>),
}

pub trait Kernels<B: Backend>: Send + Sync {
    /// How this provider keeps a matmul weight on the device (dense, or still quantized).
    type Weight: Clone + Send + Sync;

    /// What this provider chooses to do on `device`.
    fn capabilities(&self, device: &B::Device) -> Capabilities;

    /// Uploads a weight read from a GGUF file.
    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<Self::Weight, DequantError>;

    /// A `rows × cols` (`[out, in]`) weight of N(0, `std`²) values generated on the device
    /// (random-weight models for speed measurements).
    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &B::Device) -> Self::Weight;

    /// Device bytes `weight` occupies (what a product against it reads).
    fn weight_bytes(&self, weight: &Self::Weight) -> usize;

    /// Rows `ids` of a `[vocab, dim]` embedding table (loaded like any matmul weight, so a tied
    /// output head shares it): `[tokens, dim]`.
    fn embed(&self, table: &Self::Weight, ids: TokenIds<'_, B>) -> Tensor<B, 2>;

    /// `x · Wᵀ` for the stored `[out, in]` weight W: `[tokens, in]` → `[tokens, out]`.
    fn linear(&self, x: Tensor<B, 2>, weight: &Self::Weight) -> Tensor<B, 2>;

    /// Grouped-query attention of `q` `[tokens, heads, head_dim]` over the cache `kv`
    /// (`[kv_heads, capacity, head_dim]`): at [`Position::Host`], causal over the first `kv.len`
    /// rows, the queries being the last of them; at [`Position::Device`], one query over every
    /// row, those `visible` leaves out masked. Returns `[tokens, heads * head_dim]`.
    fn attention(&self, q: Tensor<B, 3>, kv: CachedKv<B>, at: &Position<B>) -> Tensor<B, 2>;

    /// `residual + norm(x) · Wᵀ`, see [`Product`].
    fn product(&self, product: Product<'_, B, Self::Weight>) -> Tensor<B, 2> {
        composed::product(self, product)
    }

    /// `q, k, v = rope(Wqkv · norm(x))`, k and v written into the cache: returns the queries
    /// `[tokens, heads, head_dim]` and the written cache. A provider may do it in one pass for
    /// one token: if each pair of rows that RoPE rotates together is summed in one workgroup,
    /// that workgroup can rotate the pair and write it where it belongs, and the projection
    /// itself is never stored.
    fn qkv_into_cache(&self, args: QkvIntoCache<'_, B, Self::Weight>) -> (Tensor<B, 3>, CachedKv<B>) {
        composed::qkv_into_cache(self, args)
    }

    /// `silu(h · Gateᵀ) * (h · Upᵀ)` for `h = norm(x)`, the feed-forward's first half, from
    /// `[Gate; Up]`. A provider may read both weights in one pass over the input, fuse the norm,
    /// and never write the two intermediate activations.
    fn swiglu_product(&self, input: Normed<'_, B>, gate_up: &Projections<Self::Weight>) -> Tensor<B, 2> {
        composed::swiglu_product(self, input, gate_up)
    }

    /// What the static-shape step derives from its device `position` `[1]`, once per step rather
    /// than once per layer (in a captured graph, 2 to 4 kernels fewer per layer): the rotary rows
    /// at it and which of the cache's `capacity` rows are visible.
    fn step_position(&self, tables: &RopeTables<B>, position: Tensor<B, 1, Int>, capacity: usize) -> StepPosition<B> {
        composed::step_position(tables, position, capacity)
    }

    /// Runs `step`, the static-shape decode step (see the model's `decode`), on the
    /// embedding `x` `[1, dim]` at `position`, against the KV cache with id `cache_id`. By default
    /// it puts the position on the device and calls the step; a provider may instead capture the
    /// step once (a CUDA graph: every call has the same shapes and buffers) and replay it for
    /// later tokens of the same cache.
    fn run_static_step(
        &self,
        x: Tensor<B, 2>,
        position: usize,
        cache_id: u64,
        step: &mut StaticStep<B>,
    ) -> Tensor<B, 2> {
        let _ = cache_id;
        run_step_eagerly(x, position, step)
    }
}
