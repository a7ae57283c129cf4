// Times sdrt::cpu::conv2d (oneDNN) against conv2d_reference on Stable Diffusion's convolution shapes.
//
// Not part of the CMake build; from the repository root, after building libsdrt (e.g. in build/h-vae):
//   g++ -O2 -std=c++20 -fopenmp -Isrc -Iinclude bench/bench_cpu_conv.cpp build/h-vae/libsdrt.a \
//       -ldnnl -lopenblas -lfmt -o /tmp/bench_cpu_conv && /tmp/bench_cpu_conv [--no-reference]
// Reports the best of several runs (the first call, which creates the primitive and reorders the weights, is
// timed separately).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "backends/cpu/conv.h"

namespace {

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Case {
  const char* name;
  int64_t batch, in, h, w, out, kernel, stride;
};

}  // namespace

int main(int argc, char** argv) {
  const bool reference = !(argc > 1 && std::strcmp(argv[1], "--no-reference") == 0);
  const Case cases[] = {
      {"unet 320 @64x64", 2, 320, 64, 64, 320, 3, 1},
      {"unet 1280 @8x8", 2, 1280, 8, 8, 1280, 3, 1},
      {"unet 640 @32x32", 2, 640, 32, 32, 640, 3, 1},
      {"unet conv_in", 2, 4, 64, 64, 320, 3, 1},
      {"unet 2560->1280 @16x16", 2, 2560, 16, 16, 1280, 3, 1},
      {"vae 512 @64x64", 1, 512, 64, 64, 512, 3, 1},
      {"vae 128 @512x512", 1, 128, 512, 512, 128, 3, 1},
      {"vae 256 @512x512", 1, 256, 512, 512, 256, 3, 1},
  };
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  std::printf("%-24s %8s %10s %10s %10s %12s %8s\n", "shape", "GFLOP", "first ms", "best ms", "GFLOP/s",
              "reference ms", "speedup");
  for (const Case& c : cases) {
    sdrt::cpu::Conv2dShape s;
    s.batch = c.batch, s.in_channels = c.in, s.height = c.h, s.width = c.w, s.out_channels = c.out;
    s.kernel = c.kernel, s.stride = c.stride;
    s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = c.kernel / 2;
    std::vector<float> x(static_cast<size_t>(c.batch * c.in * c.h * c.w)),
        w(static_cast<size_t>(c.out * c.in * c.kernel * c.kernel)), b(static_cast<size_t>(c.out)),
        y(static_cast<size_t>(c.batch * c.out * s.out_height() * s.out_width()));
    for (auto* v : {&x, &w, &b})
      for (float& f : *v) f = normal(rng) * 0.05f;
    const double gflop =
        2.0 * c.batch * c.in * c.out * c.kernel * c.kernel * s.out_height() * s.out_width() / 1e9;
    double t = now_ms();
    sdrt::cpu::conv2d(x.data(), w.data(), b.data(), y.data(), s);
    const double first = now_ms() - t;
    const int runs = gflop > 50 ? 2 : 5;
    double best = 1e30;
    for (int r = 0; r < runs; ++r) {
      t = now_ms();
      sdrt::cpu::conv2d(x.data(), w.data(), b.data(), y.data(), s);
      best = std::min(best, now_ms() - t);
    }
    double ref = NAN;
    if (reference) {
      t = now_ms();
      sdrt::cpu::conv2d_reference(x.data(), w.data(), b.data(), y.data(), s);
      ref = now_ms() - t;
    }
    std::printf("%-24s %8.1f %10.1f %10.1f %10.1f %12.1f %7.1fx\n", c.name, gflop, first, best,
                gflop / best * 1e3, ref, ref / best);
  }
}
