//! Per-kernel timings behind docs/kernels.md: each kernel at SmolLM2-135M's shapes, for ROWS
//! input rows (one decoded token, or one of each of ROWS sequences a server steps together), 40
//! calls queued and one readback, as a markdown table (ms per call, GB/s of what it reads), plus
//! the host's memory copy speed for scale. Uses the CPU-driver thread layout (lavapipe).
//!
//! `cargo run --release -p tinygrad-only --example kernel_timings -- [ROWS]`
use burn::tensor::{Distribution, Tensor};
use llama_core::dequant::GgmlType;
use llama_core::kernels::{Kernels, Placement, Product, Projections, QkvIntoCache, RawWeight, RmsNorm, Span, TokenIds};
use llama_core::kv_cache::CachedKv;
use std::time::Instant;
use tinygrad_only::{Wgpu, WgpuKernels};

const N: usize = 40;

fn time(name: &str, bytes: f64, mut f: impl FnMut() -> Tensor<Wgpu, 2>) {
    for _ in 0..3 {
        let _ = f().into_data();
    }
    let t = Instant::now();
    let mut last = None;
    for _ in 0..N {
        last = Some(f());
    }
    let _ = last.unwrap().into_data();
    let ms = t.elapsed().as_secs_f64() * 1e3 / N as f64;
    println!("| {name} | {:.3} | {:.2} | {:.2} |", bytes / 1e6, ms, bytes / (ms * 1e-3) / 1e9);
}

fn q_bytes(rows: usize, cols: usize, ty: GgmlType) -> Vec<u8> {
    if ty == GgmlType::F32 {
        return (0..rows * cols).flat_map(|i| ((i % 13) as f32 * 0.01 - 0.06).to_le_bytes()).collect();
    }
    if matches!(ty, GgmlType::Q4K | GgmlType::Q6K) {
        // Patterned super-blocks with a small f16 d (and Q4_K's dmin).
        let mut out: Vec<u8> = (0..rows * cols / 256 * ty.block_bytes()).map(|i| ((i * 7) % 251) as u8).collect();
        let d_at = if ty == GgmlType::Q4K { 0 } else { 208 };
        for block in out.chunks_exact_mut(ty.block_bytes()) {
            block[d_at..d_at + 2].copy_from_slice(&half::f16::from_f32(0.001).to_le_bytes());
        }
        return out;
    }
    let blocks = rows * cols / 32;
    let (bb, body) = match ty {
        GgmlType::Q8_0 => (34, 2),
        GgmlType::Q4_1 => (20, 4),
        _ => unreachable!(),
    };
    let mut out = Vec::with_capacity(blocks * bb);
    for b in 0..blocks {
        out.extend(half::f16::from_f32(0.01).to_le_bytes());
        if body == 4 {
            out.extend(half::f16::from_f32(-0.05).to_le_bytes());
        }
        out.extend((0..bb - body).map(|i| ((b * 31 + i * 7) % 251) as u8));
    }
    out
}

fn main() {
    let rows: usize = std::env::args().nth(1).map_or(1, |r| r.parse().expect("ROWS is a number"));
    let device = burn_wgpu::WgpuDevice::default();
    let k = WgpuKernels::cpu_driver();
    // host memcpy bandwidth (read + write)
    let src = vec![1u8; 256 << 20];
    let mut dst = vec![0u8; 256 << 20];
    let t = Instant::now();
    for i in 0..5 {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        let _ = i;
    }
    let s = t.elapsed().as_secs_f64() / 5.0;
    println!("host memcpy: {:.1} GB/s (read+write)", 2.0 * (256u64 << 20) as f64 / s / 1e9);
    drop(dst);
    println!("{rows} row(s)\n\n| kernel | MB read | ms | GB/s |");
    let load = |name: &str, rows: usize, cols: usize, ty: GgmlType| {
        let bytes = q_bytes(rows, cols, ty);
        (
            k.load_weight(RawWeight { name, ggml_type: ty, bytes: &bytes, rows, cols }, &device).unwrap(),
            bytes.len() as f64,
        )
    };
    let x = Tensor::<Wgpu, 2>::random([rows, 576], Distribution::Normal(0.0, 1.0), &device);
    let x1536 = Tensor::<Wgpu, 2>::random([rows, 1536], Distribution::Normal(0.0, 1.0), &device);
    let (qkv, b) = load("qkv", 960, 576, GgmlType::Q4_1);
    time("linear qkv 960×576 Q4_1", b, || k.linear(x.clone(), &qkv));
    let qkv_bytes = b;
    let (wo, b) = load("wo", 576, 576, GgmlType::Q4_1);
    time("linear wo 576×576 Q4_1", b, || k.linear(x.clone(), &wo));
    time("product + residual wo 576×576 Q4_1", b, || k.product(Product::new(x.clone(), &wo).add_to(x.clone())));
    let (g, b1) = load("g", 1536, 576, GgmlType::Q4_1);
    let (u, b2) = load("u", 1536, 576, GgmlType::Q4_1);
    let norm = RmsNorm { weight: Tensor::<Wgpu, 1>::ones([576], &device), eps: 1e-5 };
    time("normed product qkv 960×576 Q4_1", qkv_bytes, || k.product(Product::normed(norm.of(x.clone()), &qkv)));
    let gate_up = Projections::Separate(vec![g, u]);
    time("swiglu_product 2×1536×576 Q4_1", b1 + b2, || k.swiglu_product(norm.of(x.clone()), &gate_up));
    let (d, b) = load("d", 576, 1536, GgmlType::Q4_1);
    time("linear down 576×1536 Q4_1", b, || k.linear(x1536.clone(), &d));
    for ty in [GgmlType::F32, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        let (d, b) = load("d", 576, 1536, ty);
        time(&format!("linear down 576×1536 {}", ty.name()), b, || k.linear(x1536.clone(), &d));
    }
    for ty in [GgmlType::F32, GgmlType::Q8_0] {
        let (head, b) = load("head", 49152, 576, ty);
        time(&format!("linear head 49152×576 {}", ty.name()), b, || k.linear(x.clone(), &head));
    }
    let (head, _) = load("head", 49152, 576, GgmlType::Q8_0);
    time("embed 1 row Q8_0", 612.0, || k.embed(&head, TokenIds::Host(&[123], &device)));
    let inv = llama_core::rope::inverse_frequencies(64, 100000.0, None);
    let tables = llama_core::rope::RopeTables::<Wgpu>::new(&inv, 512, &device);
    let cache = Tensor::<Wgpu, 3>::zeros([3 * rows, 512, 64], &device);
    let qkv = Projections::Stacked(qkv);
    for keys in [60usize, 200] {
        // Each row a sequence of its own, in its own slot, at `keys - 1`.
        let spans: Vec<Span> = (0..rows).map(|slot| Span { slot, start: keys - 1, rows: 1 }).collect();
        let at = k.rows(Placement::from_spans(spans, &tables, [9, 3], &device));
        time(&format!("qkv_into_cache 960×576 Q4_1 at {keys}"), qkv_bytes, || {
            let input = norm.of(x.clone());
            let cache = CachedKv { keys: cache.clone(), values: cache.clone() };
            let (q, _) = k.qkv_into_cache(QkvIntoCache { input, weight: &qkv, rows: &at, cache });
            q.reshape([rows, 576])
        });
        let q = Tensor::<Wgpu, 3>::random([rows, 9, 64], Distribution::Normal(0.0, 1.0), &device);
        let kk = Tensor::<Wgpu, 3>::random([3 * rows, 512, 64], Distribution::Normal(0.0, 1.0), &device);
        time(&format!("attention, {keys} keys a row"), (2 * 3 * rows * keys * 64 * 4) as f64, || {
            k.attention(q.clone(), CachedKv { keys: kk.clone(), values: kk.clone() }, &at)
        });
    }
}
