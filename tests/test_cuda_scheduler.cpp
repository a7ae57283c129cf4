// The scheduler step on the GPU: the device plan executor against the host's Scheduler::step for every
// scheduler over whole loops, and the CUDA engine's device-resident denoising loop against the CPU loop on
// the tiny fixture model (plus its cancellation and non-finite checks). Skipped without a GPU.
#if SDRT_HAVE_CUDA

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "backends/cuda/scheduler_step.cuh"
#include "cuda_test_util.h"
#include "io/json_file.h"
#include "schedulers/scheduler.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

namespace tc = sdrt::testing::cuda;
using schedulers::PredictionType;
using schedulers::Scheduler;
using schedulers::SchedulerConfig;
using schedulers::SchedulerKind;
using schedulers::TorchGenerator;
using sdrt::cuda::DeviceBuffer;

// SD 1.5's scheduler config, and one that turns on the other code paths (PNDM's Runge-Kutta warm-up, DDIM's
// clipping, third-order DPM-Solver++ with the Heun solver).
constexpr const char* kSd15Config = R"({
  "_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
  "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1,
  "clip_sample": false})";
constexpr const char* kOtherPathsConfig = R"({
  "_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
  "skip_prk_steps": false, "clip_sample": true, "clip_sample_range": 1.5, "solver_order": 3,
  "solver_type": "heun", "timestep_spacing": "trailing"})";

struct Case {
  SchedulerKind kind;
  bool karras;
  PredictionType prediction;
  const char* config;
};

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (SchedulerKind kind : {SchedulerKind::kPndm, SchedulerKind::kDdim, SchedulerKind::kEuler,
                             SchedulerKind::kEulerAncestral, SchedulerKind::kDpmSolverMultistep})
    for (bool karras : {false, true}) {
      if (karras && (kind == SchedulerKind::kPndm || kind == SchedulerKind::kDdim)) continue;
      for (PredictionType prediction : {PredictionType::kEpsilon, PredictionType::kVPrediction})
        for (const char* config : {kSd15Config, kOtherPathsConfig})
          cases.push_back({kind, karras, prediction, config});
    }
  return cases;
}

std::string case_name(const Case& c) {
  return fmt::format("{}{} {} {}", schedulers::sampler_display_name(c.kind, false), c.karras ? " karras" : "",
                     c.prediction == PredictionType::kEpsilon ? "epsilon" : "v_prediction",
                     c.config == kSd15Config ? "sd15" : "other paths");
}

std::unique_ptr<Scheduler> make(const Case& c, int steps) {
  SchedulerConfig config = SchedulerConfig::from_json_text(c.config, "test config");
  config.prediction_type = c.prediction;
  auto s = schedulers::make_scheduler(c.kind, config, c.karras);
  s->set_timesteps(steps);
  return s;
}

// The plan buffers on the device, as the CUDA engine holds them.
class DeviceLoop {
 public:
  DeviceLoop(const Scheduler& s, const Tensor& latents) : n_(latents.numel()) {
    const int count = step_buffer::kFirstState + s.state_buffer_count();
    for (int b = 0; b < count; ++b) buffers_.emplace_back(static_cast<size_t>(n_) * sizeof(float));
    sdrt::cuda::upload(tc::context(), buffers_[step_buffer::kSample].data(), latents.raw_data(),
                       latents.nbytes());
  }

  // One step on the device with the host's model output (and noise from `rng` when the plan asks).
  void step(Scheduler& s, size_t i, const Tensor& model_output, TorchGenerator& rng, const Shape& shape) {
    const StepPlan plan = s.plan_step(i);
    sdrt::cuda::upload(tc::context(), buffers_[step_buffer::kModelOutput].data(), model_output.raw_data(),
                       model_output.nbytes());
    if (plan.needs_noise) {
      const Tensor noise = rng.randn(shape);
      sdrt::cuda::upload(tc::context(), buffers_[step_buffer::kNoise].data(), noise.raw_data(),
                         noise.nbytes());
    }
    std::vector<float*> pointers;
    for (const DeviceBuffer& b : buffers_) pointers.push_back(b.as<float>());
    sdrt::cuda::launch_step_plan(plan, pointers.data(), static_cast<int>(pointers.size()), n_, tc::stream());
    std::swap(buffers_[step_buffer::kSample], buffers_[step_buffer::kPrevSample]);
  }

  std::vector<float> latents() const {
    return tc::from_device<float>(buffers_[step_buffer::kSample], static_cast<size_t>(n_));
  }

 private:
  int64_t n_;
  std::vector<DeviceBuffer> buffers_;
};

// Random model outputs of a plausible scale, different each step.
Tensor random_model_output(const Shape& shape, uint32_t seed) {
  const auto values = tc::random_normal(static_cast<size_t>(shape_numel(shape)), seed);
  return Tensor::from_f32(shape, values);
}

// Each operation of a plan is IEEE-rounded on its own on both sides, so the device reproduces the host's
// step bit for bit; the tolerance bound is the looser statement that must hold regardless.
TEST(CudaScheduler, DevicePlansMatchHostStepForEveryScheduler) {
  SDRT_REQUIRE_CUDA();
  const Shape shape{1, 4, 64, 64};  // SD 1.5 at 512×512
  int cases = 0;
  for (const Case& c : all_cases()) {
    SCOPED_TRACE(case_name(c));
    auto host = make(c, 10);
    auto device = make(c, 10);
    TorchGenerator host_rng(11), device_rng(11);
    Tensor latents = host_rng.randn(shape);
    device_rng.randn(shape);
    for (int64_t k = 0; k < latents.numel(); ++k) latents.data<float>()[k] *= host->init_noise_sigma();
    DeviceLoop loop(*device, latents);
    int identical_steps = 0;
    for (size_t i = 0; i < host->timesteps().size(); ++i) {
      SCOPED_TRACE(fmt::format("step {}", i));
      const Tensor model_output = random_model_output(shape, static_cast<uint32_t>(100 + i));
      latents = host->step(model_output, i, latents, host_rng);
      loop.step(*device, i, model_output, device_rng, shape);
      const std::vector<float> got = loop.latents();
      double max_diff = 0.0, max_ref = 0.0;
      bool finite = true;
      for (int64_t k = 0; k < latents.numel(); ++k) {
        const double ref = latents.data<float>()[k];
        finite = finite && std::isfinite(ref) && std::isfinite(got[static_cast<size_t>(k)]);
        max_diff = std::max(max_diff, std::abs(got[static_cast<size_t>(k)] - ref));
        max_ref = std::max(max_ref, std::abs(ref));
      }
      ASSERT_TRUE(finite);
      EXPECT_LE(max_diff, 1e-5 * std::max(1.0, max_ref));
      identical_steps += std::memcmp(got.data(), latents.raw_data(), latents.nbytes()) == 0;
    }
    EXPECT_EQ(identical_steps, static_cast<int>(host->timesteps().size())) << "steps not bit-identical";
    ++cases;
  }
  EXPECT_EQ(cases, 32);
}

TEST(CudaScheduler, RejectsPlansNamingMissingBuffers) {
  SDRT_REQUIRE_CUDA();
  StepPlan plan;
  StepInstruction load;
  load.op = StepOpcode::kLoad;
  load.buffer = step_buffer::state(0);
  plan.program.push_back(load);
  DeviceBuffer sample(4 * sizeof(float));
  std::vector<float*> pointers(step_buffer::kFirstState, sample.as<float>());  // no state buffers
  try {
    sdrt::cuda::launch_step_plan(plan, pointers.data(), static_cast<int>(pointers.size()), 4, tc::stream());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal) << e.what();
  }
}

// ---- the engine's device-resident loop on the tiny model
// ---------------------------------------------------

double relative_l2(const Tensor& a, const Tensor& b) {
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    const double d = static_cast<double>(a.data<float>()[i]) - b.data<float>()[i];
    num += d * d;
    den += static_cast<double>(b.data<float>()[i]) * b.data<float>()[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

GenerateOptions tiny_options(const std::string& scheduler, bool karras, double cfg_scale = 7.5) {
  GenerateOptions o;
  o.prompt = "a red circle";
  o.negative_prompt = "blurry";
  o.width = o.height = 64;
  o.steps = 8;
  o.cfg_scale = cfg_scale;
  o.scheduler = scheduler;
  o.karras = karras;
  o.seed = 1234;
  return o;
}

Model load_tiny_sd1(Device device) {
  LoadOptions load;
  load.device = device;
  return Model::load(testing::fixtures_dir() / "tiny-sd1", load);
}

// The same denoising loop with the UNet in fp16: the latents stay close to the CPU's for every scheduler
// (Euler a's noise comes from the host generator on both sides), with and without guidance.
TEST(CudaScheduler, EngineLoopMatchesCpuLoop) {
  SDRT_REQUIRE_CUDA();
  const Model gpu = load_tiny_sd1(Device::kCuda);
  const Model cpu = load_tiny_sd1(Device::kHost);
  struct LoopCase {
    const char* scheduler;
    bool karras;
    double cfg_scale;
  };
  for (const LoopCase& c :
       {LoopCase{"pndm", false, 7.5}, LoopCase{"ddim", false, 7.5}, LoopCase{"ddim", false, 1.0},
        LoopCase{"euler", false, 7.5}, LoopCase{"euler_a", false, 7.5}, LoopCase{"euler_a", true, 7.5},
        LoopCase{"dpmpp_2m", false, 7.5}, LoopCase{"dpmpp_2m", true, 7.5}}) {
    const std::string name = fmt::format("{}{} cfg {}", c.scheduler, c.karras ? " karras" : "", c.cfg_scale);
    SCOPED_TRACE(name);
    const GenerateOptions o = cpu.resolve(tiny_options(c.scheduler, c.karras, c.cfg_scale));
    const Tensor context = cpu.encode_prompts(o);
    Sampling on_cpu = cpu.prepare_latents(o);
    Sampling on_gpu = gpu.prepare_latents(o);
    // The loop length is the scheduler's timestep count (PNDM runs one more than o.steps).
    int cpu_total = 0, steps_seen = 0;
    const Tensor want = cpu.denoise(on_cpu, context, o.cfg_scale, [&](int, int total) {
      cpu_total = total;
      return true;
    });
    const Tensor got = gpu.denoise(on_gpu, context, o.cfg_scale, [&](int done, int total) {
      EXPECT_EQ(done, ++steps_seen);
      EXPECT_EQ(total, cpu_total);
      return true;
    });
    EXPECT_GE(cpu_total, o.steps);
    EXPECT_EQ(steps_seen, cpu_total);
    ASSERT_EQ(got.shape(), want.shape());
    const double err = relative_l2(got, want);
    std::printf("[ cuda loop ] %s: relative L2 %.2e\n", name.c_str(), err);
    EXPECT_LE(err, 1e-2);
    EXPECT_EQ(relative_l2(on_gpu.latents(), got), 0.0);
  }
}

// DDIM with clip_sample (diffusers' DDIM default when a PNDM config does not set it) and guidance: the GPU
// step plan clips x0 as the CPU step does. The range is 8 because this tiny random model's clipped loop is
// chaotic at smaller ranges: on the CPU alone, a 1e-3 relative change of the initial noise leaves only 24%
// (range 1) / 41% (range 2) of the image within 2 levels, while at range 8 it changes nothing by more than
// 1 level — yet clipping at 8 still moves 88% of the image's values by more than 2 levels (the tiny model's
// unclipped latents have an RMS near 8). So the GPU must match the CPU's clipped image within 2 levels and
// be far from the unclipped one.
TEST(CudaScheduler, DdimClipSampleMatchesCpu) {
  SDRT_REQUIRE_CUDA();
  testing::TempDir tmp;
  const auto dir = testing::copy_fixture("tiny-sd1", tmp);
  const auto config_path = dir / "scheduler" / "scheduler_config.json";
  auto config = io::read_json_file(config_path);
  config["clip_sample"] = true;
  config["clip_sample_range"] = 8.0;
  std::ofstream(config_path) << config.dump(2);
  struct Run {
    Tensor latents;
    std::vector<uint8_t> rgb;
  };
  const auto run = [&](const std::filesystem::path& model_dir, Device device) {
    LoadOptions load;
    load.device = device;
    const Model model = Model::load(model_dir, load);
    const GenerateOptions o = model.resolve(tiny_options("ddim", false, 7.5));
    Sampling sampling = model.prepare_latents(o);
    Run r;
    r.latents = model.denoise(sampling, model.encode_prompts(o), o.cfg_scale);
    r.rgb = model.decode_latents(r.latents).rgb;
    return r;
  };
  const Run gpu = run(dir, Device::kCuda);
  const Run cpu = run(dir, Device::kHost);
  const Run unclipped = run(testing::fixtures_dir() / "tiny-sd1", Device::kHost);
  const double err = relative_l2(gpu.latents, cpu.latents);
  const double err_unclipped = relative_l2(gpu.latents, unclipped.latents);
  ASSERT_EQ(gpu.rgb.size(), cpu.rgb.size());
  int64_t within_two = 0, worst = 0;
  for (size_t i = 0; i < gpu.rgb.size(); ++i) {
    const int d = std::abs(static_cast<int>(gpu.rgb[i]) - static_cast<int>(cpu.rgb[i]));
    within_two += d <= 2;
    worst = std::max<int64_t>(worst, d);
  }
  const double fraction = static_cast<double>(within_two) / static_cast<double>(gpu.rgb.size());
  std::printf(
      "[ cuda ddim clip ] latents relative L2 %.2e to the CPU's (%.2e to unclipped); image %.4f within 2 "
      "levels, max %lld\n",
      err, err_unclipped, fraction, static_cast<long long>(worst));
  // Clipping honoured: far closer to the CPU's clipped latents than to the unclipped ones.
  EXPECT_LT(err, 0.1 * err_unclipped);
  EXPECT_GE(fraction, 0.99);
  // ... and clipping changed the picture.
  int64_t moved = 0;
  for (size_t i = 0; i < cpu.rgb.size(); ++i)
    moved += std::abs(static_cast<int>(cpu.rgb[i]) - static_cast<int>(unclipped.rgb[i])) > 2;
  EXPECT_GT(static_cast<double>(moved) / static_cast<double>(cpu.rgb.size()), 0.5);
}

TEST(CudaScheduler, EngineLoopCancelsWithTheLatentsSoFar) {
  SDRT_REQUIRE_CUDA();
  const Model gpu = load_tiny_sd1(Device::kCuda);
  const GenerateOptions o = gpu.resolve(tiny_options("euler_a", false));
  const Tensor context = gpu.encode_prompts(o);
  Sampling sampling = gpu.prepare_latents(o);
  const Tensor initial = sampling.latents().to(DType::kF32);
  try {
    gpu.denoise(sampling, context, o.cfg_scale, [](int done, int) { return done < 3; });
    FAIL() << "expected a cancellation";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kCancelled) << e.what();
    EXPECT_NE(std::string(e.what()).find("cancelled after step 3 of 8"), std::string::npos) << e.what();
  }
  // The latents of step 3 came back from the device.
  EXPECT_GT(relative_l2(sampling.latents(), initial), 1e-3);
}

TEST(CudaScheduler, EngineLoopReportsNonFiniteLatents) {
  SDRT_REQUIRE_CUDA();
  const Model gpu = load_tiny_sd1(Device::kCuda);
  const GenerateOptions o = gpu.resolve(tiny_options("euler", false));
  const Tensor context = gpu.encode_prompts(o);
  Sampling sampling = gpu.prepare_latents(o);
  try {
    gpu.denoise(sampling, context, std::numeric_limits<double>::infinity());  // infinite guided prediction
    FAIL() << "expected non-finite latents to be reported";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kModel) << e.what();
    EXPECT_NE(std::string(e.what()).find("latents after step 1 contain NaN or Inf"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace sdrt

#endif  // SDRT_HAVE_CUDA
