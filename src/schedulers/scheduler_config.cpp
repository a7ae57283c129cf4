// scheduler_config.json parsing, scheduler names, and make_scheduler: diffusers'
// `Target.from_config(config)`.
#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "schedulers/scheduler.h"
#include "schedulers/scheduler_impl.h"
#include "sdrt/error.h"

namespace sdrt::schedulers {

const std::vector<float>& Scheduler::sigmas() const {
  static const std::vector<float> kNone;
  return kNone;
}

namespace {

using nlohmann::json;

// The largest num_train_timesteps accepted: diffusers' models train with 1000; the schedulers allocate
// tables of this length, so an absurd value is refused rather than allocated.
constexpr int kMaxTrainTimesteps = 100000;

// Python's json module writes float('inf') and float('nan') as bare Infinity / -Infinity / NaN (diffusers
// saves DPMSolverMultistepScheduler's lambda_min_clipped = -inf that way). nlohmann rejects them, so such
// tokens outside strings are quoted first and read back by opt_number.
std::string quote_nonfinite_tokens(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') in_string = true;
    bool replaced = false;
    for (const char* token : {"-Infinity", "Infinity", "NaN"}) {
      const std::string_view t(token);
      if (text.compare(i, t.size(), t) == 0) {
        out += '"';
        out += t;
        out += '"';
        i += t.size() - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}

[[noreturn]] void bad_value(const std::string& what, const std::string& key, const std::string& value,
                            const char* expected, ErrorKind kind = ErrorKind::kFormat) {
  throw Error(
      kind, fmt::format("{}: field \"{}\" has {} value \"{}\" (expected {})", what, key,
                        kind == ErrorKind::kUnsupported ? "the unsupported" : "an unknown", value, expected));
}

std::optional<std::string> opt_string(const json& j, const std::string& key, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  return io::get_string(j, key, "", what);
}

std::optional<bool> opt_bool(const json& j, const std::string& key, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  return io::get_bool(j, key, false, what);
}

std::optional<double> opt_number(const json& j, const std::string& key, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const json& v = j[key];
  if (v.is_string()) {  // a quoted non-finite token, see quote_nonfinite_tokens
    const auto s = v.get<std::string>();
    if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    if (s == "Infinity") return std::numeric_limits<double>::infinity();
    if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
  }
  return io::get_number(j, key, 0.0, what);
}

std::optional<int> opt_int(const json& j, const std::string& key, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return std::nullopt;
  const int64_t v = io::get_int(j, key, 0, what);
  if (v < std::numeric_limits<int>::min() || v > std::numeric_limits<int>::max())
    throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" is out of range: {}", what, key, v));
  return static_cast<int>(v);
}

PredictionType parse_prediction_type(const std::string& s, const std::string& what) {
  if (s == "epsilon") return PredictionType::kEpsilon;
  if (s == "v_prediction") return PredictionType::kVPrediction;
  if (s == "sample" || s == "original_sample") return PredictionType::kSample;
  if (s == "flow_prediction")
    bad_value(what, "prediction_type", s, "epsilon, v_prediction or sample", ErrorKind::kUnsupported);
  bad_value(what, "prediction_type", s, "epsilon, v_prediction or sample");
}

TimestepSpacing parse_spacing(const std::string& s, const std::string& what) {
  if (s == "leading") return TimestepSpacing::kLeading;
  if (s == "trailing") return TimestepSpacing::kTrailing;
  if (s == "linspace") return TimestepSpacing::kLinspace;
  bad_value(what, "timestep_spacing", s, "leading, trailing or linspace");
}

}  // namespace

SchedulerConfig SchedulerConfig::from_json_file(const std::filesystem::path& path) {
  return from_json_text(io::read_text_file(path), path.string());
}

SchedulerConfig SchedulerConfig::from_json_text(const std::string& text, const std::string& what) {
  json j;
  try {
    j = json::parse(quote_nonfinite_tokens(text));
  } catch (const json::exception& e) {  // a syntax error, or a number too large for a double ("1e309")
    std::string msg = e.what();
    const auto pos = msg.find("] ");
    if (pos != std::string::npos) msg = msg.substr(pos + 2);
    throw Error(ErrorKind::kFormat, fmt::format("{}: malformed JSON: {}", what, msg));
  }
  if (!j.is_object()) throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", what));

  SchedulerConfig c;
  c.class_name = io::get_string(j, "_class_name", "", what);
  c.num_train_timesteps = opt_int(j, "num_train_timesteps", what).value_or(c.num_train_timesteps);
  if (c.num_train_timesteps < 2)
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"num_train_timesteps\" must be at least 2, not {}", what,
                            c.num_train_timesteps));
  if (c.num_train_timesteps > kMaxTrainTimesteps)
    throw Error(ErrorKind::kFormat, fmt::format("{}: field \"num_train_timesteps\" = {} is more than {}",
                                                what, c.num_train_timesteps, kMaxTrainTimesteps));
  c.beta_start = io::get_number(j, "beta_start", c.beta_start, what);
  c.beta_end = io::get_number(j, "beta_end", c.beta_end, what);
  // A beta is a per-step noise variance: outside (0, 1) the alphas' cumulative product is zero, negative or
  // NaN and every image is garbage.
  for (const auto& [key, value] : {std::pair{"beta_start", c.beta_start}, std::pair{"beta_end", c.beta_end}})
    if (!(value > 0.0 && value < 1.0))
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"{}\" = {} must be between 0 and 1 (exclusive)", what, key, value));
  if (c.beta_start > c.beta_end)
    throw Error(ErrorKind::kFormat, fmt::format("{}: field \"beta_start\" = {} is larger than beta_end = {}",
                                                what, c.beta_start, c.beta_end));
  c.beta_schedule = io::get_string(j, "beta_schedule", c.beta_schedule, what);
  if (c.beta_schedule == "sigmoid")
    bad_value(what, "beta_schedule", c.beta_schedule, "linear, scaled_linear or squaredcos_cap_v2",
              ErrorKind::kUnsupported);
  if (c.beta_schedule != "linear" && c.beta_schedule != "scaled_linear" &&
      c.beta_schedule != "squaredcos_cap_v2")
    bad_value(what, "beta_schedule", c.beta_schedule, "linear, scaled_linear or squaredcos_cap_v2");
  if (j.contains("trained_betas") && !j["trained_betas"].is_null()) {
    const json& tb = j["trained_betas"];
    if (!tb.is_array())
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"trained_betas\" must be an array "
                                                  "of numbers or null",
                                                  what));
    for (const json& b : tb) {
      if (!b.is_number())
        throw Error(ErrorKind::kFormat,
                    fmt::format("{}: field \"trained_betas\" must hold numbers only", what));
      const double beta = b.get<double>();
      if (!(beta > 0.0 && beta < 1.0))
        throw Error(ErrorKind::kFormat,
                    fmt::format("{}: field \"trained_betas\"[{}] = {} must be between 0 and 1 (exclusive)",
                                what, c.trained_betas.size(), beta));
      c.trained_betas.push_back(beta);
    }
    if (c.trained_betas.empty())
      throw Error(
          ErrorKind::kFormat,
          fmt::format("{}: field \"trained_betas\" is an empty list (null means: use beta_schedule)", what));
    if (c.trained_betas.size() != static_cast<size_t>(c.num_train_timesteps))
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"trained_betas\" has {} values for num_train_timesteps {}", what,
                              c.trained_betas.size(), c.num_train_timesteps));
  }
  if (auto s = opt_string(j, "prediction_type", what)) c.prediction_type = parse_prediction_type(*s, what);
  if (auto s = opt_string(j, "timestep_spacing", what)) c.timestep_spacing = parse_spacing(*s, what);
  c.steps_offset = opt_int(j, "steps_offset", what).value_or(0);
  c.set_alpha_to_one = opt_bool(j, "set_alpha_to_one", what);
  c.skip_prk_steps = opt_bool(j, "skip_prk_steps", what);
  c.clip_sample = opt_bool(j, "clip_sample", what);
  c.clip_sample_range = opt_number(j, "clip_sample_range", what);
  c.use_karras_sigmas = opt_bool(j, "use_karras_sigmas", what);
  c.rescale_betas_zero_snr = opt_bool(j, "rescale_betas_zero_snr", what);
  c.thresholding = opt_bool(j, "thresholding", what);
  c.sigma_min = opt_number(j, "sigma_min", what);
  c.sigma_max = opt_number(j, "sigma_max", what);
  c.final_sigmas_type = opt_string(j, "final_sigmas_type", what);
  if (c.final_sigmas_type && *c.final_sigmas_type != "zero" && *c.final_sigmas_type != "sigma_min")
    bad_value(what, "final_sigmas_type", *c.final_sigmas_type, "zero or sigma_min");
  c.interpolation_type = opt_string(j, "interpolation_type", what);
  c.timestep_type = opt_string(j, "timestep_type", what);
  c.use_exponential_sigmas = opt_bool(j, "use_exponential_sigmas", what);
  c.use_beta_sigmas = opt_bool(j, "use_beta_sigmas", what);
  c.solver_order = opt_int(j, "solver_order", what);
  c.algorithm_type = opt_string(j, "algorithm_type", what);
  c.solver_type = opt_string(j, "solver_type", what);
  c.lower_order_final = opt_bool(j, "lower_order_final", what);
  c.euler_at_final = opt_bool(j, "euler_at_final", what);
  c.lambda_min_clipped = opt_number(j, "lambda_min_clipped", what);
  c.variance_type = opt_string(j, "variance_type", what);
  c.use_lu_lambdas = opt_bool(j, "use_lu_lambdas", what);
  c.use_flow_sigmas = opt_bool(j, "use_flow_sigmas", what);
  return c;
}

SchedulerKind parse_scheduler_name(const std::string& name) {
  if (name == "pndm") return SchedulerKind::kPndm;
  if (name == "ddim") return SchedulerKind::kDdim;
  if (name == "euler") return SchedulerKind::kEuler;
  if (name == "euler_a") return SchedulerKind::kEulerAncestral;
  if (name == "dpmpp_2m") return SchedulerKind::kDpmSolverMultistep;
  throw Error(
      ErrorKind::kInvalidArgument,
      fmt::format("unknown scheduler \"{}\" (valid names: pndm, ddim, euler, euler_a, dpmpp_2m)", name));
}

SchedulerKind scheduler_kind_of(const SchedulerConfig& config) {
  const std::string& c = config.class_name;
  if (c == "PNDMScheduler") return SchedulerKind::kPndm;
  if (c == "DDIMScheduler") return SchedulerKind::kDdim;
  if (c == "EulerDiscreteScheduler") return SchedulerKind::kEuler;
  if (c == "EulerAncestralDiscreteScheduler") return SchedulerKind::kEulerAncestral;
  if (c == "DPMSolverMultistepScheduler") return SchedulerKind::kDpmSolverMultistep;
  if (c.empty())
    throw Error(ErrorKind::kUnsupported, "scheduler config has no \"_class_name\"; pick a scheduler by name");
  throw Error(
      ErrorKind::kUnsupported,
      fmt::format("scheduler class \"{}\" is not supported (sdrt has PNDMScheduler, DDIMScheduler, "
                  "EulerDiscreteScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler)",
                  c));
}

std::string sampler_display_name(SchedulerKind kind, bool karras) {
  std::string name;
  switch (kind) {
    case SchedulerKind::kPndm:
      name = "PNDM";
      break;
    case SchedulerKind::kDdim:
      name = "DDIM";
      break;
    case SchedulerKind::kEuler:
      name = "Euler";
      break;
    case SchedulerKind::kEulerAncestral:
      name = "Euler a";
      break;
    case SchedulerKind::kDpmSolverMultistep:
      name = "DPM++ 2M";
      break;
  }
  return karras ? name + " Karras" : name;
}

namespace {

[[noreturn]] void unsupported(const char* cls, const std::string& setting) {
  throw Error(ErrorKind::kUnsupported, fmt::format("{}: {} is not supported", cls, setting));
}

detail::BetaSchedule beta_schedule_of(const SchedulerConfig& c, bool has_rescale) {
  detail::BetaSchedule b;
  b.num_train_timesteps = c.num_train_timesteps;
  b.beta_start = c.beta_start;
  b.beta_end = c.beta_end;
  b.beta_schedule = c.beta_schedule;
  b.trained_betas = c.trained_betas;
  b.rescale_betas_zero_snr = has_rescale && c.rescale_betas_zero_snr.value_or(false);
  return b;
}

bool final_sigma_min(const SchedulerConfig& c) {
  return c.final_sigmas_type.value_or("zero") == "sigma_min";
}

// Settings shared by EulerDiscreteScheduler and DPMSolverMultistepScheduler that sdrt does not implement.
void reject_other_sigma_schedules(const SchedulerConfig& c, const char* cls) {
  if (c.use_exponential_sigmas.value_or(false)) unsupported(cls, "use_exponential_sigmas");
  if (c.use_beta_sigmas.value_or(false)) unsupported(cls, "use_beta_sigmas");
}

}  // namespace

std::unique_ptr<Scheduler> make_scheduler(SchedulerKind kind, const SchedulerConfig& c, bool karras) {
  const PredictionType prediction = c.prediction_type.value_or(PredictionType::kEpsilon);
  switch (kind) {
    case SchedulerKind::kPndm: {
      if (karras)
        throw Error(ErrorKind::kInvalidArgument, "Karras sigmas apply to euler, euler_a and dpmpp_2m only");
      if (prediction == PredictionType::kSample) unsupported("PNDMScheduler", "prediction_type \"sample\"");
      detail::PndmOptions o;
      o.betas = beta_schedule_of(c, /*has_rescale=*/false);
      o.skip_prk_steps = c.skip_prk_steps.value_or(false);
      o.set_alpha_to_one = c.set_alpha_to_one.value_or(false);
      o.prediction_type = prediction;
      o.timestep_spacing = c.timestep_spacing.value_or(TimestepSpacing::kLeading);
      o.steps_offset = c.steps_offset;
      return detail::make_pndm(o);
    }
    case SchedulerKind::kDdim: {
      if (karras)
        throw Error(ErrorKind::kInvalidArgument, "Karras sigmas apply to euler, euler_a and dpmpp_2m only");
      if (c.thresholding.value_or(false)) unsupported("DDIMScheduler", "thresholding");
      detail::DdimOptions o;
      o.betas = beta_schedule_of(c, /*has_rescale=*/true);
      o.clip_sample = c.clip_sample.value_or(true);
      o.clip_sample_range = c.clip_sample_range.value_or(1.0);
      o.set_alpha_to_one = c.set_alpha_to_one.value_or(true);
      o.steps_offset = c.steps_offset;
      o.prediction_type = prediction;
      o.timestep_spacing = c.timestep_spacing.value_or(TimestepSpacing::kLeading);
      return detail::make_ddim(o);
    }
    case SchedulerKind::kEuler: {
      reject_other_sigma_schedules(c, "EulerDiscreteScheduler");
      if (c.interpolation_type.value_or("linear") != "linear")
        unsupported("EulerDiscreteScheduler",
                    fmt::format("interpolation_type \"{}\"", *c.interpolation_type));
      if (c.timestep_type.value_or("discrete") != "discrete" && prediction == PredictionType::kVPrediction)
        unsupported("EulerDiscreteScheduler", "timestep_type \"continuous\" with v_prediction");
      detail::EulerOptions o;
      o.betas = beta_schedule_of(c, /*has_rescale=*/true);
      o.prediction_type = prediction;
      o.timestep_spacing = c.timestep_spacing.value_or(TimestepSpacing::kLinspace);
      o.steps_offset = c.steps_offset;
      o.use_karras_sigmas = karras || c.use_karras_sigmas.value_or(false);
      o.sigma_min = c.sigma_min;
      o.sigma_max = c.sigma_max;
      o.final_sigma_min = final_sigma_min(c);
      return detail::make_euler(o);
    }
    case SchedulerKind::kEulerAncestral: {
      // EulerAncestralDiscreteScheduler has no use_karras_sigmas, sigma_min/max or final_sigmas_type: a
      // config's values are ignored as diffusers ignores them; `karras` is an sdrt extension (see euler.cpp).
      if (prediction == PredictionType::kSample)
        unsupported("EulerAncestralDiscreteScheduler", "prediction_type \"sample\"");
      detail::EulerOptions o;
      o.betas = beta_schedule_of(c, /*has_rescale=*/true);
      o.prediction_type = prediction;
      o.timestep_spacing = c.timestep_spacing.value_or(TimestepSpacing::kLinspace);
      o.steps_offset = c.steps_offset;
      o.use_karras_sigmas = karras;
      return detail::make_euler_ancestral(o);
    }
    case SchedulerKind::kDpmSolverMultistep: {
      const char* cls = "DPMSolverMultistepScheduler";
      reject_other_sigma_schedules(c, cls);
      if (c.use_lu_lambdas.value_or(false)) unsupported(cls, "use_lu_lambdas");
      if (c.use_flow_sigmas.value_or(false)) unsupported(cls, "use_flow_sigmas");
      if (c.thresholding.value_or(false)) unsupported(cls, "thresholding");
      if (c.variance_type) unsupported(cls, fmt::format("variance_type \"{}\"", *c.variance_type));
      // diffusers maps the deprecated "deis" to dpmsolver++ and "logrho"/"bh1"/"bh2" to midpoint.
      const std::string algorithm = c.algorithm_type.value_or("dpmsolver++");
      if (algorithm != "dpmsolver++" && algorithm != "deis")
        unsupported(cls, fmt::format("algorithm_type \"{}\" (only dpmsolver++)", algorithm));
      const std::string solver = c.solver_type.value_or("midpoint");
      if (solver != "midpoint" && solver != "heun" && solver != "logrho" && solver != "bh1" &&
          solver != "bh2")
        unsupported(cls, fmt::format("solver_type \"{}\"", solver));
      detail::DpmSolverOptions o;
      o.betas = beta_schedule_of(c, /*has_rescale=*/true);
      o.solver_order = c.solver_order.value_or(2);
      if (o.solver_order < 1 || o.solver_order > 3)
        unsupported(cls, fmt::format("solver_order {}", o.solver_order));
      o.prediction_type = prediction;
      o.heun = solver == "heun";
      o.lower_order_final = c.lower_order_final.value_or(true);
      o.euler_at_final = c.euler_at_final.value_or(false);
      o.use_karras_sigmas = karras || c.use_karras_sigmas.value_or(false);
      o.sigma_min = c.sigma_min;
      o.sigma_max = c.sigma_max;
      o.final_sigma_min = final_sigma_min(c);
      o.lambda_min_clipped = c.lambda_min_clipped.value_or(-std::numeric_limits<double>::infinity());
      o.timestep_spacing = c.timestep_spacing.value_or(TimestepSpacing::kLinspace);
      o.steps_offset = c.steps_offset;
      return detail::make_dpm_solver(o);
    }
  }
  throw Error(ErrorKind::kInternal, "make_scheduler: unknown scheduler kind");
}

}  // namespace sdrt::schedulers
