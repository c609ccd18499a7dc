//! The trait [`Kernels`] and the arguments of its operations.
//!
//! Four primitives (storing weights, `embed`, `linear`, `attention`), three fused operations
//! whose arguments are structs ([`Product`], [`QkvIntoCache`], the feed-forward's
//! `swiglu_product`), and [`Kernels::rows`], which prepares once per step what every layer reads
//! about where the step's rows sit ([`Rows`]). A step's rows may belong to several sequences,
//! each at its own positions in its own cache slot, so the fused operations and attention take
//! per-row positions and slots. Every operation's plain composition is in `composed.rs`; a
//! provider that fuses only some cases calls it for the rest.
//!
//! Why a provider type and not `impl Kernels for Wgpu`: Rust's orphan rule forbids a bin crate
//! implementing a llama-core trait for a burn-wgpu type, but it may implement it for a local
//! struct (`struct WgpuKernels; impl Kernels<Wgpu> for WgpuKernels`).

use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};

use crate::dequant::{DequantError, GgmlType};
use crate::kv_cache::CachedKv;
use crate::rope::RopeTables;

/// What a provider chooses to do on a device: the policy the scheduler and the loader read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Human-readable name for logs and `--json` output.
    pub name: &'static str,
    /// Greedy decoding takes the argmax on the device and reads back one id per sequence, rather
    /// than reading back the logits and scanning them on the host. Worth it where the logits must
    /// cross a bus (a GPU: 256 KB per token on a 128k vocabulary); on a CPU the host scan is
    /// cheaper than the framework's argmax call.
    pub greedy_on_device: bool,
    /// A greedy sequence decoding alone is pipelined: the argmax stays on the device, the next
    /// step's embedding is looked up from it there, and that step is queued before the id reaches
    /// the host, which reads one step behind. Host and device work then overlap.
    pub pipelines_greedy: bool,
    /// A sequence decoding alone runs the static-shape step even without `--compile` (as
    /// PyTorch's static-cache decoders do), so that where `--compile` captures that step the
    /// capture is the flags' only difference: the same kernels on the same shapes.
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
    /// `[rows, dim]`: the residual stream.
    pub x: Tensor<B, 2>,
    pub norm: &'a RmsNorm<B>,
}

/// `residual + norm(x) · Wᵀ`, the norm and the residual each optional: a projection with the
/// RMSNorm before it and the residual add after it, which a provider may fuse into the product
/// (every workgroup reads the whole input row anyway; each output can be added as it is written).
pub struct Product<'a, B: Backend, W> {
    /// `[rows, in]`
    pub x: Tensor<B, 2>,
    pub norm: Option<&'a RmsNorm<B>>,
    /// `[out, in]`
    pub weight: &'a W,
    /// `[rows, out]`
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

/// One sequence's rows of a step: its tokens at positions `start .. start + rows` of cache slot
/// `slot`, each seeing its slot's positions up to its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub slot: usize,
    pub start: usize,
    pub rows: usize,
}

impl Span {
    /// The slot's length once the span is written.
    pub fn end(&self) -> usize {
        self.start + self.rows
    }
}

/// Where a step's rows sit, before [`Kernels::rows`] derives what the layers read from it.
pub struct Placement<'a, B: Backend> {
    /// Each sequence's rows, in row order.
    pub spans: Vec<Span>,
    /// `[rows]`: each row's position and cache slot, on the device.
    pub positions: Tensor<B, 1, Int>,
    pub slots: Tensor<B, 1, Int>,
    pub rope: &'a RopeTables<B>,
    pub heads: usize,
    pub kv_heads: usize,
    /// The static-shape step, over caches of this many positions per slot (see [`Rows::visible`]).
    pub static_capacity: Option<usize>,
}

impl<'a, B: Backend> Placement<'a, B> {
    /// `spans` at the positions they name, uploaded to `device`; `[heads, kv_heads]` the model's.
    pub fn from_spans(
        spans: Vec<Span>,
        rope: &'a RopeTables<B>,
        [heads, kv_heads]: [usize; 2],
        device: &B::Device,
    ) -> Self {
        let rows: usize = spans.iter().map(|s| s.rows).sum();
        let per_row = |f: fn(&Span, usize) -> i64| -> Tensor<B, 1, Int> {
            let values: Vec<i64> = spans.iter().flat_map(|s| (0..s.rows).map(move |r| f(s, r))).collect();
            Tensor::from_data(TensorData::new(values, [rows]), device)
        };
        let (positions, slots) = (per_row(|s, r| (s.start + r) as i64), per_row(|s, _| s.slot as i64));
        Self { spans, positions, slots, rope, heads, kv_heads, static_capacity: None }
    }
}

/// What every layer of a step reads about its rows, made once per step by [`Kernels::rows`].
pub struct Rows<B: Backend> {
    /// Each sequence's rows, in row order; their rows add up to the step's.
    pub spans: Vec<Span>,
    /// `[rows]`: each row's position and cache slot, on the device.
    pub positions: Tensor<B, 1, Int>,
    pub slots: Tensor<B, 1, Int>,
    /// Each row's rotary rows, `[rows, width]`, in the width the provider's `qkv_into_cache`
    /// reads (the reference's: `head_dim / 2`).
    pub cos: Tensor<B, 2>,
    pub sin: Tensor<B, 2>,
    pub heads: usize,
    pub kv_heads: usize,
    /// The static-shape step: `[rows, capacity]`, true for the positions of its slot each row
    /// may attend to. Every shape and host value of such a step is then the same at every
    /// position (kernels read the positions from the device tensors, never from `spans`), so a
    /// framework may capture it once and replay it. `None`: each span attends to its slot's
    /// first [`Span::end`] positions, causally.
    pub visible: Option<Tensor<B, 2, Bool>>,
}

impl<B: Backend> Rows<B> {
    /// Rows in the step.
    pub fn count(&self) -> usize {
        self.spans.iter().map(|s| s.rows).sum()
    }

    /// Each span with the index of its first row in the step.
    pub fn spans_from(&self) -> impl Iterator<Item = (Span, usize)> + '_ {
        self.spans.iter().scan(0, |next, span| {
            let first = *next;
            *next += span.rows;
            Some((*span, first))
        })
    }
}

/// Attention's whole input side: `q, k, v = rope(Wqkv · norm(x))`, with each row's k and v
/// written into its slot of the layer's cache at its position.
pub struct QkvIntoCache<'a, B: Backend, W> {
    pub input: Normed<'a, B>,
    /// `[Wq; Wk; Wv]`, Q and K rows in half-split RoPE order (see [`crate::rope`]).
    pub weight: &'a Projections<W>,
    pub rows: &'a Rows<B>,
    /// The layer's whole cache, taken from the [`crate::kv_cache::KvCache`] so that a provider
    /// may write it in place.
    pub cache: CachedKv<B>,
}

/// Token ids to embed: from the host, or already on the device (a greedy step's argmax, so that
/// the step reading them can be queued before they reach the host).
pub enum TokenIds<'a, B: Backend> {
    Host(&'a [u32], &'a B::Device),
    /// `[rows]`
    Device(Tensor<B, 1, Int>),
}

/// The operations a framework may do its own way; `composed.rs` has each one's reference form.
pub trait Kernels<B: Backend>: Send + Sync {
    /// How this provider keeps a matmul weight on the device (dense, or still quantized).
    type Weight: Clone + Send + Sync;

    /// What this provider chooses to do on `device`.
    fn capabilities(&self, device: &B::Device) -> Capabilities;

    /// Uploads a weight read from a model file.
    fn load_weight(&self, raw: RawWeight<'_>, device: &B::Device) -> Result<Self::Weight, DequantError>;

    /// A `rows × cols` (`[out, in]`) weight of N(0, `std`²) values generated on the device
    /// (random-weight models for speed measurements).
    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &B::Device) -> Self::Weight;

    /// Device bytes `weight` occupies (what a product against it reads).
    fn weight_bytes(&self, weight: &Self::Weight) -> usize;

    /// Rows `ids` of a `[vocab, dim]` embedding table (loaded like any matmul weight, so a tied
    /// output head shares it): `[rows, dim]`.
    fn embed(&self, table: &Self::Weight, ids: TokenIds<'_, B>) -> Tensor<B, 2>;

    /// `x · Wᵀ` for the stored `[out, in]` weight W: `[rows, in]` → `[rows, out]`.
    fn linear(&self, x: Tensor<B, 2>, weight: &Self::Weight) -> Tensor<B, 2>;

    /// Grouped-query attention of `q` `[rows, heads, head_dim]`, each row over its own slot of
    /// the cache `kv` up to its own position (or, in the static step, the positions
    /// [`Rows::visible`] leaves it). Returns `[rows, heads * head_dim]`.
    fn attention(&self, q: Tensor<B, 3>, kv: CachedKv<B>, rows: &Rows<B>) -> Tensor<B, 2>;

    /// `residual + norm(x) · Wᵀ`, see [`Product`].
    fn product(&self, product: Product<'_, B, Self::Weight>) -> Tensor<B, 2>;

    /// `q, k, v = rope(Wqkv · norm(x))`, k and v written into the cache: returns the queries
    /// `[rows, heads, head_dim]` and the written cache. A provider may do it in one pass for
    /// one row: if each pair of rows that RoPE rotates together is summed in one workgroup, that
    /// workgroup can rotate the pair and write it where it belongs, and the projection itself is
    /// never stored.
    fn qkv_into_cache(&self, args: QkvIntoCache<'_, B, Self::Weight>) -> (Tensor<B, 3>, CachedKv<B>);

    /// `silu(h · Gateᵀ) * (h · Upᵀ)` for `h = norm(x)`, the feed-forward's first half, from
    /// `[Gate; Up]`. A provider may read both weights in one pass over the input, fuse the norm,
    /// and never write the two intermediate activations.
    fn swiglu_product(&self, input: Normed<'_, B>, gate_up: &Projections<Self::Weight>) -> Tensor<B, 2>;

    /// What every layer reads about the step's rows, derived once per step rather than once per
    /// layer: the rotary rows at each row's position and, for the static-shape step, which
    /// positions each row may see.
    fn rows(&self, placement: Placement<'_, B>) -> Rows<B>;
}
