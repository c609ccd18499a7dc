//! [`Kernels`] for [`WgpuKernels`]: which kernel serves each operation, and when the composed
//! reference does instead (the static-shape step, which tinygrad-only does not run). One row goes
//! to the matrix-vector kernels, which fuse the norm before a product and its ending after (the
//! residual add, or RoPE into the KV cache); up to 16 rows (a server's sequences) to the same
//! kernels reading each weight row once for all of them, after the norm kernel; more to the
//! prefill products. RoPE, the cache writes and attention take every row at its own position in
//! its own cache slot, in one launch each.

use burn::tensor::{DType, Distribution, Int, Tensor};
use llama_core::dequant::DequantError;
use llama_core::kernels::{
    Capabilities, Kernels, Normed, Placement, Product, Projections, QkvIntoCache, RawWeight, Rows, TokenIds, composed,
};
use llama_core::kv_cache::CachedKv;

use super::layout::Layout;
use super::pack::{self, HostChunk};
use super::stream::{CubeT, LazyTensor, Wgpu, custom_op, lazy, tensor};
use super::upload::{
    compute_dtype, resolve_float, rows_per_chunk, upload_float, upload_halves, upload_u32, upload_words,
};
use super::weights::{Chunk, DeviceWeight, Packing};
use super::{Device, WgpuKernels, attention, embed, matvec, norm, places, product, rope};
use places::RowPlaces;

fn contiguous(t: CubeT) -> CubeT {
    burn_cubecl::kernel::into_contiguous(t)
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

    /// The norm kernel alone, where no product fuses it.
    fn normed(&self, input: Normed<'_, Wgpu>) -> Tensor<Wgpu, 2> {
        let shape = input.x.dims();
        let eps = input.norm.eps as f32;
        Self::launch("rms_norm", [lazy(input.x), lazy(input.norm.weight.clone())], shape, move |[x, w]| {
            norm::rms_norm(contiguous(x), w, eps)
        })
    }

    /// `norm(x) · Wᵀ` for every part of `weights`, side by side: with one weight, [`Kernels::product`];
    /// with several, the norm once and a product each.
    fn project(&self, input: Normed<'_, Wgpu>, weights: &Projections<DeviceWeight>) -> Tensor<Wgpu, 2> {
        match weights {
            Projections::Stacked(w) => self.product(Product::normed(input, w)),
            Projections::Separate(ws) => {
                let h = self.normed(input);
                Tensor::cat(ws.iter().map(|w| self.linear(h.clone(), w)).collect(), 1)
            }
        }
    }

    /// `residual + rms_norm(x) · Wᵀ` (with `up`, `rms_norm(x) · Wᵀ` through SwiGLU) for up to 16
    /// rows in one launch per chunk of weight rows, the norm and the residual each optional.
    fn matvec(
        &self,
        name: &'static str,
        p: Product<'_, Wgpu, DeviceWeight>,
        up: Option<&DeviceWeight>,
    ) -> Tensor<Wgpu, 2> {
        let (weight, up, layout) = (p.weight.clone(), up.cloned(), self.layout);
        let eps = p.norm.map_or(0.0, |n| n.eps as f32);
        let shape = [p.x.dims()[0], weight.rows];
        let run = move |x: CubeT, norm: Option<CubeT>, residual: Option<CubeT>| {
            let fused = matvec::Fused { norm: norm.map(|n| (n, eps)), residual: residual.map(contiguous), rope: None };
            product::matvec(contiguous(x), &weight, up.as_ref(), fused, layout)
        };
        let x = lazy(p.x);
        match (p.norm.map(|n| lazy(n.weight.clone())), p.residual.map(lazy)) {
            (None, None) => Self::launch(name, [x], shape, move |[x]| run(x, None, None)),
            (Some(n), None) => Self::launch(name, [x, n], shape, move |[x, n]| run(x, Some(n), None)),
            (None, Some(r)) => Self::launch(name, [x, r], shape, move |[x, r]| run(x, None, Some(r))),
            (Some(n), Some(r)) => Self::launch(name, [x, n, r], shape, move |[x, n, r]| run(x, Some(n), Some(r))),
        }
    }
}

impl Kernels<Wgpu> for WgpuKernels {
    type Weight = DeviceWeight;

    fn capabilities(&self, _device: &Device) -> Capabilities {
        Capabilities {
            name: "CubeCL kernels (quantized matmul, fused norm/RoPE/SwiGLU, split-KV attention)",
            // On a GPU; a CPU Vulkan driver's memory is the host's, and a reduction there costs a
            // launch to save a copy.
            greedy_on_device: self.layout != Layout::for_device(true),
            // On GPUs and on CPU drivers alike: a CPU driver pays the device argmax's launch, but
            // runs one step while the next is recorded (docs/benchmarks/2026-12-04-noop-host-cost.md).
            pipelines_greedy: self.pipeline_greedy,
            static_decode: false,
            stacks_gate_up: false,
        }
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

    fn weight_bytes(&self, weight: &DeviceWeight) -> usize {
        let bytes = |t: &CubeT| t.meta.shape().num_elements() * t.dtype.size();
        let chunk = |c: &Chunk| bytes(&c.data) + c.scales.as_ref().map_or(0, bytes) + c.mins.as_ref().map_or(0, bytes);
        weight.chunks.iter().map(chunk).sum()
    }

    fn embed(&self, table: &DeviceWeight, ids: TokenIds<'_, Wgpu>) -> Tensor<Wgpu, 2> {
        let table = table.clone();
        let out = match ids {
            TokenIds::Host(ids, device) => {
                let (picks, groups) = embed::embed_picks(ids, &table);
                let dtype = compute_dtype(device);
                let outputs = [([ids.len(), table.cols].into(), dtype)];
                let picks = upload_u32(picks, device).into_primitive();
                let [out] =
                    custom_op("embed", [picks], outputs, move |[picks]| [embed::embed(picks, &groups, &table, dtype)]);
                out
            }
            TokenIds::Device(ids) => {
                let dtype = compute_dtype(&ids.device());
                let outputs = [([ids.dims()[0], table.cols].into(), dtype)];
                let [out] = custom_op("embed_ids", [ids.into_primitive()], outputs, move |[ids]| {
                    [embed::embed_ids(ids, &table, dtype)]
                });
                out
            }
        };
        tensor(out)
    }

    fn linear(&self, x: Tensor<Wgpu, 2>, weight: &DeviceWeight) -> Tensor<Wgpu, 2> {
        let [tokens, _] = x.dims();
        let (weight, layout) = (weight.clone(), self.layout);
        Self::launch("linear", [lazy(x)], [tokens, weight.rows], move |[x]| {
            product::linear(contiguous(x), &weight, None, layout)
        })
    }

    fn attention(&self, q: Tensor<Wgpu, 3>, kv: CachedKv<Wgpu>, rows: &Rows<Wgpu>) -> Tensor<Wgpu, 2> {
        if rows.visible.is_some() {
            return composed::attention(q, kv, rows);
        }
        let [tokens, heads, head_dim] = q.dims();
        let (one_span, last_position, kv_heads) = place(rows);
        let inputs = [lazy(q), lazy(kv.keys), lazy(kv.values), int(&rows.positions), int(&rows.slots)];
        Self::launch("attention", inputs, [tokens, heads * head_dim], move |[q, k, v, positions, slots]| {
            let places = RowPlaces { positions, slots, one_span, last_position, kv_heads };
            attention::attention(q, [k, v], places)
        })
    }

    fn product(&self, p: Product<'_, Wgpu, DeviceWeight>) -> Tensor<Wgpu, 2> {
        match (p.norm, &p.residual) {
            (None, None) => self.linear(p.x, p.weight),
            _ if product::in_matvec(p.x.dims()[0], p.weight, None) => self.matvec("product", p, None),
            _ => {
                let x = match p.norm {
                    Some(norm) => self.normed(norm.of(p.x)),
                    None => p.x,
                };
                let y = self.linear(x, p.weight);
                match p.residual {
                    Some(residual) => residual + y,
                    None => y,
                }
            }
        }
    }

    fn qkv_into_cache(&self, args: QkvIntoCache<'_, Wgpu, DeviceWeight>) -> (Tensor<Wgpu, 3>, CachedKv<Wgpu>) {
        let rows = args.rows;
        if rows.visible.is_some() {
            return composed::qkv_into_cache(self, args);
        }
        let (heads, kv_heads) = (rows.heads, rows.kv_heads);
        let CachedKv { keys: cache_keys, values: cache_values } = args.cache;
        let tokens = args.input.x.dims()[0];
        let dtype = args.input.x.dtype();
        let (cos, sin) = (rows.cos.clone(), rows.sin.clone());
        let cache_shape = cache_keys.shape();
        let outputs = |head_dim: usize| {
            [([tokens, heads, head_dim].into(), dtype), (cache_shape.clone(), dtype), (cache_shape.clone(), dtype)]
        };
        let [q, keys, values] = match (args.weight, rows.spans.as_slice()) {
            (Projections::Stacked(weight), [span])
                if product::fuses_rope(tokens, weight, weight.rows / (heads + 2 * kv_heads), self.layout) =>
            {
                // The norm, the Q/K/V product, RoPE and the cache write in one launch per chunk.
                let head_dim = weight.rows / (heads + 2 * kv_heads);
                let norm = args.input.norm;
                let inputs = [
                    lazy(args.input.x),
                    lazy(norm.weight.clone()),
                    lazy(cos),
                    lazy(sin),
                    lazy(cache_keys),
                    lazy(cache_values),
                ];
                let (weight, layout, eps, span) = (weight.clone(), self.layout, norm.eps as f32, *span);
                let body = move |[x, norm, cos, sin, cache_keys, cache_values]: [CubeT; 6]| {
                    let (cache_keys, cache_values) = (rope::writable(cache_keys), rope::writable(cache_values));
                    let into = matvec::RopeInto {
                        cos,
                        sin,
                        position: span.start,
                        slot: span.slot,
                        kv_heads,
                        cache_keys: cache_keys.clone(),
                        cache_values: cache_values.clone(),
                    };
                    let fused = matvec::Fused { norm: Some((norm, eps)), residual: None, rope: Some(into) };
                    [product::matvec(contiguous(x), &weight, None, fused, layout), cache_keys, cache_values]
                };
                custom_op("norm_qkv_rope_into_cache", inputs, outputs(head_dim), body)
            }
            (weights, _) => {
                let qkv = self.project(args.input, weights);
                let head_dim = qkv.dims()[1] / (heads + 2 * kv_heads);
                let (one_span, last_position, _) = place(rows);
                let inputs = [
                    lazy(qkv),
                    lazy(cos),
                    lazy(sin),
                    int(&rows.positions),
                    int(&rows.slots),
                    lazy(cache_keys),
                    lazy(cache_values),
                ];
                let body = move |[qkv, cos, sin, positions, slots, ck, cv]: [CubeT; 7]| {
                    let places = RowPlaces { positions, slots, one_span, last_position, kv_heads };
                    let (q, ck, cv) = rope::rope_qkv_into_cache(contiguous(qkv), heads, [cos, sin], places, [ck, cv]);
                    [q, ck, cv]
                };
                custom_op("rope_qkv_into_cache", inputs, outputs(head_dim), body)
            }
        };
        (tensor(q), CachedKv { keys: tensor(keys), values: tensor(values) })
    }

    fn swiglu_product(&self, input: Normed<'_, Wgpu>, gate_up: &Projections<DeviceWeight>) -> Tensor<Wgpu, 2> {
        let Projections::Separate(parts) = gate_up else {
            return composed::swiglu_product(self, input, gate_up);
        };
        let [gate, up] = parts.as_slice() else {
            panic!("the feed-forward has a gate and an up weight, not {}", parts.len());
        };
        if product::in_matvec(input.x.dims()[0], gate, Some(up)) {
            return self.matvec("norm_swiglu_product", Product::normed(input, gate), Some(up));
        }
        let h = self.normed(input);
        let [tokens, _] = h.dims();
        let (gate, up, layout) = (gate.clone(), up.clone(), self.layout);
        Self::launch("linear_swiglu", [lazy(h)], [tokens, gate.rows], move |[h]| {
            product::linear(contiguous(h), &gate, Some(&up), layout)
        })
    }

    /// The whole rotary tables, which the kernels read at each row's position (the static step,
    /// which takes the composed forms, gets the reference's gathered rows).
    fn rows(&self, placement: Placement<'_, Wgpu>) -> Rows<Wgpu> {
        if placement.static_capacity.is_some() {
            return composed::rows(placement);
        }
        let (cos, sin) = placement.rope.tables();
        Rows {
            cos: cos.clone(),
            sin: sin.clone(),
            spans: placement.spans,
            positions: placement.positions,
            slots: placement.slots,
            heads: placement.heads,
            kv_heads: placement.kv_heads,
            visible: None,
        }
    }
}

/// Where `rows` go, as the kernels' launch arguments take it: one sequence's first position and
/// slot (when the step is one sequence's), the highest position, the KV heads per slot.
fn place(rows: &Rows<Wgpu>) -> (Option<(usize, usize)>, usize, usize) {
    let one_span = match rows.spans.as_slice() {
        [span] => Some((span.start, span.slot)),
        _ => None,
    };
    let last_position = rows.spans.iter().map(|s| s.end()).max().unwrap_or(1) - 1;
    (one_span, last_position, rows.kv_heads)
}

/// An int tensor of [`Wgpu`] as the lazy fusion tensor [`custom_op`] records.
fn int(t: &Tensor<Wgpu, 1, Int>) -> LazyTensor {
    t.clone().into_primitive()
}
