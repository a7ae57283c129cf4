// sdrt — the command-line front end of the library.
//
//   sdrt tokenize --model DIR --prompt TEXT          77 token ids as a JSON array
//   sdrt encode   --model DIR --prompt TEXT --output emb.npy
//   sdrt info     [--model DIR]                      components and their key config values
//   sdrt txt2img  [--model DIR] --prompt TEXT [...] --output out.png
//   sdrt convert  --model FILE --output DIR          single-file checkpoint -> diffusers folder
// --model takes a diffusers folder or a single-file SD 1.x / 2.x / SDXL checkpoint (.safetensors / .ckpt).
// Without it, txt2img and info use $SDRT_MODEL, else the built-in demo model (the source tree's models/demo).
//
// Every failure prints one line "sdrt: error: ..." on stderr and exits non-zero; that line is all sdrt ever
// writes to stderr. Stage timings, progress and "wrote ..." go to stdout (tokenize and info print only their
// result there). SIGINT / SIGTERM / SIGHUP stop the run within one denoising step (or at the next write,
// whose temporary file is removed) and exit with 128 + the signal number.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <iostream>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "sdrt/error.h"
#include "sdrt/files.h"
#include "sdrt/model.h"

namespace {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

// SIGINT / SIGTERM / SIGHUP ask the library to stop (async-signal-safe); the run notices it between stages,
// after each denoising step and in every write, and cleans up on the way out. SIGXFSZ is ignored so that a
// file size limit makes write() fail with EFBIG (an error line, the temporary file removed) instead of
// killing the process mid-write.
extern "C" void on_stop_signal(int signo) {
  sdrt::request_interrupt(signo);
}

void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int signo : {SIGINT, SIGTERM, SIGHUP}) sigaction(signo, &sa, nullptr);
  signal(SIGXFSZ, SIG_IGN);
}

// Throws kCancelled when a stop signal has arrived (checked between stages).
void check_interrupt() {
  if (const int signo = sdrt::interrupt_signal())
    throw sdrt::Error(sdrt::ErrorKind::kCancelled, fmt::format("interrupted by signal {}", signo));
}

// Stage timing, printed the way the study this project grew from printed it.
class StageTimer {
 public:
  explicit StageTimer(std::string name) : name_(std::move(name)), start_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    if (std::uncaught_exceptions() > 0) return;  // a failed stage reports its error instead
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    fmt::print("Function {} took {:.4f} seconds to execute\n", name_, s);
    std::fflush(stdout);
  }

 private:
  std::string name_;
  std::chrono::steady_clock::time_point start_;
};

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
  options.text_encoder_only = text_encoder_only;
  return sdrt::Model::load(path, options);
}

sdrt::Model timed_load_model(const std::string& path, bool text_encoder_only,
                             sdrt::LoadOptions options = {}) {
  sdrt::Model model = [&] {
    StageTimer t("load_model");
    return load_model(path, text_encoder_only, std::move(options));
  }();
  check_interrupt();
  return model;
}

// tqdm-style progress on a terminal, one plain line per step otherwise (logs, pipes), on stdout. Returns
// false (cancelling the denoising loop after this step) once a stop signal has arrived.
class ProgressBar {
 public:
  ProgressBar() : tty_(isatty(STDOUT_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}
  bool operator()(int done, int total) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = total ? done * kWidth / total : kWidth;
      std::string bar;
      for (int i = 0; i < kWidth; ++i) bar += i < filled ? "\u2588" : " ";
      const double eta = rate > 0 ? (total - done) / rate : 0.0;
      fmt::print("\r{:3d}%|{}| {}/{} [{:.1f}s<{:.1f}s, {:.2f}it/s]", total ? done * 100 / total : 100, bar,
                 done, total, elapsed, eta, rate);
      if (done == total) fmt::print("\n");
    } else {
      fmt::print("step {}/{} ({:.2f} it/s)\n", done, total, rate);
    }
    std::fflush(stdout);
    return sdrt::interrupt_signal() == 0;
  }

 private:
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

struct Txt2ImgArgs {
  std::string model, output = "output.png", init_noise, device = "cpu", prediction, vae;
  std::optional<std::string> seed;
  std::optional<int> width, height;  // unset: the model's default (an explicit 0 is an error)
  std::string original_size, crop_top_left, target_size;  // SDXL: "W,H", "X,Y", "W,H"
  std::string refiner;                                    // SDXL refiner model (folder or file)
  double refiner_switch = 0.8;                            // the fraction of the steps the base runs
  sdrt::GenerateOptions options;
};

[[noreturn]] void bad_option(const std::string& message) {
  throw sdrt::Error(sdrt::ErrorKind::kInvalidArgument, message);
}

// --seed: -1 means "random" (AUTOMATIC1111's meaning), else a decimal integer from 0 to 2^64 - 1 (what
// torch.Generator.manual_seed accepts); anything else ("-5", "1e30", "0x10", " 7") is refused, never
// wrapped. Returns nullopt for a random seed.
std::optional<uint64_t> parse_seed(const std::string& text) {
  if (text == "-1") return std::nullopt;
  const auto refuse = [&] {
    bad_option(fmt::format("--seed \"{}\": expected -1 (random) or an integer from 0 to 18446744073709551615",
                           text));
  };
  if (text.empty() || text.size() > 20) refuse();
  uint64_t value = 0;
  for (const char ch : text) {
    if (ch < '0' || ch > '9') refuse();
    const uint64_t digit = static_cast<uint64_t>(ch - '0');
    if (value > (UINT64_MAX - digit) / 10) refuse();
    value = value * 10 + digit;
  }
  return value;
}

// One warning line per prompt longer than the text encoder's window (until long prompts are supported).
void warn_dropped_tokens(const sdrt::Model& model, const std::string& prompt, const char* what,
                         std::FILE* stream) {
  if (const int dropped = model.dropped_tokens(prompt); dropped > 0) {
    fmt::print(stream,
               "sdrt: warning: the {} is longer than the text encoder's window of {} tokens; its last {} "
               "token{} were dropped\n",
               what, model.tokenize("").size(), dropped, dropped == 1 ? "" : "s");
    std::fflush(stream);
  }
}

void print_model_warnings(const sdrt::Model& model) {
  for (const auto& w : model.warnings()) fmt::print("sdrt: warning: {}\n", w);
  std::fflush(stdout);
}

// Text from model files shown on a terminal: control characters (C0, DEL, C1), escape sequences and bytes
// that are not UTF-8 are written as \xNN (and a backslash as \\), so that nothing a model file holds can
// move the cursor, recolour the terminal or fake a line of output.
std::string terminal_safe(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    bool ok = len != 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xc0) == 0x80;
    // Overlong and out-of-range forms and C1 controls (U+0080..U+009F, encoded C2 80..C2 9F).
    if (ok && len == 2) ok = c >= 0xc2 && !(c == 0xc2 && static_cast<unsigned char>(s[i + 1]) < 0xa0);
    if (ok && len == 3) ok = !(c == 0xe0 && static_cast<unsigned char>(s[i + 1]) < 0xa0);
    if (ok && len == 4) ok = c <= 0xf4 && !(c == 0xf0 && static_cast<unsigned char>(s[i + 1]) < 0x90);
    if (len == 1 && (c < 0x20 || c == 0x7f)) ok = false;
    if (!ok) {
      out += fmt::format("\\x{:02x}", c);
      i += 1;
      continue;
    }
    if (c == '\\') out += '\\';
    out.append(s, i, len);
    i += len;
  }
  return out;
}

// "A,B" of two integers (SDXL's --original-size W,H, --crop-top-left X,Y, --target-size W,H): positive
// (non-negative for a crop), at most 16384.
std::pair<int, int> parse_pair(const std::string& flag, const std::string& text, bool allow_zero) {
  const auto refuse = [&] {
    bad_option(fmt::format("{} \"{}\": expected two {} integers separated by a comma, e.g. 1024,1024", flag,
                           text, allow_zero ? "non-negative" : "positive"));
  };
  const size_t comma = text.find(',');
  if (comma == std::string::npos) refuse();
  int v[2] = {0, 0};
  const std::string parts[2] = {text.substr(0, comma), text.substr(comma + 1)};
  for (int k = 0; k < 2; ++k) {
    const std::string& p = parts[k];
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos) refuse();
    v[k] = std::stoi(p);
    if (v[k] > 16384 || (!allow_zero && v[k] == 0)) refuse();
  }
  return {v[0], v[1]};
}

// txt2img with an SDXL refiner: the base's steps up to --refiner-switch, then the refiner's (one progress
// bar over both), decoded by the refiner's VAE.
int run_refined(Txt2ImgArgs& args, const sdrt::Model& model, sdrt::LoadOptions load) {
  load.vae.clear();  // --vae replaces the base's VAE; the refiner decodes with its own
  const auto refiner = timed_load_model(args.refiner, /*text_encoder_only=*/false, load);
  print_model_warnings(refiner);
  auto& o = args.options;
  o = model.resolve(o);
  warn_dropped_tokens(model, o.prompt, "prompt", stdout);
  sdrt::StageTimes times;
  sdrt::Image image;
  {
    ProgressBar progress;
    image = model.txt2img(o, refiner, args.refiner_switch, std::ref(progress), &times);
  }
  for (const auto& [stage, seconds] : {std::pair{"encode_prompt", times.encode_prompt},
                                       {"prepare_latents", times.prepare_latents},
                                       {"unet_infer", times.unet_infer},
                                       {"decode_latents", times.decode_latents}})
    fmt::print("Function {} took {:.4f} seconds to execute\n", stage, seconds);
  check_interrupt();
  std::string parameters = model.parameters_text(o);
  parameters += fmt::format(", Refiner: {}, Refiner switch at: {}",
                            std::filesystem::path(args.refiner).filename().string(), args.refiner_switch);
  sdrt::write_png(args.output, image, {{"parameters", parameters}});
  fmt::print("wrote {}x{} image to {} (seed {})\n", image.width, image.height, args.output, o.seed);
  return 0;
}

int run_txt2img(Txt2ImgArgs args) {
  // Before any work: the output is writable and is none of the files this run reads.
  sdrt::check_output_path(args.output, {args.model, args.vae, args.init_noise, args.refiner});
  if (!(args.refiner_switch > 0.0 && args.refiner_switch < 1.0))
    bad_option(fmt::format("--refiner-switch {} must be between 0 and 1 (exclusive)", args.refiner_switch));
  auto& o = args.options;
  for (const auto& [name, value] : {std::pair{"--width", args.width}, std::pair{"--height", args.height}}) {
    if (value && *value <= 0)
      bad_option(fmt::format("{} {} must be a positive multiple of 8 (leave it out for the model's default)",
                             name, *value));
  }
  o.width = args.width.value_or(0);
  o.height = args.height.value_or(0);
  if (!args.original_size.empty())
    std::tie(o.original_width, o.original_height) = parse_pair("--original-size", args.original_size, false);
  if (!args.crop_top_left.empty())
    std::tie(o.crop_left, o.crop_top) = parse_pair("--crop-top-left", args.crop_top_left, true);
  if (!args.target_size.empty())
    std::tie(o.target_width, o.target_height) = parse_pair("--target-size", args.target_size, false);
  const std::optional<uint64_t> seed = args.seed ? parse_seed(*args.seed) : std::nullopt;
  sdrt::validate_options(o);
  // AUTOMATIC1111 draws a random seed when none is given (or -1); it is printed and stored in the PNG.
  o.seed = seed ? *seed : std::random_device{}();
  if (!args.init_noise.empty()) o.init_noise = sdrt::read_npy(args.init_noise);
  sdrt::LoadOptions load;
  if (!args.prediction.empty()) load.prediction_type = args.prediction;
  load.vae = args.vae;
  load.device = args.device == "cuda" ? sdrt::Device::kCuda : sdrt::Device::kHost;
  const auto model = timed_load_model(args.model, /*text_encoder_only=*/false, load);
  print_model_warnings(model);
  if (!args.refiner.empty()) return run_refined(args, model, load);
  o = model.resolve(o);
  warn_dropped_tokens(model, o.prompt, "prompt", stdout);
  if (o.cfg_scale > 1.0) warn_dropped_tokens(model, o.negative_prompt, "negative prompt", stdout);
  sdrt::Conditioning conditioning;
  {
    StageTimer t("encode_prompt");
    conditioning = model.encode_conditioning(o);
  }
  check_interrupt();
  std::optional<sdrt::Sampling> sampling;
  {
    StageTimer t("prepare_latents");
    sampling.emplace(model.prepare_latents(o));
  }
  check_interrupt();
  sdrt::Tensor latents;
  {
    StageTimer t("unet_infer");
    ProgressBar progress;
    latents = model.denoise(*sampling, conditioning, o.cfg_scale, std::ref(progress));
  }
  sdrt::Image image;
  {
    StageTimer t("decode_latents");
    image = model.decode_latents(latents);
  }
  check_interrupt();
  sdrt::write_png(args.output, image, {{"parameters", model.parameters_text(o)}});
  fmt::print("wrote {}x{} image to {} (seed {})\n", image.width, image.height, args.output, o.seed);
  return 0;
}

int run_tokenize(const std::string& model_path, const std::string& prompt) {
  sdrt::validate_prompt(prompt);
  const auto model = load_model(model_path, /*text_encoder_only=*/true);
  // stdout holds only the ids (a JSON array), so this warning goes to stderr.
  warn_dropped_tokens(model, prompt, "prompt", stderr);
  const auto ids = model.tokenize(prompt);
  std::cout << nlohmann::json(ids).dump() << std::endl;
  return 0;
}

int run_encode(const std::string& model_path, const std::string& prompt, const std::string& output) {
  sdrt::check_output_path(output, {model_path});
  sdrt::validate_prompt(prompt);
  const auto model = timed_load_model(model_path, /*text_encoder_only=*/true);
  warn_dropped_tokens(model, prompt, "prompt", stdout);
  sdrt::Tensor embedding;
  {
    StageTimer t("encode_prompt");
    embedding = model.encode_prompt(prompt);
  }
  check_interrupt();
  sdrt::write_npy(output, embedding);
  fmt::print("wrote {} {} float32 to {}\n", sdrt::shape_to_string(embedding.shape()), "last_hidden_state",
             output);
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
    // nlohmann escapes control characters; bytes that are not UTF-8 become U+FFFD.
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
    return 0;
  }
  fmt::print("model: {}\npipeline: {}\n", terminal_safe(info.path),
             info.pipeline_class.empty() ? "?" : terminal_safe(info.pipeline_class));
  for (const auto& c : info.components) {
    fmt::print("  {} ({})\n", terminal_safe(c.name), terminal_safe(c.class_name));
    for (const auto& [k, v] : c.details) fmt::print("    {}: {}\n", terminal_safe(k), terminal_safe(v));
  }
  return 0;
}

int run_convert(const std::string& model_path, const std::string& output, const std::string& prediction) {
  sdrt::ConvertOptions options;
  if (!prediction.empty()) options.prediction_type = prediction;
  const auto converted = sdrt::convert_checkpoint(model_path, output, options);
  fmt::print("wrote {} ({}, {}) as a diffusers folder to {}\n", model_path, converted.family,
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
  txt2img->add_option("--width", gen.width, "image width, a multiple of 8 (default: the model's)");
  txt2img->add_option("--height", gen.height, "image height, a multiple of 8 (default: the model's)");
  txt2img->add_option("--seed", gen.seed, "random seed, 0 to 2^64-1 (default or -1: random)");
  txt2img->add_option("--rng", gen.options.rng, "noise generator: cpu (torch.Generator(\"cpu\"))")
      ->capture_default_str();
  txt2img->add_option("--init-noise", gen.init_noise,
                      "initial latents [1,4,H/8,W/8] float32 .npy instead of the seed");
  txt2img->add_option("--original-size", gen.original_size,
                      "SDXL size conditioning W,H (default: the image size)");
  txt2img->add_option("--crop-top-left", gen.crop_top_left, "SDXL crop conditioning X,Y (default: 0,0)");
  txt2img->add_option("--target-size", gen.target_size,
                      "SDXL target size conditioning W,H (default: the image size)");
  txt2img->add_option("--refiner", gen.refiner, "SDXL refiner model (folder or single file)");
  txt2img
      ->add_option("--refiner-switch", gen.refiner_switch,
                   "fraction of the steps the base model runs before the refiner")
      ->capture_default_str();
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
      app.add_subcommand("convert", "Write a single-file SD 1.x / 2.x / SDXL checkpoint as a diffusers folder");
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

  install_signal_handlers();
  try {
    if (*txt2img && gen.model.empty()) gen.model = default_model();
    if (*info && model.empty()) model = default_model();
    if (*txt2img) return run_txt2img(gen);
    if (*tokenize) return run_tokenize(model, prompt);
    if (*encode) return run_encode(model, prompt, output);
    if (*info) return run_info(model, as_json);
    if (*convert) return run_convert(model, output, prediction);
  } catch (const std::bad_alloc&) {
    // Sizes are checked against an estimate before allocating; this is the backstop.
    std::fflush(stdout);
    fmt::print(stderr, "sdrt: error: out of memory (try a smaller --width / --height, or fewer steps)\n");
    return sdrt::interrupt_signal() != 0 ? 128 + sdrt::interrupt_signal() : kExitError;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::string message = e.what();
    const int signo = sdrt::interrupt_signal();
    if (signo != 0 && message.find("interrupted by") == std::string::npos)
      message = fmt::format("interrupted by signal {}: {}", signo, message);
    fmt::print(stderr, "sdrt: error: {}\n", message);
    // Stopped by a signal: say so in the exit status, as the shell does.
    return signo != 0 ? 128 + signo : kExitError;
  }
  return kExitUsage;
}
