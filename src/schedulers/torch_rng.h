// torch's CPU random number generator, reproduced: `torch.Generator("cpu").manual_seed(seed)` followed by
// `torch.randn(shape, generator=g)` (float32) yields the same values here, call after call, so that a seed
// gives the same initial latents and the same ancestral noise as diffusers.
#pragma once

#include <cstdint>

#include "sdrt/tensor.h"

namespace sdrt::schedulers {

class TorchGenerator {
 public:
  explicit TorchGenerator(uint64_t seed);

  // torch.randn(shape, generator=self, dtype=torch.float32) on the CPU.
  Tensor randn(const Shape& shape);
  void fill_randn(float* out, int64_t n);

  // The raw engine (mt19937, seeded as torch seeds it) — exposed for tests.
  uint32_t random();
  uint64_t random64();

 private:
  // mt19937 state
  uint32_t state_[624];
  int index_ = 624;
  // torch caches the second Box-Muller value of the scalar (double) path.
  bool has_cached_normal_ = false;
  double cached_normal_ = 0.0;
};

}  // namespace sdrt::schedulers
