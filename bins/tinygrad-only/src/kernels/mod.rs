//! tinygrad-only's fast path: llama-core's [`Kernels`] implemented with our own CubeCL kernels,
//! recorded into burn-wgpu's fusion stream (see [`stream`]).
//!
//! | operation | kernel | what it fuses |
//! |---|---|---|
//! | `linear` | [`matvec`] (one token: dense rows and the 32-weight block formats), [`linear`] (prompts, K-quants) | dequantization into the matrix-vector/matrix-matrix product |
//! | `norm_linear`, `linear_add` | [`matvec`] (one token), else [`norm`] then [`linear`] | the RMSNorm of the input, the residual add of the output |
//! | `norm_linear_swiglu` | [`matvec`], [`linear`] (the same split) | the norm, gate and up products, SiLU and the multiply |
//! | `embed` | [`embed`] | dequantization into the row lookup |
//! | `rms_norm` | [`norm`] | mean of squares, scale (where no product fuses it) |
//! | `rope` | [`rope`] | table lookup and rotation |
//! | `rope_qkv_into_cache` | [`rope`] | RoPE of Q and K, the KV-cache write (in place) |
//! | `norm_linear_rope_into_cache` | [`matvec`] (one token), else as its parts | the norm, the Q/K/V product, RoPE, the KV-cache write |
//! | `attention` | [`attention`] | scores, causal limit, softmax, weighted values (split-KV) |
//!
//! `swiglu` alone stays composed: burn's fuser already makes it one kernel. docs/kernels.md has
//! each kernel's bytes per token and measured speed.
//!
//! Every kernel is launched without cubecl's bounds checks (`launch_unchecked`): its indices are
//! in bounds by construction, and each launch site's `SAFETY` comment says why (docs/kernels.md,
//! "Bounds checks").

mod attention;
mod embed;
pub mod empty;
mod layout;
mod linear;
mod matvec;
mod matvec_kernel;
mod norm;
pub mod pack;
mod prefill;
mod product;
mod rope;
mod stream;
mod upload;
mod weights;

use burn::tensor::{DType, Distribution, Int, Tensor};
use llama_core::cli::Quantize;
use llama_core::dequant::DequantError;
use llama_core::kernels::{Composed, Kernels, Normed, RawWeight};
use llama_core::kv_cache::CachedKv;
use llama_core::rope::RopeTables;

use pack::HostChunk;
pub use stream::Wgpu;
pub use stream::launches;
use stream::{CubeT, LazyTensor, custom_op, lazy, tensor};
use upload::{compute_dtype, resolve_float, rows_per_chunk, upload_float, upload_halves, upload_u32, upload_words};
use weights::Chunk;
pub use weights::{DeviceWeight, Packing, Values};

type Device = burn_wgpu::WgpuDevice;

#[derive(Debug, Clone, Copy)]
pub struct WgpuKernels {
    layout: layout::Layout,
    /// `--quantize`: how float weights are stored.
    quantize: Option<Quantize>,
    /// Greedy decoding queues the next step before reading the id (`Kernels::pipelines_greedy`).
    pipeline_greedy: bool,
}

impl WgpuKernels {
    /// Thread layouts for a GPU.
    pub fn gpu() -> Self {
        Self { layout: layout::Layout::for_device(false), quantize: None, pipeline_greedy: true }
    }

    /// Thread layouts for a CPU Vulkan driver (lavapipe): 8 lanes per row, its SIMD width.
    pub fn cpu_driver() -> Self {
        Self { layout: layout::Layout::for_device(true), quantize: None, pipeline_greedy: true }
    }

    /// Stores f32/f16/bf16 weights as `quantize` says (quantized files keep their format).
    pub fn with_quantize(self, quantize: Option<Quantize>) -> Self {
        Self { quantize, ..self }
    }

    /// Greedy decoding reads each id before queuing the next step. For a device that runs no
    /// kernels (`--device noop`): there is no device time to hide, and its poll returns at once,
    /// so cubecl's poll thread would spin for as long as a read is pending.
    pub fn without_pipelining(self) -> Self {
        Self { pipeline_greedy: false, ..self }
    }
}

impl WgpuKernels {
    /// Records a kernel with one output of the given shape, in the first input's dtype.
    fn launch<const I: usize, const D: usize>(
        name: &'static str,
        inputs: [LazyTensor; I],
        shape: [usize; D],
        body: impl Fn([CubeT; I]) -> CubeT + Send + Sync + 'static,
    ) -> Tensor<Wgpu, D> {
        let dtype = inputs[0].dtype;
        let [out] = custom_op(name, inputs, [(shape.into(), dtype)], move |inputs| [body(inputs)]);
        tensor(out)
    }

    /// Whether `x` is one token and `matvec.rs` takes `weight` (and `up`): the products that can
    /// fuse the norm before them and the residual add after them.
    fn one_token_matvec(x: &Tensor<Wgpu, 2>, weight: &DeviceWeight, up: Option<&DeviceWeight>) -> bool {
        x.dims()[0] == 1 && matvec::handles(weight) && up.is_none_or(matvec::handles)
    }

    /// `rms_norm(input) · Wᵀ` (with `up`, its SwiGLU) in one launch per chunk of rows.
    fn norm_matvec(
        &self,
        name: &'static str,
        input: Normed<'_, Wgpu>,
        weight: &DeviceWeight,
        up: Option<&DeviceWeight>,
    ) -> Tensor<Wgpu, 2> {
        let (weight, up, layout, eps) = (weight.clone(), up.cloned(), self.layout, input.eps as f32);
        Self::launch(name, [lazy(input.x), lazy(input.weight.clone())], [1, weight.rows], move |[x, norm]| {
            let fused = matvec::Fused { norm: Some((norm, eps)), residual: None, rope: None };
            product::matvec(contiguous(x), &weight, up.as_ref(), fused, layout)
        })
    }
}

fn contiguous(t: CubeT) -> CubeT {
    burn_cubecl::kernel::into_contiguous(t)
}

impl Kernels<Wgpu> for WgpuKernels {
    type Weight = DeviceWeight;

    fn name(&self) -> &'static str {
        "CubeCL kernels (quantized matmul, fused norm/RoPE/SwiGLU, split-KV attention)"
    }

    /// On a GPU; a CPU Vulkan driver's memory is the host's, and a reduction there costs a
    /// launch (about 0.3 ms on lavapipe) to save a copy.
    fn greedy_on_device(&self, _device: &Device) -> bool {
        self.layout != layout::Layout::for_device(true)
    }

    /// On GPUs and on CPU drivers alike: a CPU driver pays the device argmax's launch, but runs
    /// one step while the next is recorded (docs/benchmarks/2026-12-04-noop-host-cost.md).
    fn pipelines_greedy(&self, _device: &Device) -> bool {
        self.pipeline_greedy
    }

    fn load_weight(&self, raw: RawWeight<'_>, device: &Device) -> Result<DeviceWeight, DequantError> {
        let row_bytes = raw.ggml_type.bytes_for(raw.cols)?;
        let packing = pack::packing_for(raw.ggml_type, self.quantize);
        let device_row_bytes = pack::device_row_bytes(packing, raw.ggml_type, self.quantize, raw.cols);
        let per_chunk = rows_per_chunk(device_row_bytes, raw.rows, device);
        let mut chunks = Vec::new();
        for first in (0..raw.rows).step_by(per_chunk) {
            let rows = per_chunk.min(raw.rows - first);
            let bytes = &raw.bytes[first * row_bytes..(first + rows) * row_bytes];
            let host = pack::pack(raw.ggml_type, self.quantize, bytes, raw.cols)?;
            chunks.push(match host {
                HostChunk::F32(values) => {
                    Chunk { data: upload_float(values, DType::F32, device), scales: None, mins: None, rows }
                }
                HostChunk::F16(values) => Chunk { data: upload_halves(values, device), scales: None, mins: None, rows },
                HostChunk::Blocks { quants, scales, mins } => Chunk {
                    data: upload_words(quants, device),
                    scales: Some(upload_halves(scales, device)),
                    mins: mins.map(|m| upload_halves(m, device)),
                    rows,
                },
            });
        }
        Ok(DeviceWeight { packing, chunks, rows_per_chunk: per_chunk, rows: raw.rows, cols: raw.cols })
    }

    fn random_weight(&self, rows: usize, cols: usize, std: f64, device: &Device) -> DeviceWeight {
        // In the compute dtype (f16 with --dtype f16), as a model converted to it would be.
        let dtype = compute_dtype(device);
        let per_chunk = rows_per_chunk(cols * dtype.size(), rows, device);
        let chunks = (0..rows)
            .step_by(per_chunk)
            .map(|first| {
                let rows = per_chunk.min(rows - first);
                let values = Tensor::<Wgpu, 2>::random([rows, cols], Distribution::Normal(0.0, std), device);
                Chunk { data: resolve_float(values), scales: None, mins: None, rows }
            })
            .collect();
        DeviceWeight { packing: Packing::Dense, chunks, rows_per_chunk: per_chunk, rows, cols }
    }

    fn linear(&self, x: Tensor<Wgpu, 2>, weight: &DeviceWeight) -> Tensor<Wgpu, 2> {
        let [tokens, _] = x.dims();
        let (weight, layout) = (weight.clone(), self.layout);
        Self::launch("linear", [lazy(x)], [tokens, weight.rows], move |[x]| {
            product::linear(contiguous(x), &weight, None, layout)
        })
    }

    fn linear_add(&self, x: Tensor<Wgpu, 2>, weight: &DeviceWeight, residual: Tensor<Wgpu, 2>) -> Tensor<Wgpu, 2> {
        if !Self::one_token_matvec(&x, weight, None) {
            return residual + self.linear(x, weight);
        }
        let (weight, layout) = (weight.clone(), self.layout);
        Self::launch("linear_add", [lazy(x), lazy(residual)], [1, weight.rows], move |[x, residual]| {
            let fused = matvec::Fused { norm: None, residual: Some(contiguous(residual)), rope: None };
            product::matvec(contiguous(x), &weight, None, fused, layout)
        })
    }

    fn norm_linear(&self, input: Normed<'_, Wgpu>, weight: &DeviceWeight) -> Tensor<Wgpu, 2> {
        if !Self::one_token_matvec(&input.x, weight, None) {
            return self.linear(self.normed(input), weight);
        }
        self.norm_matvec("norm_linear", input, weight, None)
    }

    fn norm_linear_swiglu(&self, input: Normed<'_, Wgpu>, gate: &DeviceWeight, up: &DeviceWeight) -> Tensor<Wgpu, 2> {
        if !Self::one_token_matvec(&input.x, gate, Some(up)) {
            let h = self.normed(input);
            let [tokens, _] = h.dims();
            let (gate, up, layout) = (gate.clone(), up.clone(), self.layout);
            return Self::launch("linear_swiglu", [lazy(h)], [tokens, gate.rows], move |[h]| {
                product::linear(contiguous(h), &gate, Some(&up), layout)
            });
        }
        self.norm_matvec("norm_linear_swiglu", input, gate, Some(up))
    }

    fn embed(&self, table: &DeviceWeight, ids: &[u32], device: &Device) -> Tensor<Wgpu, 2> {
        let (picks, groups) = embed::embed_picks(ids, table);
        let picks = upload_u32(picks, device).into_primitive();
        let dtype = compute_dtype(device);
        let table = table.clone();
        let [out] = custom_op("embed", [picks], [([ids.len(), table.cols].into(), dtype)], move |[picks]| {
            [embed::embed(picks, &groups, &table, dtype)]
        });
        tensor(out)
    }

    fn embed_ids(&self, table: &DeviceWeight, ids: Tensor<Wgpu, 1, Int>) -> Tensor<Wgpu, 2> {
        let [tokens] = ids.dims();
        let dtype = compute_dtype(&ids.device());
        let table = table.clone();
        let [out] =
            custom_op("embed_ids", [ids.into_primitive()], [([tokens, table.cols].into(), dtype)], move |[ids]| {
                [embed::embed_ids(ids, &table, dtype)]
            });
        tensor(out)
    }

    fn rms_norm(&self, x: Tensor<Wgpu, 2>, weight: &Tensor<Wgpu, 1>, eps: f64) -> Tensor<Wgpu, 2> {
        let shape = x.dims();
        Self::launch("rms_norm", [lazy(x), lazy(weight.clone())], shape, move |[x, w]| {
            norm::rms_norm(contiguous(x), w, eps as f32)
        })
    }

    fn rope(&self, x: Tensor<Wgpu, 3>, tables: &RopeTables<Wgpu>, start: usize) -> Tensor<Wgpu, 3> {
        let shape = x.dims();
        let (cos, sin) = tables.tables();
        Self::launch("rope", [lazy(x), lazy(cos.clone()), lazy(sin.clone())], shape, move |[x, cos, sin]| {
            rope::rope(contiguous(x), cos, sin, start)
        })
    }

    fn weight_bytes(&self, weight: &DeviceWeight) -> usize {
        let bytes = |t: &CubeT| t.meta.shape().num_elements() * t.dtype.size();
        let chunk = |c: &Chunk| bytes(&c.data) + c.scales.as_ref().map_or(0, bytes) + c.mins.as_ref().map_or(0, bytes);
        weight.chunks.iter().map(chunk).sum()
    }

    fn rope_qkv_into_cache(
        &self,
        qkv: Tensor<Wgpu, 2>,
        heads: usize,
        kv_heads: usize,
        tables: &RopeTables<Wgpu>,
        start: usize,
        cache_keys: Tensor<Wgpu, 3>,
        cache_values: Tensor<Wgpu, 3>,
    ) -> (Tensor<Wgpu, 3>, Tensor<Wgpu, 3>, Tensor<Wgpu, 3>) {
        let [tokens, width] = qkv.dims();
        let head_dim = width / (heads + 2 * kv_heads);
        let dtype = qkv.dtype();
        let (cos, sin) = tables.tables();
        let outputs =
            [([tokens, heads, head_dim].into(), dtype), (cache_keys.shape(), dtype), (cache_values.shape(), dtype)];
        let inputs = [lazy(qkv), lazy(cos.clone()), lazy(sin.clone()), lazy(cache_keys), lazy(cache_values)];
        let [q, keys, values] = custom_op("rope_qkv_into_cache", inputs, outputs, move |[qkv, cos, sin, ck, cv]| {
            let (q, ck, cv) = rope::rope_qkv_into_cache(contiguous(qkv), heads, cos, sin, start, ck, cv);
            [q, ck, cv]
        });
        (tensor(q), tensor(keys), tensor(values))
    }

    fn norm_linear_rope_into_cache(
        &self,
        input: Normed<'_, Wgpu>,
        qkv: &DeviceWeight,
        heads: usize,
        kv_heads: usize,
        tables: &RopeTables<Wgpu>,
        start: usize,
        cache_keys: Tensor<Wgpu, 3>,
        cache_values: Tensor<Wgpu, 3>,
    ) -> (Tensor<Wgpu, 3>, Tensor<Wgpu, 3>, Tensor<Wgpu, 3>) {
        let head_dim = qkv.rows / (heads + 2 * kv_heads);
        if !Self::one_token_matvec(&input.x, qkv, None) || !matvec::folds_rope(qkv, head_dim, self.layout) {
            let qkv = self.norm_linear(input, qkv);
            return self.rope_qkv_into_cache(qkv, heads, kv_heads, tables, start, cache_keys, cache_values);
        }
        let dtype = input.x.dtype();
        let (cos, sin) = tables.tables();
        let outputs =
            [([1, heads, head_dim].into(), dtype), (cache_keys.shape(), dtype), (cache_values.shape(), dtype)];
        let inputs = [
            lazy(input.x),
            lazy(input.weight.clone()),
            lazy(cos.clone()),
            lazy(sin.clone()),
            lazy(cache_keys),
            lazy(cache_values),
        ];
        let (weight, layout, eps) = (qkv.clone(), self.layout, input.eps as f32);
        let body = move |[x, norm, cos, sin, cache_keys, cache_values]: [CubeT; 6]| {
            let (cache_keys, cache_values) = (rope::writable(cache_keys), rope::writable(cache_values));
            let into = matvec::RopeInto {
                cos,
                sin,
                position: start,
                cache_keys: cache_keys.clone(),
                cache_values: cache_values.clone(),
            };
            let fused = matvec::Fused { norm: Some((norm, eps)), residual: None, rope: Some(into) };
            [product::matvec(contiguous(x), &weight, None, fused, layout), cache_keys, cache_values]
        };
        let [q, keys, values] = custom_op("norm_linear_rope_into_cache", inputs, outputs, body);
        (tensor(q), tensor(keys), tensor(values))
    }

    fn attention(&self, q: Tensor<Wgpu, 3>, kv: CachedKv<Wgpu>) -> Tensor<Wgpu, 2> {
        let [tokens, heads, head_dim] = q.dims();
        let len = kv.len;
        Self::launch(
            "attention",
            [lazy(q), lazy(kv.keys), lazy(kv.values)],
            [tokens, heads * head_dim],
            move |[q, k, v]| attention::attention(q, k, v, len),
        )
    }

    fn swiglu(&self, gate: Tensor<Wgpu, 2>, up: Tensor<Wgpu, 2>) -> Tensor<Wgpu, 2> {
        Composed.swiglu(gate, up)
    }
}
