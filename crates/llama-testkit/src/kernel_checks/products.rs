//! The products: `linear`, `product` with and without its norm and residual, `swiglu_product`
//! with stacked and separate weights, and `embed`, for every weight format.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use llama_core::dequant::GgmlType;
use llama_core::kernels::{Kernels, Product, Projections, RawWeight, RmsNorm, TokenIds};

use super::support::{
    ABS, REL, as_f32, assert_close, download, naive_linear, naive_rms_norm, random, test_weight, upload, weight_bytes,
};

/// The weight formats the checks load.
pub const LINEAR_TYPES: [GgmlType; 7] =
    [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4K, GgmlType::Q6K];

/// Row widths checked per format: three blocks of 32, or one K-quant super-block of 256. Dense
/// rows also come long enough for a matrix-vector kernel's unrolled passes (520: 130 vectors of
/// 4 values) and in a width that only 2 divides (542); 32-weight blocks in rows of 40 blocks,
/// more than a 32-lane row's threads, so some take two.
fn row_widths(ty: GgmlType) -> Vec<usize> {
    match ty.block_elements() {
        1 => vec![96, 520, 542],
        32 => vec![96, 1280],
        n => vec![n],
    }
}

/// Every product form for every format in [`LINEAR_TYPES`], one row (decode, which providers may
/// fuse), a few and up to 16 (a server's step of several sequences: a provider may read each
/// weight once for all of them), and more (prefill; providers may switch strategy with the
/// count).
pub fn check_products<B: Backend, K: Kernels<B>>(k: &K, device: &B::Device) {
    let rows = 40;
    for (ty, cols) in LINEAR_TYPES.into_iter().flat_map(|ty| row_widths(ty).into_iter().map(move |cols| (ty, cols))) {
        let (weight, w) = test_weight(k, ty, [rows, cols], 2, device);
        let (up_weight, up) = test_weight(k, ty, [rows, cols], 3, device);
        let stacked_bytes = [weight_bytes(ty, rows * cols, 2), weight_bytes(ty, rows * cols, 3)].concat();
        let raw = RawWeight { name: "test.stacked", ggml_type: ty, bytes: &stacked_bytes, rows: 2 * rows, cols };
        let gate_up = k.load_weight(raw, device).unwrap_or_else(|e| panic!("load stacked {ty:?} weight: {e}"));
        let gate_up = [Projections::Stacked(gate_up), Projections::Separate(vec![weight.clone(), up_weight])];
        let norm_weight = random(cols, 4);
        let norm = RmsNorm { weight: upload::<B, 1>(&norm_weight, [cols], device), eps: 1e-5 };
        for tokens in [1, 2, 5, 16, 17] {
            let what = |op: &str| format!("{op} {ty:?} cols={cols} tokens={tokens}");
            let check = |op: &str, got: Tensor<B, 2>, expected: &[f64]| {
                assert_close(&what(op), &download(got), expected, ABS * 10.0, REL * 10.0)
            };
            let x = random(tokens * cols, 1);
            let x_t = upload::<B, 2>(&x, [tokens, cols], device);
            let residual = random(tokens * rows, 6);
            let residual_t = || upload::<B, 2>(&residual, [tokens, rows], device);
            let plus_residual =
                |e: &[f64]| -> Vec<f64> { e.iter().zip(&residual).map(|(&e, &r)| e + r as f64).collect() };

            let expected = naive_linear(&x, &w, tokens, rows, cols);
            check("linear", k.linear(x_t.clone(), &weight), &expected);
            check("product", k.product(Product::new(x_t.clone(), &weight)), &expected);
            let added = k.product(Product::new(x_t.clone(), &weight).add_to(residual_t()));
            check("product + residual", added, &plus_residual(&expected));

            // The products of the normed input, as the model calls them.
            let h = as_f32(&naive_rms_norm(&x, &norm_weight, norm.eps));
            let normed_expected = naive_linear(&h, &w, tokens, rows, cols);
            check("normed product", k.product(Product::normed(norm.of(x_t.clone()), &weight)), &normed_expected);
            let both = k.product(Product::normed(norm.of(x_t.clone()), &weight).add_to(residual_t()));
            check("normed product + residual", both, &plus_residual(&normed_expected));

            let up_expected = naive_linear(&h, &up, tokens, rows, cols);
            let swiglu: Vec<f64> =
                normed_expected.iter().zip(&up_expected).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect();
            for (form, weights) in ["stacked", "separate"].into_iter().zip(&gate_up) {
                let got = k.swiglu_product(norm.of(x_t.clone()), weights);
                check(&format!("swiglu_product ({form})"), got, &swiglu);
            }
        }

        let ids = [5u32, 0, 39, 5];
        let expected: Vec<f64> = ids
            .iter()
            .flat_map(|&id| w[id as usize * cols..(id as usize + 1) * cols].iter().map(|&v| v as f64))
            .collect();
        let got = download(k.embed(&weight, TokenIds::Host(&ids, device)));
        assert_close(&format!("embed {ty:?} cols={cols}"), &got, &expected, 1e-6, 1e-6);
        let device_ids =
            Tensor::<B, 1, Int>::from_data(TensorData::new(ids.map(i64::from).to_vec(), [ids.len()]), device);
        let got = download(k.embed(&weight, TokenIds::Device(device_ids)));
        assert_close(&format!("embed of device ids {ty:?} cols={cols}"), &got, &expected, 1e-6, 1e-6);
    }
}
