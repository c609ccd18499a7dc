//! The dependencies' floor under our host cost: chains of launches of a kernel that does nothing
//! (`kernels::empty`), recorded exactly as our kernels are, each chain ending with a one-element
//! read, as a decoded token ends with its id. Prints the median time per chain and per launch.
//!
//! `empty`: each launch takes the last one's output and binds 2 tensors. `decode`: 99 launches
//! with the inputs, outputs and data flow of a 16-layer decode step as tinygrad-only records it
//! (per layer: the Q/K/V product with RoPE into the caches, attention's two launches, the output
//! product with the residual, the feed-forward's two), so the floor of a real step's shape is
//! known too.
//!
//! cargo run --release -p tinygrad-only --example launch_floor -- [noop|auto] [launches] [rounds] [empty|decode]

use std::time::Instant;

use burn::tensor::Tensor;
use tinygrad_only::{Wgpu, kernels::empty::empty_op, noop};

type T = Tensor<Wgpu, 1>;

/// One decode step's shape: 16 layers of 6 launches, then the head and the pick.
fn decode_chain(x: T, norm: &T, tables: &T, caches: &mut [(T, T)]) -> T {
    let [mut x] = empty_op::<1, 1>([x]); // embedding lookup
    for (keys, values) in caches.iter_mut() {
        let [q, k, v] =
            empty_op::<6, 3>([x.clone(), norm.clone(), tables.clone(), tables.clone(), keys.clone(), values.clone()]);
        (*keys, *values) = (k.clone(), v.clone());
        let [partial] = empty_op::<3, 1>([q, k, v]);
        let [attended] = empty_op::<1, 1>([partial]);
        let [h] = empty_op::<2, 1>([attended, x]);
        let [activation] = empty_op::<2, 1>([h.clone(), norm.clone()]);
        [x] = empty_op::<2, 1>([activation, h]);
    }
    let [logits] = empty_op::<2, 1>([x, norm.clone()]);
    let [id] = empty_op::<1, 1>([logits]);
    id
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let device = match args.first().map(String::as_str).unwrap_or("noop") {
        "noop" => noop::create()?.0,
        "auto" => burn_wgpu::WgpuDevice::default(),
        other => anyhow::bail!("unknown device `{other}`: noop or auto"),
    };
    let launches: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let rounds: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let decode = match args.get(3).map(String::as_str).unwrap_or("empty") {
        "empty" => false,
        "decode" => true,
        other => anyhow::bail!("unknown chain `{other}`: empty or decode"),
    };
    let (norm, tables) = (T::zeros([64], &device), T::zeros([64], &device));
    let mut caches: Vec<(T, T)> = (0..16).map(|_| (T::zeros([64], &device), T::zeros([64], &device))).collect();
    let mut chain = |n: usize| {
        let start = Instant::now();
        let mut x = T::zeros([64], &device);
        if decode && n > 0 {
            x = decode_chain(x, &norm, &tables, &mut caches);
        } else {
            for _ in 0..n {
                [x] = empty_op::<1, 1>([x]);
            }
        }
        let _ = x.narrow(0, 0, 1).into_data();
        start.elapsed().as_secs_f64() * 1e3
    };
    let launches = if decode { 99 } else { launches };
    for _ in 0..20 {
        chain(launches); // warm-up: pipelines compiled, memory pooled
    }
    let mut read_only: Vec<f64> = (0..rounds).map(|_| chain(0)).collect();
    let mut with_launches: Vec<f64> = (0..rounds).map(|_| chain(launches)).collect();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (read, full) = (median(&mut read_only), median(&mut with_launches));
    println!(
        "read alone: {read:.3} ms; {launches} empty launches + read: {full:.3} ms; per launch {:.1} us (median of {rounds})",
        (full - read) * 1e3 / launches.max(1) as f64
    );
    Ok(())
}
