// sdrt's side of the GPU benchmark (bench/run_cuda_bench.sh runs it next to PyTorch on the same weights):
// load time, UNet step (CUDA graph replay, CUDA events, median), VAE decode, prompt encoding, 50-step
// prompt-to-image, device memory; and, with --unet-inputs, one UNet call on the parity inputs written by
// bench/unet_parity.py. Prints and writes one JSON object (schema in bench/report.py).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <vector>

#include <cuda_runtime.h>
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "backends/cuda/context.h"
#include "backends/cuda/norm.cuh"
#include "engines/diagnostics.h"
#include "engines/engine.h"
#include "engines/model_description.h"
#include "io/diffusers_folder.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "loaders/model_source.h"
#include "sdrt/error.h"
#include "sdrt/model.h"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// GroupNorm on the SD 1.5 UNet's shapes, single-pass vs two-pass kernel, as the UNet's graph runs them: 20
// launches captured in a CUDA graph, replayed 20 times, microseconds per launch (median replay / 20), inputs
// L2-warm. A device-to-device copy of the same tensor is the bandwidth yardstick.
nlohmann::json group_norm_bench() {
  sdrt::cuda::Context ctx;
  struct Shape {
    int64_t spatial, channels;
  };
  const Shape shapes[] = {{4096, 320},  {4096, 640}, {4096, 960}, {1024, 640}, {1024, 960}, {1024, 1280},
                          {1024, 1920}, {256, 1280}, {256, 1920}, {256, 2560}, {64, 1280},  {64, 2560}};
  constexpr int kLaunches = 20;
  nlohmann::json out = nlohmann::json::array();
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  auto per_launch_us = [&](const std::function<void()>& launch) {
    launch();  // plan outside capture
    cudaStreamSynchronize(ctx.stream());
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal);
    for (int i = 0; i < kLaunches; ++i) launch();
    cudaStreamEndCapture(ctx.stream(), &graph);
    cudaGraphInstantiate(&exec, graph, 0);
    std::vector<float> times;
    for (int i = 0; i < 25; ++i) {
      cudaEventRecord(start, ctx.stream());
      cudaGraphLaunch(exec, ctx.stream());
      cudaEventRecord(stop, ctx.stream());
      cudaEventSynchronize(stop);
      float ms = 0;
      cudaEventElapsedTime(&ms, start, stop);
      if (i >= 5) times.push_back(ms * 1000.0f / kLaunches);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    std::sort(times.begin(), times.end());
    return times[times.size() / 2];
  };
  for (const auto& sh : shapes) {
    const int64_t B = 2, n = B * sh.spatial * sh.channels;
    sdrt::cuda::DeviceBuffer x(static_cast<size_t>(n) * 2), y(static_cast<size_t>(n) * 2), g(sh.channels * 4),
        b(sh.channels * 4);
    cudaMemset(x.data(), 0x3c, x.size());  // timing only
    void* scratch = ctx.zeroed_scratch(sdrt::cuda::group_norm_scratch_bytes(B, sh.spatial, sh.channels, 32));
    nlohmann::json row = {{"spatial", sh.spatial}, {"channels", sh.channels}};
    row["copy_us"] = per_launch_us(
        [&] { cudaMemcpyAsync(y.data(), x.data(), x.size(), cudaMemcpyDeviceToDevice, ctx.stream()); });
    for (const bool single : {true, false}) {
      sdrt::cuda::GroupNormArgs a{};
      a.x = x.as<__half>();
      a.y = y.as<__half>();
      a.gamma = g.as<float>();
      a.beta = b.as<float>();
      a.batch = B;
      a.spatial = sh.spatial;
      a.channels = sh.channels;
      a.groups = 32;
      a.eps = 1e-5f;
      a.silu = true;
      a.scratch = scratch;
      a.single_pass = single;
      if (single && !sdrt::cuda::group_norm_single_pass(a)) continue;
      row[single ? "single_pass_us" : "two_pass_us"] =
          per_launch_us([&] { sdrt::cuda::launch_group_norm(a, ctx.stream()); });
    }
    std::cerr << row.dump() << "\n";
    out.push_back(row);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sdrt CUDA benchmark"};
  std::string model_dir, unet_inputs, unet_output, json_path,
      prompt = "a photograph of an astronaut riding a horse";
  int iterations = 30, steps = 50, size = 512;
  app.add_option("--model", model_dir, "diffusers folder");
  app.add_option("--unet-inputs", unet_inputs, "folder with sample.npy, context.npy, inputs.json");
  app.add_option("--unet-output", unet_output, "where to write the UNet output (.npy)");
  app.add_option("--json", json_path, "where to write the results");
  app.add_option("--iterations", iterations, "timed UNet steps (median)");
  app.add_option("--steps", steps, "denoising steps of the end-to-end run");
  app.add_option("--size", size, "image size of the end-to-end run");
  app.add_option("--prompt", prompt);
  bool op_bench = false;
  app.add_flag("--op-bench", op_bench, "only time the GroupNorm kernels on the UNet's shapes");
  CLI11_PARSE(app, argc, argv);
  if (op_bench) {
    const auto result = group_norm_bench();
    if (!json_path.empty()) std::ofstream(json_path) << result.dump(2) << "\n";
    return 0;
  }

  if (model_dir.empty()) {
    std::cerr << "bench_cuda: --model is required\n";
    return 2;
  }
  try {
    nlohmann::json out;
    auto start = Clock::now();
    cudaFree(nullptr);  // CUDA context creation is reported apart from model loading
    out["cuda_init_s"] = seconds_since(start);

    start = Clock::now();
    sdrt::LoadOptions load;
    load.device = sdrt::Device::kCuda;
    const sdrt::Model model = sdrt::Model::load(model_dir, load);
    out["load_s"] = seconds_since(start);
    std::cerr << fmt::format("load_model {:.3f} s\n", out["load_s"].get<double>());

    // Engine-level timings on a second engine over the same files (the Model keeps its engine private).
    const auto description =
        sdrt::engines::describe_model(sdrt::loaders::resolve_model(model_dir, {.prefer_fp16 = true}));
    auto engine = sdrt::engines::create_cuda_engine(description);
    sdrt::engines::Diagnostics& diagnostics = *engine->diagnostics();
    out["device"] = engine->device_name();
    out["load_breakdown_s"] = diagnostics.load_breakdown();  // of the second engine (page cache warm)

    if (!unet_inputs.empty()) {
      const auto sample = sdrt::io::read_npy(std::filesystem::path(unet_inputs) / "sample.npy");
      const auto context = sdrt::io::read_npy(std::filesystem::path(unet_inputs) / "context.npy");
      std::ifstream f(std::filesystem::path(unet_inputs) / "inputs.json");
      const auto meta = nlohmann::json::parse(f);
      const auto result = diagnostics.unet_forward(sample, meta.at("timestep").get<double>(), context);
      if (!unet_output.empty()) sdrt::io::write_npy(unet_output, result);
      std::cerr << "unet parity output written\n";
    }

    const int64_t latent = size / 8;
    sdrt::GenerateOptions o;
    o.prompt = prompt;
    o.steps = steps;
    o.width = o.height = size;
    o.seed = 42;
    {
      const sdrt::Conditioning cond = model.encode_conditioning(model.resolve(o));
      const sdrt::Tensor& ctx = cond.context;
      sdrt::Tensor add_embeds;  // SDXL's text_time input
      if (!cond.text_embeds.empty())
        add_embeds =
            sdrt::models::text_time_add_embeds(description.unet->config, cond.text_embeds, cond.time_ids);
      engine->set_context(ctx, add_embeds);
      out["unet_step_ms"] = diagnostics.time_unet_step_ms(ctx.dim(0), latent, latent, iterations);
      out["unet_batch"] = ctx.dim(0);
      out["size"] = size;
      out["breakdown_ms"] = diagnostics.profile_unet_step(ctx.dim(0), latent, latent);
    }
    out["vae_decode_ms"] = diagnostics.time_vae_decode_ms(latent, latent, 10);
    {
      std::vector<double> times;
      for (int i = 0; i < 5; ++i) {
        start = Clock::now();
        (void)model.encode_prompts(model.resolve(o));
        times.push_back(seconds_since(start) * 1e3);
      }
      std::sort(times.begin(), times.end());
      out["text_encoder_ms"] = times[times.size() / 2];  // both prompts (uncond + cond)
      out["text_encoder_device"] = "cuda";
    }
    engine.reset();

    sdrt::StageTimes t;
    start = Clock::now();
    (void)model.txt2img(o, nullptr, &t);
    out["e2e_first_s"] = seconds_since(start);  // includes planning + graph capture for the shape
    start = Clock::now();
    (void)model.txt2img(o, nullptr, &t);
    out["e2e_50_s"] = seconds_since(start);
    out["e2e_steps"] = steps;
    out["stages_s"] = {{"encode_prompt", t.encode_prompt},
                       {"prepare_latents", t.prepare_latents},
                       {"unet_infer", t.unet_infer},
                       {"decode_latents", t.decode_latents}};
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    out["device_memory_in_use_gib"] = static_cast<double>(total - free_bytes) / (1 << 30);
    std::cout << out.dump(2) << "\n";
    if (!json_path.empty()) std::ofstream(json_path) << out.dump(2) << "\n";
    return 0;
  } catch (const sdrt::Error& e) {
    std::cerr << "bench_cuda: error: " << e.what() << "\n";
    return 1;
  }
}
