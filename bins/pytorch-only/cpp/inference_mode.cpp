// libtorch's InferenceMode for the rest of the calling thread's life.
//
// Every ATen call made outside it goes through the Autograd and ADInplaceOrView dispatch keys,
// which record version counters and view metadata for a backward pass this program never runs.
// A decoded token is about 2,300 small ATen calls on the default model, so that bookkeeping is a
// few percent of the CPU decode (docs/pytorch.md). The guard is RAII in C++; tch has no binding
// for it, so this shim creates one per thread and never drops it.
#include <c10/core/InferenceMode.h>

extern "C" void lbb_enter_inference_mode() {
    thread_local c10::InferenceMode* guard = nullptr;
    if (guard == nullptr) {
        guard = new c10::InferenceMode(true);
    }
}
