// Model-stage golden tests for the CUDA engine (fp16) against diffusers / transformers fp32 references on the
// tiny fixture models: UNet call, VAE decode, text encoder, and the whole txt2img pipeline. fp16 bars:
// relative L2 error ≤ 5e-3 per stage; images within 2 levels in ≥ 99% of channel values. Skipped without
// a GPU.
#if SDRT_HAVE_CUDA

#include <cmath>

#include <gtest/gtest.h>

#include "backends/cuda/context.h"
#include "engines/diagnostics.h"
#include "engines/engine.h"
#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/npy.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "loaders/model_source.h"
#include "models/cpu/unet.h"
#include "models/cpu/vae.h"
#include "schedulers/torch_rng.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;

#define SKIP_WITHOUT_GPU() \
  if (!cuda::device_available()) GTEST_SKIP() << cuda::device_description()

// ||a - b|| / ||b||
double relative_l2(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < std::min(a.numel(), b.numel()); ++i) {
    const double d = static_cast<double>(a.data<float>()[i]) - b.data<float>()[i];
    num += d * d;
    den += static_cast<double>(b.data<float>()[i]) * b.data<float>()[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// The CUDA engine of a tiny model folder, with its diagnostics.
struct Engine {
  std::unique_ptr<engines::Engine> engine;
  engines::Diagnostics* diagnostics = nullptr;

  explicit Engine(const std::filesystem::path& dir)
      : engine(engines::create_cuda_engine(engines::describe_model(loaders::resolve_model(dir)))),
        diagnostics(engine->diagnostics()) {}
};

class CudaModelGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaModelGolden, UNetMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const auto dir = fixtures_dir() / GetParam();
  Engine e(dir);
  const auto cases = io::read_json_file(dir / "reference" / "unet_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 3u);
  for (const auto& c : cases) {
    const Tensor sample = io::read_npy(dir / "reference" / c["sample"].get<std::string>());
    const Tensor context = io::read_npy(dir / "reference" / c["context"].get<std::string>());
    const Tensor want = io::read_npy(dir / "reference" / c["out"].get<std::string>());
    const Tensor got = e.diagnostics->unet_forward(sample, c["timestep"].get<double>(), context);
    const double err = relative_l2(got, want);
    std::printf("[ cuda unet ] %s %s: relative L2 %.2e\n", GetParam().c_str(),
                shape_to_string(sample.shape()).c_str(), err);
    EXPECT_LE(err, 5e-3) << "sample " << shape_to_string(sample.shape());
  }
}

TEST_P(CudaModelGolden, VaeDecodeMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const auto dir = fixtures_dir() / GetParam();
  Engine e(dir);
  const auto cases = io::read_json_file(dir / "reference" / "vae_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 2u);  // every reference case of the fixture, none silently dropped
  for (const auto& c : cases) {
    const Tensor latents = io::read_npy(dir / "reference" / c["latents"].get<std::string>());
    const Tensor want = io::read_npy(dir / "reference" / c["image"].get<std::string>());
    const Tensor got = e.engine->decode(latents);
    const double err = relative_l2(got, want);
    std::printf("[ cuda vae  ] %s %s: relative L2 %.2e\n", GetParam().c_str(),
                shape_to_string(latents.shape()).c_str(), err);
    EXPECT_LE(err, 5e-3);
  }
}

TEST_P(CudaModelGolden, TextEncoderMatchesTransformers) {
  SKIP_WITHOUT_GPU();
  const auto dir = fixtures_dir() / GetParam();
  Engine e(dir);
  const auto model = Model::load(dir, {.text_encoder_only = true});
  const auto cases = io::read_json_file(dir / "reference" / "text_encoder_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 3u);  // every reference case of the fixture, none silently dropped
  for (const auto& c : cases) {
    const std::string prompt = c["prompt"];
    const Tensor want = io::read_npy(dir / "reference" / c["last_hidden_state"].get<std::string>());
    // The embeddings come from the CPU model (a table lookup), the layers from the GPU.
    const Tensor x = model.encode_prompt_full(prompt).hidden_states.front();
    const Tensor got = e.diagnostics->encode_embeddings(x);
    const double err = relative_l2(got, want);
    std::printf("[ cuda text ] %s \"%s\": relative L2 %.2e\n", GetParam().c_str(), prompt.c_str(), err);
    EXPECT_LE(err, 5e-3);
  }
}

TEST_P(CudaModelGolden, Txt2ImgMatchesDiffusers) {
  SKIP_WITHOUT_GPU();
  const auto dir = fixtures_dir() / GetParam();
  const auto ref = dir / "reference";
  LoadOptions load;
  load.device = Device::kCuda;
  const auto model = Model::load(dir, load);
  const auto cases = io::read_json_file(ref / "pipeline_cases.json")["cases"];
  ASSERT_EQ(cases.size(), 10u);  // every reference case of the fixture, none silently dropped
  for (const auto& c : cases) {
    SCOPED_TRACE(c.dump());
    const GenerateOptions o = testing::pipeline_case_options(c, ref);
    const Image image = model.txt2img(model.resolve(o));
    const auto want = io::read_png_rgb8(ref / c["image"].get<std::string>());
    ASSERT_EQ(image.rgb.size(), want.rgb8.size());
    int64_t within_two = 0, worst = 0;
    for (size_t i = 0; i < image.rgb.size(); ++i) {
      const int d = std::abs(static_cast<int>(image.rgb[i]) - static_cast<int>(want.rgb8[i]));
      within_two += d <= 2;
      worst = std::max<int64_t>(worst, d);
    }
    const double fraction = static_cast<double>(within_two) / static_cast<double>(image.rgb.size());
    std::printf("[ cuda e2e  ] %s %s: %.4f within 2 levels, max %lld\n", GetParam().c_str(),
                c["image"].get<std::string>().c_str(), fraction, static_cast<long long>(worst));
    EXPECT_GE(fraction, 0.99);
  }
}

INSTANTIATE_TEST_SUITE_P(TinyModels, CudaModelGolden, ::testing::Values("tiny-sd1", "tiny-sd2"));

TEST(CudaDevice, CpuBuildsReportTheDevice) {
  // Runs everywhere: without a GPU the description says why, and creating an engine fails cleanly.
  const std::string d = cuda::device_description();
  EXPECT_FALSE(d.empty());
  if (!cuda::device_available()) {
    LoadOptions load;
    load.device = Device::kCuda;
    try {
      Model::load(fixtures_dir() / "tiny-sd1", load);
      FAIL() << "expected an error without a GPU";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
    }
  }
}

// The single-file fixtures (tests/fixtures/single_file: widths 8/16, one-head attention, GroupNorm with one
// channel per group) stage by stage against the CPU executors on the same weights: text encoder, UNet (both
// batch rows) and VAE decoder.
TEST(CudaSingleFile, StagesMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  for (const char* file : {"sd1.safetensors", "sd2.safetensors"}) {
    SCOPED_TRACE(file);
    const auto description =
        engines::describe_model(loaders::resolve_model(fixtures_dir() / "single_file" / file));
    const auto cpu = engines::create_cpu_engine(description);
    const auto gpu = engines::create_cuda_engine(description);
    std::vector<int32_t> ids(77, 49407);
    ids[0] = 49406;
    ids[1] = 320;
    ids[2] = 1125;
    const Tensor want_text = cpu->encode_text(ids), got_text = gpu->encode_text(ids);
    const double text_err = relative_l2(got_text, want_text);
    schedulers::TorchGenerator rng(7);
    const Tensor sample = rng.randn({2, 4, 8, 8});
    Tensor context({2, 77, want_text.dim(2)}, DType::kF32);
    std::memcpy(context.data<float>(), want_text.data<float>(), want_text.nbytes());
    std::memcpy(context.data<float>() + want_text.numel(), rng.randn({1, 77, want_text.dim(2)}).data<float>(),
                want_text.nbytes());
    const auto unet_store = description.unet_source->open_weights();
    const auto unet = models::cpu::UNet::load(*description.unet, {unet_store, "unet"});
    const double unet_err = relative_l2(gpu->diagnostics()->unet_forward(sample, 500.0, context),
                                        unet.forward(sample, 500.0, context));
    const auto vae_store = description.vae_source->open_weights();
    const auto vae = models::cpu::AutoencoderKL::load(*description.vae, {vae_store, "vae"});
    const Tensor z = rng.randn({1, 4, 8, 8});
    const double vae_err = relative_l2(gpu->decode(z), vae.decode(z));
    std::printf("[ single file ] %s: text %.2e, unet %.2e, vae %.2e (relative L2)\n", file, text_err,
                unet_err, vae_err);
    EXPECT_LE(text_err, 5e-3);
    EXPECT_LE(unet_err, 5e-3);
    EXPECT_LE(vae_err, 5e-3);
  }
}

}  // namespace
}  // namespace sdrt

#endif  // SDRT_HAVE_CUDA
