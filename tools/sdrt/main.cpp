// sdrt — the command-line front end of the library.
//
//   sdrt tokenize --model DIR --prompt TEXT          77 token ids as a JSON array
//   sdrt encode   --model DIR --prompt TEXT --output emb.npy
//   sdrt info     [--model DIR]                      components and their key config values
//   sdrt txt2img  [--model DIR] --prompt TEXT [...] --output out.png
//   sdrt convert  --model FILE --output DIR          single-file checkpoint -> diffusers folder
// --model takes a diffusers folder or a single-file SD 1.x / 2.x checkpoint (.safetensors / .ckpt).
// Without it, txt2img and info use $SDRT_MODEL, else the built-in demo model (the source tree's models/demo).
//
// Every failure prints one line "sdrt: error: ..." on stderr and exits non-zero.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "sdrt/error.h"
#include "sdrt/files.h"
#include "sdrt/model.h"

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

// Stage timing, printed the way the study this project grew from printed it.
class StageTimer {
 public:
  explicit StageTimer(std::string name) : name_(std::move(name)), start_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    if (std::uncaught_exceptions() > 0) return;  // a failed stage reports its error instead
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    fmt::print(stderr, "Function {} took {:.4f} seconds to execute\n", name_, s);
  }

 private:
  std::string name_;
  std::chrono::steady_clock::time_point start_;
};

// Fails before any work is done when the output cannot be written where asked.
void check_output_path(const std::filesystem::path& output) {
  const auto parent = output.has_parent_path() ? output.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  if (!std::filesystem::is_directory(parent, ec))
    throw sdrt::Error(sdrt::ErrorKind::kIo,
                      fmt::format("{}: output folder {} does not exist", output.string(), parent.string()));
}

// The model of txt2img / info when --model is not given: $SDRT_MODEL, else the built-in demo model.
std::string default_model() {
  if (const char* env = std::getenv("SDRT_MODEL"); env != nullptr && *env != '\0') return env;
#ifdef SDRT_DEMO_MODEL_DIR
  return SDRT_DEMO_MODEL_DIR;
#else
  throw sdrt::Error(sdrt::ErrorKind::kInvalidArgument, "no --model given (and no built-in demo model)");
#endif
}

sdrt::Model load_model(const std::string& path, bool text_encoder_only, sdrt::LoadOptions options = {}) {
  StageTimer t("load_model");
  options.text_encoder_only = text_encoder_only;
  return sdrt::Model::load(path, options);
}

// tqdm-style progress on a terminal, one plain line per step otherwise (logs, pipes).
class ProgressBar {
 public:
  ProgressBar() : tty_(isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}
  bool operator()(int done, int total) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = total ? done * kWidth / total : kWidth;
      std::string bar;
      for (int i = 0; i < kWidth; ++i) bar += i < filled ? "\u2588" : " ";
      const double eta = rate > 0 ? (total - done) / rate : 0.0;
      fmt::print(stderr, "\r{:3d}%|{}| {}/{} [{:.1f}s<{:.1f}s, {:.2f}it/s]", total ? done * 100 / total : 100,
                 bar, done, total, elapsed, eta, rate);
      if (done == total) fmt::print(stderr, "\n");
    } else {
      fmt::print(stderr, "step {}/{} ({:.2f} it/s)\n", done, total, rate);
    }
    return true;
  }

 private:
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

struct Txt2ImgArgs {
  std::string model, output = "output.png", init_noise, device = "cpu", prediction, vae;
  std::optional<uint64_t> seed;
  sdrt::GenerateOptions options;
};

int run_txt2img(Txt2ImgArgs args) {
  check_output_path(args.output);
  auto& o = args.options;
  sdrt::validate_options(o);
  // AUTOMATIC1111 draws a random seed when none is given; it is printed and stored in the PNG.
  o.seed = args.seed ? *args.seed : std::random_device{}();
  if (!args.init_noise.empty()) o.init_noise = sdrt::read_npy(args.init_noise);
  sdrt::LoadOptions load;
  if (!args.prediction.empty()) load.prediction_type = args.prediction;
  load.vae = args.vae;
  load.device = args.device == "cuda" ? sdrt::Device::kCuda : sdrt::Device::kHost;
  const auto model = load_model(args.model, /*text_encoder_only=*/false, load);
  o = model.resolve(o);
  sdrt::Tensor context;
  {
    StageTimer t("encode_prompt");
    context = model.encode_prompts(o);
  }
  std::optional<sdrt::Sampling> sampling;
  {
    StageTimer t("prepare_latents");
    sampling.emplace(model.prepare_latents(o));
  }
  sdrt::Tensor latents;
  {
    StageTimer t("unet_infer");
    ProgressBar progress;
    latents = model.denoise(*sampling, context, o.cfg_scale, std::ref(progress));
  }
  sdrt::Image image;
  {
    StageTimer t("decode_latents");
    image = model.decode_latents(latents);
  }
  sdrt::write_png(args.output, image, {{"parameters", model.parameters_text(o)}});
  fmt::print(stderr, "wrote {}x{} image to {} (seed {})\n", image.width, image.height, args.output, o.seed);
  return 0;
}

int run_tokenize(const std::string& model_path, const std::string& prompt) {
  const auto model = load_model(model_path, /*text_encoder_only=*/true);
  const auto ids = model.tokenize(prompt);
  std::cout << nlohmann::json(ids).dump() << std::endl;
  return 0;
}

int run_encode(const std::string& model_path, const std::string& prompt, const std::string& output) {
  check_output_path(output);
  const auto model = load_model(model_path, /*text_encoder_only=*/true);
  sdrt::Tensor embedding;
  {
    StageTimer t("encode_prompt");
    embedding = model.encode_prompt(prompt);
  }
  sdrt::write_npy(output, embedding);
  fmt::print(stderr, "wrote {} {} float32 to {}\n", sdrt::shape_to_string(embedding.shape()),
             "last_hidden_state", output);
  return 0;
}

int run_info(const std::string& model_path, bool as_json) {
  const auto info = sdrt::Model::inspect(model_path);
  if (as_json) {
    nlohmann::json j;
    j["path"] = info.path;
    j["pipeline_class"] = info.pipeline_class;
    for (const auto& c : info.components) {
      nlohmann::json details = nlohmann::json::object();
      for (const auto& [k, v] : c.details) details[k] = v;
      j["components"][c.name] = {{"class", c.class_name}, {"details", details}};
    }
    std::cout << j.dump(2) << std::endl;
    return 0;
  }
  fmt::print("model: {}\npipeline: {}\n", info.path, info.pipeline_class.empty() ? "?" : info.pipeline_class);
  for (const auto& c : info.components) {
    fmt::print("  {} ({})\n", c.name, c.class_name);
    for (const auto& [k, v] : c.details) fmt::print("    {}: {}\n", k, v);
  }
  return 0;
}

int run_convert(const std::string& model_path, const std::string& output, const std::string& prediction) {
  sdrt::ConvertOptions options;
  if (!prediction.empty()) options.prediction_type = prediction;
  const auto converted = sdrt::convert_checkpoint(model_path, output, options);
  fmt::print(stderr, "wrote {} ({}, {}) as a diffusers folder to {}\n", model_path, converted.family,
             converted.prediction_type, output);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sdrt: Stable Diffusion runtime"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "sdrt 0.1.0");

  std::string model, prompt, output;
  bool as_json = false;

  auto* tokenize =
      app.add_subcommand("tokenize", "Print the text encoder's 77 token ids for a prompt as JSON");
  tokenize->add_option("--model", model, "diffusers model folder or single-file checkpoint")->required();
  tokenize->add_option("--prompt", prompt, "prompt text")->required();

  auto* encode =
      app.add_subcommand("encode", "Write the text encoder's last hidden state [1,77,hidden] as .npy");
  encode->add_option("--model", model, "diffusers model folder or single-file checkpoint")->required();
  encode->add_option("--prompt", prompt, "prompt text")->required();
  encode->add_option("--output", output, "output .npy file")->required();

  auto* info = app.add_subcommand("info", "List a model's components and their key configuration");
  const std::string model_help =
      "diffusers model folder or single-file checkpoint (default: $SDRT_MODEL, else the built-in demo model)";
  info->add_option("--model", model, model_help);
  info->add_flag("--json", as_json, "print JSON instead of text");

  Txt2ImgArgs gen;
  auto* txt2img = app.add_subcommand("txt2img", "Generate an image from a prompt and write it as PNG");
  txt2img->add_option("--model", gen.model, model_help);
  txt2img->add_option("--prompt", gen.options.prompt, "prompt text")->required();
  txt2img->add_option("--negative-prompt", gen.options.negative_prompt, "negative prompt");
  txt2img->add_option("--steps", gen.options.steps, "denoising steps")->capture_default_str();
  txt2img->add_option("--cfg-scale", gen.options.cfg_scale, "classifier-free guidance scale (<= 1: off)")
      ->capture_default_str();
  txt2img->add_option(
      "--scheduler", gen.options.scheduler,
      "pndm | ddim | euler | euler_a | dpmpp_2m (default: the model's scheduler_config.json)");
  txt2img->add_flag("--karras", gen.options.karras, "Karras sigmas (euler, euler_a, dpmpp_2m)");
  txt2img->add_option("--width", gen.options.width, "image width, a multiple of 8 (default: the model's)");
  txt2img->add_option("--height", gen.options.height, "image height, a multiple of 8 (default: the model's)");
  txt2img->add_option("--seed", gen.seed, "random seed (default: random)");
  txt2img->add_option("--rng", gen.options.rng, "noise generator: cpu (torch.Generator(\"cpu\"))")
      ->capture_default_str();
  txt2img->add_option("--init-noise", gen.init_noise,
                      "initial latents [1,4,H/8,W/8] float32 .npy instead of the seed");
  txt2img->add_option("--output", gen.output, "output PNG")->capture_default_str();
  txt2img->add_option("--device", gen.device, "cpu | cuda (UNet and VAE in fp16 on the GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  txt2img->add_option("--prediction", gen.prediction, "epsilon | v_prediction (default: the model's)")
      ->check(CLI::IsMember({"epsilon", "v_prediction"}));
  txt2img->add_option("--vae", gen.vae,
                      "VAE file (original or diffusers layout) to use instead of the model's");

  std::string prediction;
  auto* convert =
      app.add_subcommand("convert", "Write a single-file SD 1.x / 2.x checkpoint as a diffusers folder");
  convert->add_option("--model", model, "single-file checkpoint (.safetensors / .ckpt)")->required();
  convert->add_option("--output", output, "output folder (new or empty)")->required();
  convert
      ->add_option("--prediction", prediction,
                   "epsilon | v_prediction (default: sidecar .yaml, else epsilon)")
      ->check(CLI::IsMember({"epsilon", "v_prediction"}));

  const auto is_command = [&](const std::string& name) {
    for (const auto* sub : app.get_subcommands({})) {
      if (sub->get_name() == name) return true;
    }
    return false;
  };
  if (argc > 1 && argv[1][0] != '-' && !is_command(argv[1])) {
    fmt::print(stderr, "sdrt: error: unknown command \"{}\" (see sdrt --help)\n", argv[1]);
    return kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    return app.exit(CLI::CallForHelp());
  } catch (const CLI::CallForAllHelp&) {
    return app.exit(CLI::CallForAllHelp());
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11's own report spans lines ("Run with --help ..."): keep ours to one.
    std::string message = e.what();
    for (char& ch : message)
      if (ch == '\n') ch = ' ';
    fmt::print(stderr, "sdrt: error: {} (see sdrt --help)\n", message);
    return kExitUsage;
  }

  try {
    if (*txt2img && gen.model.empty()) gen.model = default_model();
    if (*info && model.empty()) model = default_model();
    if (*txt2img) return run_txt2img(gen);
    if (*tokenize) return run_tokenize(model, prompt);
    if (*encode) return run_encode(model, prompt, output);
    if (*info) return run_info(model, as_json);
    if (*convert) return run_convert(model, output, prediction);
  } catch (const sdrt::Error& e) {
    fmt::print(stderr, "sdrt: error: {}\n", e.what());
    return kExitError;
  } catch (const std::exception& e) {
    fmt::print(stderr, "sdrt: error: {}\n", e.what());
    return kExitError;
  }
  return kExitUsage;
}
