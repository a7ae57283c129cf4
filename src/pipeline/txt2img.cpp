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

bool refiner_model(const Model::Impl& m) {
  return m.time_id_count == 5;
}

void check_switch(double switch_at) {
  if (!(switch_at > 0.0 && switch_at < 1.0))
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("refiner switch {} must be between 0 and 1 (the fraction of the steps the base runs)",
                    switch_at));
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
  // The steps this loop runs: [first_step, end_step) of the scheduler's timesteps (a base model stops where
  // a refiner takes over, the refiner starts there).
  size_t first_step = 0, end_step = 0;
};

Sampling::Sampling(std::unique_ptr<State> state) : state_(std::move(state)) {}
Sampling::Sampling(Sampling&&) noexcept = default;
Sampling& Sampling::operator=(Sampling&&) noexcept = default;
Sampling::~Sampling() = default;
const Tensor& Sampling::latents() const {
  return state_->latents;
}
int Sampling::steps() const {
  return static_cast<int>(state_->end_step - state_->first_step);
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
  // SDXL's size conditioning: pixel counts (0 for the default) and a crop offset inside them.
  for (const auto& [name, v] : {std::pair{"original_width", o.original_width},
                                {"original_height", o.original_height},
                                {"target_width", o.target_width},
                                {"target_height", o.target_height},
                                {"crop_left", o.crop_left},
                                {"crop_top", o.crop_top}})
    if (v < 0 || v > kMaxImageSize)
      invalid(fmt::format("{} {} must be an integer from 0 to {}", name, v, kMaxImageSize));
  for (const auto& [name, v] : {std::pair{"aesthetic_score", o.aesthetic_score},
                                {"negative_aesthetic_score", o.negative_aesthetic_score}})
    if (!std::isfinite(v) || std::abs(v) > 1000.0)
      invalid(fmt::format("{} {} must be a finite number", name, v));
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
                                 int height, bool guidance, bool on_gpu) {
  // A rough lower bound of the fp32 activations alive at the peak, so that an impossible size fails at once:
  //   UNet (batch B = 2 with guidance): 8 tensors of C0 × h × w (the block in/out, the skip connections
  //   held for the up path) plus one attention score matrix (h·w)² per batch item (one head at a time);
  //   VAE decoder (batch 1): 4 tensors of C0' × H × W at full resolution plus its mid-block attention
  //   (h·w)²; h = H / 8, w = W / 8 for SD (the VAE's downscale factor); 4 bytes a value.
  const double f = static_cast<double>(vae.downscale_factor());
  const double hw = (height / f) * (width / f);
  const double batch = guidance ? 2.0 : 1.0;
  //   On the GPU: 2 bytes a value (fp16) and no score matrix (fused attention keeps it on chip).
  const double value = on_gpu ? 2.0 : 4.0, scores = on_gpu ? 0.0 : hw * hw;
  const double unet_bytes =
      value * batch * (8.0 * static_cast<double>(unet.block_out_channels.front()) * hw + scores);
  const double vae_bytes =
      value * (4.0 * static_cast<double>(vae.block_out_channels.front()) * height * width + scores);
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
  {
    const bool gpu = m.device == Device::kCuda;
    const double need =
        estimate_activation_bytes(*m.unet_config, *m.vae_config, o.width, o.height, o.cfg_scale > 1.0, gpu);
    const double have = gpu ? m.engine->free_memory_bytes() : host_memory_bytes();
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    if (need > have)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("{}x{} needs at least {:.3g} GiB of memory for activations on the {} "
                              "(estimated from the latent size and channels) but {:.3g} GiB is available",
                              o.width, o.height, need / kGiB, gpu ? "GPU" : "CPU", have / kGiB));
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

namespace {

// Rows stacked along a new first axis: [1, ...] each -> [n, ...].
Tensor stack_rows(const std::vector<Tensor>& rows) {
  Shape shape = rows.front().shape();
  shape[0] = static_cast<int64_t>(rows.size());
  Tensor out(shape, DType::kF32);
  size_t offset = 0;
  for (const Tensor& r : rows) {
    const Tensor f = r.to(DType::kF32);
    std::memcpy(out.data<float>() + offset, f.data<float>(), f.nbytes());
    offset += static_cast<size_t>(f.numel());
  }
  return out;
}

// [1, S, D1], [1, S, D2], ... -> [1, S, D1 + D2 + ...]: the text encoders side by side.
Tensor concat_features(const std::vector<Tensor>& parts) {
  const int64_t S = parts.front().dim(1);
  int64_t D = 0;
  for (const Tensor& p : parts) D += p.dim(2);
  Tensor out({1, S, D}, DType::kF32);
  int64_t at = 0;
  for (const Tensor& p : parts) {
    const int64_t d = p.dim(2);
    for (int64_t s = 0; s < S; ++s)
      std::memcpy(out.data<float>() + s * D + at, p.data<float>() + s * d,
                  static_cast<size_t>(d) * sizeof(float));
    at += d;
  }
  return out;
}

Tensor zeros_like(const Tensor& t) {
  Tensor z(t.shape(), DType::kF32);
  std::memset(z.raw_data(), 0, z.nbytes());
  return z;
}

// The time ids of one row, as diffusers' _get_add_time_ids orders them: original (h, w), crop (top, left),
// then target (h, w) — or, for the refiner, the aesthetic score.
Tensor time_ids_row(const GenerateOptions& o, int64_t count, bool negative) {
  const auto or_default = [](int v, int fallback) { return static_cast<float>(v > 0 ? v : fallback); };
  std::vector<float> ids = {or_default(o.original_height, o.height), or_default(o.original_width, o.width),
                            static_cast<float>(o.crop_top), static_cast<float>(o.crop_left)};
  if (count == 5) {
    ids.push_back(static_cast<float>(negative ? o.negative_aesthetic_score : o.aesthetic_score));
  } else {
    ids.push_back(or_default(o.target_height, o.height));
    ids.push_back(or_default(o.target_width, o.width));
  }
  Tensor t({1, static_cast<int64_t>(ids.size())}, DType::kF32);
  std::memcpy(t.data<float>(), ids.data(), ids.size() * sizeof(float));
  return t;
}

}  // namespace

Tensor Model::encode_prompts(const GenerateOptions& options) const {
  return encode_conditioning(options).context;
}

Conditioning Model::encode_conditioning(const GenerateOptions& options) const {
  const auto& m = *impl_;
  const bool guidance = options.cfg_scale > 1.0;
  if (m.time_id_count == 0) {  // SD 1.x / 2.x: the last hidden state of the one text encoder
    const Tensor cond = encode_prompt(options.prompt);  // [1, 77, D]
    if (!guidance) return {cond, {}, {}};
    // diffusers encodes "" when no negative prompt is given, and puts the unconditional half first.
    return {stack_rows({encode_prompt(options.negative_prompt), cond}), {}, {}};
  }
  // SDXL (diffusers' StableDiffusionXLPipeline.encode_prompt): every encoder's penultimate hidden state, side
  // by side; the pooled embedding is the last encoder's projected one.
  const auto encode = [&](const std::string& text, Tensor& context, Tensor& pooled) {
    validate_prompt(text);
    std::vector<Tensor> parts;
    for (size_t e = 0; e < m.tokenizers.size(); ++e) {
      const auto ids = m.tokenizers[e].encode(text);
      auto out = m.engine->encode_text_full(ids, {.encoder = e});
      check_finite(out.penultimate_hidden_state, "text encoder outputs");
      parts.push_back(std::move(out.penultimate_hidden_state));
      pooled = out.text_embeds.empty() ? std::move(out.pooler_output) : std::move(out.text_embeds);
    }
    check_finite(pooled, "pooled text embeddings");
    context = concat_features(parts);
  };
  Tensor context, pooled;
  encode(options.prompt, context, pooled);
  const Tensor ids = time_ids_row(options, m.time_id_count, false);
  if (!guidance) return {context, pooled, ids};
  Tensor negative_context, negative_pooled;
  if (options.negative_prompt.empty() && m.pipeline.force_zeros_for_empty_prompt) {
    negative_context = zeros_like(context);
    negative_pooled = zeros_like(pooled);
  } else {
    encode(options.negative_prompt, negative_context, negative_pooled);
  }
  return {stack_rows({negative_context, context}), stack_rows({negative_pooled, pooled}),
          stack_rows({time_ids_row(options, m.time_id_count, true), ids})};
}

Sampling Model::prepare_latents(const GenerateOptions& options) const {
  const auto& m = require_generation(*impl_);
  if (refiner_model(m))
    throw Error(
        ErrorKind::kInvalidArgument,
        fmt::format("{} is an SDXL refiner (it refines a base model's latents): give it as the refiner "
                    "of an SDXL base model (--refiner)",
                    impl_->path.string()));
  const GenerateOptions o = resolve(options);
  const auto kind = o.scheduler.empty() ? schedulers::scheduler_kind_of(*m.scheduler_config)
                                        : schedulers::parse_scheduler_name(o.scheduler);
  auto state = std::unique_ptr<Sampling::State>(
      new Sampling::State{schedulers::make_scheduler(kind, *m.scheduler_config, o.karras),
                          schedulers::TorchGenerator(o.seed),
                          {}});
  state->scheduler->set_timesteps(o.steps);
  state->end_step = state->scheduler->timesteps().size();
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
  return denoise(sampling, Conditioning{context, {}, {}}, cfg_scale, on_step);
}

Tensor Model::denoise(Sampling& sampling, const Conditioning& conditioning, double cfg_scale,
                      const StepCallback& on_step) const {
  const auto& m = require_generation(*impl_);
  Tensor add_embeds;
  if (m.unet_config->text_time_embedding) {
    if (conditioning.text_embeds.empty() || conditioning.time_ids.empty())
      throw Error(
          ErrorKind::kInvalidArgument,
          "an SDXL model is conditioned on pooled text embeddings and time ids as well as the context "
          "(Model::encode_conditioning)");
    add_embeds =
        models::text_time_add_embeds(*m.unet_config, conditioning.text_embeds, conditioning.time_ids);
  }
  auto& s = *sampling.state_;
  const int first = static_cast<int>(s.first_step), total = static_cast<int>(s.end_step - s.first_step);
  // The engine keeps the latents on its device for the whole loop; they come back when the loop ends or
  // stops.
  auto& engine = *m.engine;
  engine.set_context(conditioning.context, add_embeds);
  engine.begin_sampling(s.latents, *s.scheduler);
  for (int i = 0; i < total; ++i) {
    const int64_t nonfinite = engine.sampling_step(*s.scheduler, static_cast<size_t>(first + i),
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
  const Conditioning conditioning = encode_conditioning(o);
  t.encode_prompt = seconds_since(start);
  start = Clock::now();
  Sampling sampling = prepare_latents(o);
  t.prepare_latents = seconds_since(start);
  start = Clock::now();
  const Tensor latents = denoise(sampling, conditioning, o.cfg_scale, on_step);
  t.unet_infer = seconds_since(start);
  start = Clock::now();
  Image image = decode_latents(latents);
  t.decode_latents = seconds_since(start);
  if (times) *times = t;
  return image;
}

namespace {

// The scheduler of one loop (the model's own, or the one the options name) with its timesteps set.
std::unique_ptr<schedulers::Scheduler> loop_scheduler(const Model::Impl& m, const GenerateOptions& o) {
  const auto kind = o.scheduler.empty() ? schedulers::scheduler_kind_of(*m.scheduler_config)
                                        : schedulers::parse_scheduler_name(o.scheduler);
  auto scheduler = schedulers::make_scheduler(kind, *m.scheduler_config, o.karras);
  scheduler->set_timesteps(o.steps);
  return scheduler;
}

// diffusers' denoising_start (img2img get_timesteps): the refiner runs the timesteps below
// round((1 - switch_at) · T); sdrt's schedulers are all first-order in diffusers' sense, so no step is added.
size_t refiner_first_step(const Model::Impl& m, const schedulers::Scheduler& scheduler, double switch_at) {
  const int T = m.scheduler_config->num_train_timesteps;
  const double cutoff = static_cast<double>(std::lround(T - switch_at * T));
  const auto& ts = scheduler.timesteps();
  size_t kept = 0;
  for (double t : ts) kept += t < cutoff;
  return ts.size() - kept;
}

}  // namespace

bool Model::is_refiner() const {
  return refiner_model(*impl_);
}

void Model::end_sampling_at(Sampling& sampling, double switch_at) const {
  const auto& m = require_generation(*impl_);
  check_switch(switch_at);
  auto& s = *sampling.state_;
  // diffusers' denoising_end: keep the timesteps at or above the cutoff.
  const int T = m.scheduler_config->num_train_timesteps;
  const double cutoff = static_cast<double>(std::lround(T - switch_at * T));
  const auto& ts = s.scheduler->timesteps();
  size_t end = s.first_step;
  while (end < s.end_step && ts[end] >= cutoff) ++end;
  s.end_step = end;
}

Sampling Model::continue_sampling(Sampling&& base, const GenerateOptions& options, double switch_at) const {
  const auto& m = require_generation(*impl_);
  check_switch(switch_at);
  const GenerateOptions o = resolve(options);
  auto& from = *base.state_;
  auto state = std::unique_ptr<Sampling::State>(
      new Sampling::State{loop_scheduler(m, o), std::move(from.generator), {}});
  state->first_step = refiner_first_step(m, *state->scheduler, switch_at);
  state->end_step = state->scheduler->timesteps().size();
  state->scheduler->set_begin_index(state->first_step);
  const Shape want{1, m.unet_config->in_channels, o.height / vae_factor(m), o.width / vae_factor(m)};
  if (from.latents.shape() != want)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("the refiner takes latents {} but the base made {}", shape_to_string(want),
                            shape_to_string(from.latents.shape())));
  state->latents = std::move(from.latents);  // no noise added (denoising_start)
  return Sampling(std::move(state));
}

Image Model::txt2img(const GenerateOptions& options, const Model& refiner, double switch_at,
                     const StepCallback& on_step, StageTimes* times) const {
  const auto& m = require_generation(*impl_);
  require_generation(*refiner.impl_);
  if (m.time_id_count != 6)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: a refiner needs an SDXL base model (this is {})", impl_->path.string(),
                            refiner_model(m) ? "an SDXL refiner" : "not SDXL"));
  if (refiner.impl_->time_id_count == 0)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("refiner {} is not an SDXL model", refiner.impl_->path.string()));
  if (refiner.impl_->vae_config->latent_channels != m.vae_config->latent_channels)
    throw Error(ErrorKind::kInvalidArgument, "the refiner's latents differ from the base model's");
  const GenerateOptions o = resolve(options);
  StageTimes t;
  auto start = Clock::now();
  const Conditioning conditioning = encode_conditioning(o);
  const Conditioning refiner_conditioning = refiner.encode_conditioning(o);
  t.encode_prompt = seconds_since(start);
  start = Clock::now();
  Sampling sampling = prepare_latents(o);
  end_sampling_at(sampling, switch_at);
  t.prepare_latents = seconds_since(start);
  start = Clock::now();
  const int base_steps = sampling.steps();
  const auto refiner_schedule = loop_scheduler(*refiner.impl_, o);
  const int refiner_steps =
      static_cast<int>(refiner_schedule->timesteps().size() -
                       refiner_first_step(*refiner.impl_, *refiner_schedule, switch_at));
  const auto progress = [&](int offset) -> StepCallback {  // one count over both loops
    if (!on_step) return nullptr;
    return [&, offset](int done, int) { return on_step(offset + done, base_steps + refiner_steps); };
  };
  denoise(sampling, conditioning, o.cfg_scale, progress(0));
  Sampling refined = refiner.continue_sampling(std::move(sampling), o, switch_at);
  const Tensor latents = refiner.denoise(refined, refiner_conditioning, o.cfg_scale, progress(base_steps));
  t.unet_infer = seconds_since(start);
  start = Clock::now();
  Image image = refiner.decode_latents(latents);
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
