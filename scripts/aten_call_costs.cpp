// Fixed cost of the small ATen calls in one decoded token of the default model (SmolLM2-135M
// shapes), on the libtorch pytorch-only links: what docs/pytorch.md quotes for InferenceMode,
// the one-row rms_norm and bmm against matmul. Best of 5 runs of 20,000 calls, in µs per call.
//
//   T=.venv/libtorch; g++ -O2 -std=c++17 scripts/aten_call_costs.cpp -I$T/include \
//     -I$T/include/torch/csrc/api/include -L$T/lib -Wl,-rpath,$PWD/$T/lib \
//     -ltorch -ltorch_cpu -lc10 -o target/aten_call_costs
//   OMP_NUM_THREADS=2 target/aten_call_costs            # prints both modes
#include <torch/torch.h>

#include <chrono>
#include <cstdio>

template <class F>
double micros_per_call(F f) {
    for (int i = 0; i < 2000; i++) f();
    double best = 1e9;
    for (int run = 0; run < 5; run++) {
        auto start = std::chrono::steady_clock::now();
        for (int i = 0; i < 20000; i++) f();
        std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        best = std::min(best, took.count() / 20000 * 1e6);
    }
    return best;
}

void measure(bool inference_mode) {
    c10::InferenceMode guard(inference_mode);
    const int64_t dim = 576, kv_heads = 3, group = 3, head_dim = 64, keys = 256;
    auto x = torch::randn({1, dim}), delta = torch::randn({1, dim}), weight = torch::randn({dim});
    auto q = torch::randn({kv_heads, group, head_dim});
    auto k = torch::randn({kv_heads, keys, head_dim}), v = torch::randn({kv_heads, keys, head_dim});
    auto scores = torch::randn({kv_heads, group, keys});
    std::printf("InferenceMode %s\n", inference_mode ? "on" : "off");
    std::printf("  add                          %5.2f\n", micros_per_call([&] { auto s = x + delta; }));
    std::printf("  narrow                       %5.2f\n", micros_per_call([&] { auto s = x.narrow(1, 0, 10); }));
    std::printf("  view                         %5.2f\n", micros_per_call([&] { auto s = x.view({dim}); }));
    std::printf("  rms_norm (ATen composite)    %5.2f\n",
                micros_per_call([&] { auto h = at::rms_norm(x, {dim}, weight, 1e-5); }));
    // TchKernels' one-row form: dot, eps + dot/dim in one addcmul, rsqrt_, two products.
    std::printf("  rms_norm of one row, 4 ops   %5.2f\n", micros_per_call([&] {
                    auto row = x.view({dim});
                    auto inverse_dim = at::scalar_tensor(1.0 / dim);
                    auto scale = at::scalar_tensor(1e-5).addcmul(at::dot(row, row), inverse_dim).rsqrt_();
                    auto h = (x * weight).mul_(scale);
                }));
    std::printf("  scores: matmul               %5.2f\n", micros_per_call([&] { auto s = q.matmul(k.transpose(1, 2)); }));
    std::printf("  scores: bmm                  %5.2f\n", micros_per_call([&] { auto s = q.bmm(k.transpose(1, 2)); }));
    std::printf("  softmax                      %5.2f\n", micros_per_call([&] { auto p = scores.softmax(-1); }));
    std::printf("  output: bmm                  %5.2f\n", micros_per_call([&] { auto o = scores.bmm(v); }));
}

int main() {
    measure(false);
    measure(true);
}
