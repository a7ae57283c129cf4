// Text-to-image, stage by stage, as diffusers' StableDiffusionPipeline.__call__ runs it:
//   encode_prompt -> set_timesteps -> prepare_latents (randn · init_noise_sigma) -> for each timestep:
//   scale_model_input, UNet on [uncond; cond], guidance, scheduler.step (one Engine::sampling_step) ->
//   latents / scaling_factor -> VAE decode.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "pipeline/model_impl.h"
#include "sdrt/error.h"

namespace sdrt {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

[[noreturn]] void invalid(const std::string& message) {
  throw Error(ErrorKind::kInvalidArgument, message);
}

const Model::Impl& require_generation(const Model::Impl& m) {
  if (!m.unet_config || !m.vae_config || !m.scheduler_config)
    throw Error(ErrorKind::kInternal, "model was loaded for text encoding only");
  return m;
}

int64_t vae_factor(const Model::Impl& m) {
  return m.vae_config->downscale_factor();
}

void check_finite(const Tensor& t, const std::string& what) {
  const float* d = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (!std::isfinite(d[i]))
      throw Error(ErrorKind::kModel,
                  fmt::format("{} contain NaN or Inf (value {} at index {})", what, d[i], i));
}

}  // namespace

struct Sampling::State {
  std::unique_ptr<schedulers::Scheduler> scheduler;
  schedulers::TorchGenerator generator;
  Tensor latents;  // [1, C, h, w]
};

Sampling::Sampling(std::unique_ptr<State> state) : state_(std::move(state)) {}
Sampling::Sampling(Sampling&&) noexcept = default;
Sampling& Sampling::operator=(Sampling&&) noexcept = default;
Sampling::~Sampling() = default;
const Tensor& Sampling::latents() const {
  return state_->latents;
}
int Sampling::steps() const {
  return static_cast<int>(state_->scheduler->timesteps().size());
}
const std::vector<double>& Sampling::timesteps() const {
  return state_->scheduler->timesteps();
}

namespace {

constexpr int kMaxImageSize = 16384;

void check_size(const char* name, int value, int64_t factor) {
  if (value < 0 || value % factor != 0 || (value == 0 && factor == 0))
    invalid(fmt::format("{} {} must be a positive multiple of {}", name, value, factor));
  if (value > kMaxImageSize) invalid(fmt::format("{} {} is larger than {}", name, value, kMaxImageSize));
}

}  // namespace

void validate_options(const GenerateOptions& o) {
  check_size("width", o.width, 8);  // 0 stands for the model's default
  check_size("height", o.height, 8);
  if (o.steps < 1) invalid(fmt::format("steps {} must be at least 1", o.steps));
  if (o.steps > 10000) invalid(fmt::format("steps {} is more than 10000", o.steps));
  if (!std::isfinite(o.cfg_scale)) invalid("cfg_scale must be a finite number");
  if (o.rng != "cpu") invalid(fmt::format("rng \"{}\" is not supported (cpu)", o.rng));
  if (!o.scheduler.empty()) schedulers::parse_scheduler_name(o.scheduler);
  validate_prompt(o.prompt, "prompt");
  validate_prompt(o.negative_prompt, "negative prompt");
}

namespace {

// The memory a run may use on the host: physical memory, lowered by an address-space or data-segment limit.
double host_memory_bytes() {
  double bytes =
      static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  for (const int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    struct rlimit limit {};
    if (::getrlimit(resource, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
      bytes = std::min(bytes, static_cast<double>(limit.rlim_cur));
  }
  return bytes;
}

double estimate_activation_bytes(const models::UNetConfig& unet, const models::VaeConfig& vae, int width,
                                 int height, bool guidance) {
  // A rough lower bound of the fp32 activations alive at the peak, so that an impossible size fails at once:
  //   UNet (batch B = 2 with guidance): 8 tensors of C0 × h × w (the block in/out, the skip connections
  //   held for the up path) plus one attention score matrix (h·w)² per batch item (one head at a time);
  //   VAE decoder (batch 1): 4 tensors of C0' × H × W at full resolution plus its mid-block attention
  //   (h·w)²; h = H / 8, w = W / 8 for SD (the VAE's downscale factor); 4 bytes a value.
  const double f = static_cast<double>(vae.downscale_factor());
  const double hw = (height / f) * (width / f);
  const double batch = guidance ? 2.0 : 1.0;
  const double unet_bytes =
      4.0 * batch * (8.0 * static_cast<double>(unet.block_out_channels.front()) * hw + hw * hw);
  const double vae_bytes =
      4.0 * (4.0 * static_cast<double>(vae.block_out_channels.front()) * height * width + hw * hw);
  return std::max(unet_bytes, vae_bytes);
}

}  // namespace

GenerateOptions Model::resolve(const GenerateOptions& options) const {
  const auto& m = require_generation(*impl_);
  validate_options(options);
  GenerateOptions o = options;
  const int64_t factor = vae_factor(m);
  const int64_t default_size = m.unet_config->sample_size * factor;
  if ((o.width == 0 || o.height == 0) && default_size > kMaxImageSize)
    invalid(
        fmt::format("the model's default size {} (unet sample_size {} x VAE factor {}) is larger than "
                    "{}; give --width and --height",
                    default_size, m.unet_config->sample_size, factor, kMaxImageSize));
  if (o.width == 0) o.width = static_cast<int>(default_size);
  if (o.height == 0) o.height = static_cast<int>(default_size);
  check_size("width", o.width, factor);
  check_size("height", o.height, factor);
  if (m.device == Device::kHost) {
    const double need =
        estimate_activation_bytes(*m.unet_config, *m.vae_config, o.width, o.height, o.cfg_scale > 1.0);
    const double have = host_memory_bytes();
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    if (need > have)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}x{} needs at least {:.3g} GiB of memory for activations on the CPU "
                              "(estimated from the latent size and channels) but {:.3g} GiB is available",
                              o.width, o.height, need / kGiB, have / kGiB));
  }
  const auto kind = o.scheduler.empty() ? schedulers::scheduler_kind_of(*m.scheduler_config)
                                        : schedulers::parse_scheduler_name(o.scheduler);
  if (o.karras && (kind == schedulers::SchedulerKind::kPndm || kind == schedulers::SchedulerKind::kDdim))
    invalid("karras applies to the euler, euler_a and dpmpp_2m schedulers");
  if (o.init_noise) {
    const Shape want{1, m.unet_config->in_channels, o.height / factor, o.width / factor};
    if (o.init_noise->shape() != want || o.init_noise->dtype() != DType::kF32)
      invalid(fmt::format("initial noise has shape {} ({}), expected {} float32 for {}x{}",
                          shape_to_string(o.init_noise->shape()), dtype_name(o.init_noise->dtype()),
                          shape_to_string(want), o.width, o.height));
  }
  return o;
}

Tensor Model::encode_prompts(const GenerateOptions& options) const {
  const Tensor cond = encode_prompt(options.prompt);  // [1, 77, D]
  if (!(options.cfg_scale > 1.0)) return cond;
  // diffusers encodes "" when no negative prompt is given, and puts the unconditional half first.
  const Tensor uncond = encode_prompt(options.negative_prompt);
  const int64_t S = cond.dim(1), D = cond.dim(2);
  Tensor both({2, S, D}, DType::kF32);
  std::memcpy(both.data<float>(), uncond.data<float>(), uncond.nbytes());
  std::memcpy(both.data<float>() + S * D, cond.data<float>(), cond.nbytes());
  return both;
}

Sampling Model::prepare_latents(const GenerateOptions& options) const {
  const auto& m = require_generation(*impl_);
  const GenerateOptions o = resolve(options);
  const auto kind = o.scheduler.empty() ? schedulers::scheduler_kind_of(*m.scheduler_config)
                                        : schedulers::parse_scheduler_name(o.scheduler);
  auto state = std::unique_ptr<Sampling::State>(
      new Sampling::State{schedulers::make_scheduler(kind, *m.scheduler_config, o.karras),
                          schedulers::TorchGenerator(o.seed),
                          {}});
  state->scheduler->set_timesteps(o.steps);
  const int64_t factor = vae_factor(m);
  const Shape shape{1, m.unet_config->in_channels, o.height / factor, o.width / factor};
  state->latents = o.init_noise ? o.init_noise->to(DType::kF32) : state->generator.randn(shape);
  const float sigma = state->scheduler->init_noise_sigma();
  float* d = state->latents.data<float>();
  for (int64_t i = 0; i < state->latents.numel(); ++i) d[i] *= sigma;
  return Sampling(std::move(state));
}

Tensor Model::denoise(Sampling& sampling, const Tensor& context, double cfg_scale,
                      const StepCallback& on_step) const {
  const auto& m = require_generation(*impl_);
  auto& s = *sampling.state_;
  const int total = static_cast<int>(s.scheduler->timesteps().size());
  // The engine keeps the latents on its device for the whole loop; they come back when the loop ends or
  // stops.
  auto& engine = *m.engine;
  engine.set_context(context);
  engine.begin_sampling(s.latents, *s.scheduler);
  for (int i = 0; i < total; ++i) {
    const int64_t nonfinite = engine.sampling_step(*s.scheduler, static_cast<size_t>(i),
                                                   static_cast<float>(cfg_scale), s.generator);
    if (nonfinite > 0) {
      s.latents = engine.sampling_latents();
      const std::string what = fmt::format("latents after step {}", i + 1);
      check_finite(s.latents, what);  // names the first bad value
      throw Error(ErrorKind::kModel, fmt::format("{} contain NaN or Inf", what));
    }
    if (on_step && !on_step(i + 1, total)) {
      s.latents = engine.sampling_latents();
      throw Error(ErrorKind::kCancelled, fmt::format("cancelled after step {} of {}", i + 1, total));
    }
  }
  s.latents = engine.sampling_latents();
  return s.latents;
}

Image Model::decode_latents(const Tensor& latents) const {
  const auto& m = require_generation(*impl_);
  const auto& vae = *m.vae_config;
  Tensor z = latents.to(DType::kF32);
  const float scale = static_cast<float>(vae.scaling_factor);
  const float shift = static_cast<float>(vae.shift_factor.value_or(0.0));
  float* d = z.data<float>();
  for (int64_t i = 0; i < z.numel(); ++i) d[i] = d[i] / scale + shift;
  const Tensor image = m.engine->decode(z);  // [1, 3, H, W]
  check_finite(image, "decoded image values");
  return Image{static_cast<int>(image.dim(3)), static_cast<int>(image.dim(2)), models::image_to_rgb8(image)};
}

Image Model::txt2img(const GenerateOptions& options, const StepCallback& on_step, StageTimes* times) const {
  const GenerateOptions o = resolve(options);
  StageTimes t;
  auto start = Clock::now();
  const Tensor context = encode_prompts(o);
  t.encode_prompt = seconds_since(start);
  start = Clock::now();
  Sampling sampling = prepare_latents(o);
  t.prepare_latents = seconds_since(start);
  start = Clock::now();
  const Tensor latents = denoise(sampling, context, o.cfg_scale, on_step);
  t.unet_infer = seconds_since(start);
  start = Clock::now();
  Image image = decode_latents(latents);
  t.decode_latents = seconds_since(start);
  if (times) *times = t;
  return image;
}

namespace {

// `s` with every line break Python's str.splitlines knows (\n \r \v \f \x1c-\x1e, U+0085, U+2028,
// U+2029) replaced by a space.
std::string single_line(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) {
      out += ' ';
    } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x85) {
      out += ' ';
      i += 1;
    } else if (c == 0xe2 && i + 2 < s.size() && static_cast<unsigned char>(s[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(s[i + 2]) == 0xa8 ||
                static_cast<unsigned char>(s[i + 2]) == 0xa9)) {
      out += ' ';
      i += 2;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// A1111's infotext quote(): a value holding ',', ':' or a line break is written as a JSON string.
std::string a1111_quote(const std::string& v) {
  if (v.find_first_of(",:\n\r") == std::string::npos && single_line(v) == v) return v;
  return nlohmann::json(v).dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

}  // namespace

std::string Model::parameters_text(const GenerateOptions& o) const {
  const auto& m = require_generation(*impl_);
  const auto kind = o.scheduler.empty() ? schedulers::scheduler_kind_of(*m.scheduler_config)
                                        : schedulers::parse_scheduler_name(o.scheduler);
  // The text is line-structured (prompt, "Negative prompt: ...", the settings line last), so the prompts
  // and the model name cannot be allowed to start a line of their own: line breaks in the prompts become
  // spaces (the CLIP tokenizer collapses every whitespace run to one space, so the stored prompt still
  // encodes to the same ids), and the model name is quoted as A1111 quotes a value holding ',', ':' or a
  // line break (a JSON string, escapes included).
  std::string text = single_line(o.prompt) + "\n";
  if (!o.negative_prompt.empty()) text += "Negative prompt: " + single_line(o.negative_prompt) + "\n";
  text += fmt::format("Steps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, Model: {}", o.steps,
                      schedulers::sampler_display_name(kind, o.karras), o.cfg_scale, o.seed, o.width,
                      o.height, a1111_quote(m.name));
  return text;
}

}  // namespace sdrt
