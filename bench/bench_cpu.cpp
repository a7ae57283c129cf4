// CPU benchmark: one SD UNet step (batch 2, as with classifier-free guidance) and one VAE decode, on a model
// folder with real SD shapes (bench/make_random_sd15.py writes one with random weights).
//
//   bench_cpu --model /tmp/sd15-random --size 256 --steps 3 [--vae]
//
// Prints the median time per UNet call and per VAE decode, and the peak resident memory.
#include <malloc.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "models/cpu/unet.h"
#include "models/cpu/vae.h"
#include "sdrt/error.h"

namespace {

sdrt::Tensor random_tensor(const sdrt::Shape& shape, uint32_t seed) {
  sdrt::Tensor t(shape, sdrt::DType::kF32);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double peak_rss_gb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  // Keep freed activation buffers in the heap instead of returning them to the kernel: every UNet call
  // allocates the same large tensors again, and fresh mmap'd pages cost a page fault each.
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  CLI::App app{"sdrt CPU benchmark: UNet step and VAE decode"};
  std::string model;
  int size = 256, steps = 3;
  bool vae = false;
  app.add_option("--model", model, "diffusers folder with real SD shapes")->required();
  app.add_option("--size", size, "image size in pixels (latents are size/8)")->capture_default_str();
  app.add_option("--steps", steps, "timed UNet calls (after one warm-up)")->capture_default_str();
  app.add_flag("--vae", vae, "also time one VAE decode");
  CLI11_PARSE(app, argc, argv);
  try {
    using Clock = std::chrono::steady_clock;
    auto start = Clock::now();
    const auto unet = sdrt::models::cpu::UNet::from_folder(std::filesystem::path(model) / "unet");
    fmt::print("load unet: {:.2f} s ({} parameters)\n",
               std::chrono::duration<double>(Clock::now() - start).count(), unet.parameter_count());
    const int64_t h = size / 8;
    const auto sample = random_tensor({2, unet.config().in_channels, h, h}, 1);
    const auto context = random_tensor({2, 77, unet.config().cross_attention_dim}, 2);
    std::vector<double> times;
    for (int i = 0; i <= steps; ++i) {
      start = Clock::now();
      const auto out = unet.forward(sample, 999 - 50 * i, context);
      const double s = std::chrono::duration<double>(Clock::now() - start).count();
      fmt::print("unet step {} ({}): {:.3f} s\n", i, i == 0 ? "warm-up" : "timed", s);
      if (i > 0) times.push_back(s);
    }
    fmt::print("RESULT unet {}x{} batch 2: median {:.3f} s/step over {} steps; peak RSS {:.2f} GB\n", size,
               size, median(times), times.size(), peak_rss_gb());
    if (vae) {
      const auto autoencoder = sdrt::models::cpu::AutoencoderKL::from_folder(
          std::filesystem::path(model) / "vae", {.encoder = false});
      const auto latents = random_tensor({1, autoencoder.config().latent_channels, h, h}, 3);
      start = Clock::now();
      const auto image = autoencoder.decode(latents);
      fmt::print("RESULT vae decode {}x{}: {:.3f} s; peak RSS {:.2f} GB\n", image.dim(3), image.dim(2),
                 std::chrono::duration<double>(Clock::now() - start).count(), peak_rss_gb());
    }
  } catch (const sdrt::Error& e) {
    fmt::print(stderr, "bench_cpu: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
