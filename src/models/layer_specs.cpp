#include "models/layer_specs.h"

#include <fmt/format.h>

#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models {

Conv2dSpec Conv2dSpec::same(std::string name, int64_t in, int64_t out, int64_t kernel, int64_t stride,
                            int64_t padding) {
  const int64_t p = padding < 0 ? kernel / 2 : padding;
  return {std::move(name), in, out, kernel, stride, p, p, p, p};
}

void append_weights(std::vector<WeightSpec>& out, const LinearSpec& s) {
  const auto legacy = [&](const char* suffix) {
    return s.legacy_name.empty() ? std::string() : s.legacy_name + suffix;
  };
  out.push_back({s.name + ".weight",
                 s.storage == LinearStorage::kConv1x1 ? Shape{s.out, s.in, 1, 1} : Shape{s.out, s.in},
                 legacy(".weight")});
  if (s.bias) out.push_back({s.name + ".bias", {s.out}, legacy(".bias")});
}

void append_weights(std::vector<WeightSpec>& out, const Conv2dSpec& s) {
  out.push_back({s.name + ".weight", {s.out, s.in, s.kernel, s.kernel}});
  out.push_back({s.name + ".bias", {s.out}});
}

void append_weights(std::vector<WeightSpec>& out, const GroupNormSpec& s) {
  out.push_back({s.name + ".weight", {s.channels}});
  out.push_back({s.name + ".bias", {s.channels}});
}

void append_weights(std::vector<WeightSpec>& out, const LayerNormSpec& s) {
  out.push_back({s.name + ".weight", {s.dim}});
  out.push_back({s.name + ".bias", {s.dim}});
}

void append_weights(std::vector<WeightSpec>& out, const ResnetSpec& s) {
  append_weights(out, s.norm1);
  append_weights(out, s.conv1);
  if (s.time_emb_proj) append_weights(out, *s.time_emb_proj);
  append_weights(out, s.norm2);
  append_weights(out, s.conv2);
  if (s.conv_shortcut) append_weights(out, *s.conv_shortcut);
}

ResnetSpec describe_resnet(const std::string& prefix, int64_t in, int64_t out, int64_t groups, float eps,
                           int64_t time_embed_dim, double output_scale_factor) {
  ResnetSpec r;
  r.norm1 = {prefix + ".norm1", groups, in, eps};
  r.conv1 = Conv2dSpec::same(prefix + ".conv1", in, out, 3);
  if (time_embed_dim > 0) r.time_emb_proj = LinearSpec{prefix + ".time_emb_proj", time_embed_dim, out};
  r.norm2 = {prefix + ".norm2", groups, out, eps};
  r.conv2 = Conv2dSpec::same(prefix + ".conv2", out, out, 3);
  if (in != out) r.conv_shortcut = Conv2dSpec::same(prefix + ".conv_shortcut", in, out, 1, 1, 0);
  r.output_scale_factor = output_scale_factor;
  return r;
}

void WeightSource::check(const std::string& key, const Shape& expected) const {
  const std::string name = key_prefix + key;
  if (!store.contains(name))
    throw Error(ErrorKind::kModel, fmt::format("{}: missing tensor \"{}\" (expected by {})",
                                               store.source().string(), name, config_source));
  const auto& info = store.info(name);
  if (info.shape != expected)
    throw Error(ErrorKind::kModel,
                fmt::format("{}: tensor \"{}\" has shape {} but {} implies {}", store.file_of(name).string(),
                            name, shape_to_string(info.shape), config_source, shape_to_string(expected)));
}

Tensor WeightSource::get(const std::string& key, const Shape& expected, DType dtype) const {
  check(key, expected);
  return load(key, dtype);
}

Tensor WeightSource::load(const std::string& key, DType dtype) const {
  return store.load(key_prefix + key, dtype);
}

WeightSource::StoredBytes WeightSource::bytes(const std::string& key) const {
  const auto b = store.bytes(key_prefix + key);
  return {b.data, b.dtype, b.numel};
}

WeightSource::LinearKeys WeightSource::linear(const LinearSpec& s) const {
  std::string name = s.name;
  const auto stored = [&](const std::string& key) { return store.contains(key_prefix + key); };
  if (!s.legacy_name.empty() && !stored(name + ".weight") && stored(s.legacy_name + ".weight"))
    name = s.legacy_name;
  LinearKeys keys{name + ".weight", s.bias ? name + ".bias" : "", {s.out, s.in}};
  const Shape conv_shape{s.out, s.in, 1, 1};
  if (s.storage == LinearStorage::kConv1x1 || (s.storage == LinearStorage::kEither && stored(keys.weight) &&
                                               store.info(key_prefix + keys.weight).shape == conv_shape))
    keys.weight_shape = conv_shape;
  check(keys.weight, keys.weight_shape);
  if (s.bias) check(keys.bias, {s.out});
  return keys;
}

void WeightSource::check(const Conv2dSpec& s) const {
  check(s.name + ".weight", {s.out, s.in, s.kernel, s.kernel});
  check(s.name + ".bias", {s.out});
}

void WeightSource::check(const GroupNormSpec& s) const {
  if (s.groups <= 0 || s.channels % s.groups != 0)
    throw Error(ErrorKind::kModel, fmt::format("{}: {} channels at \"{}\" are not divisible into {} groups",
                                               config_source, s.channels, s.name, s.groups));
  check(s.name + ".weight", {s.channels});
  check(s.name + ".bias", {s.channels});
}

void WeightSource::check(const LayerNormSpec& s) const {
  check(s.name + ".weight", {s.dim});
  check(s.name + ".bias", {s.dim});
}

}  // namespace sdrt::models
