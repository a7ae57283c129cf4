#include "models/clip_text.h"

#include <cstring>

#include <fmt/format.h>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "models/layers.h"
#include "sdrt/error.h"

namespace sdrt::models {

ClipTextConfig ClipTextConfig::from_json_file(const std::filesystem::path& path) {
  return from_json(io::read_json_file(path), path.string());
}

ClipTextConfig ClipTextConfig::from_json(const nlohmann::json& j, const std::string& what) {
  ClipTextConfig c;
  // CLIPModel configs nest the text part under "text_config"; CLIPTextModel configs are flat.
  const auto& t = j.contains("text_config") && j["text_config"].is_object() ? j["text_config"] : j;
  c.vocab_size = io::get_int(t, "vocab_size", c.vocab_size, what);
  c.hidden_size = io::get_int(t, "hidden_size", c.hidden_size, what);
  c.intermediate_size = io::get_int(t, "intermediate_size", c.intermediate_size, what);
  c.num_hidden_layers = io::get_int(t, "num_hidden_layers", c.num_hidden_layers, what);
  c.num_attention_heads = io::get_int(t, "num_attention_heads", c.num_attention_heads, what);
  c.max_position_embeddings = io::get_int(t, "max_position_embeddings", c.max_position_embeddings, what);
  c.layer_norm_eps = static_cast<float>(io::get_number(t, "layer_norm_eps", c.layer_norm_eps, what));
  c.eos_token_id = io::get_int(t, "eos_token_id", c.eos_token_id, what);
  c.hidden_act_name = io::get_string(t, "hidden_act", c.hidden_act_name, what);
  if (c.hidden_act_name == "quick_gelu") {
    c.hidden_act = cpu::Activation::kQuickGelu;
  } else if (c.hidden_act_name == "gelu") {
    c.hidden_act = cpu::Activation::kGelu;
  } else if (c.hidden_act_name == "gelu_new" || c.hidden_act_name == "gelu_pytorch_tanh") {
    c.hidden_act = cpu::Activation::kGeluTanh;
  } else {
    throw Error(
        ErrorKind::kUnsupported,
        fmt::format("{}: hidden_act \"{}\" is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh)",
                    what, c.hidden_act_name));
  }
  const auto positive = [&](int64_t v, const char* field) {
    if (v <= 0 || v > (int64_t{1} << 20))
      throw Error(ErrorKind::kFormat, fmt::format("{}: field \"{}\" = {} is out of range", what, field, v));
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_hidden_layers, "num_hidden_layers");
  positive(c.num_attention_heads, "num_attention_heads");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.hidden_size % c.num_attention_heads != 0)
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: hidden_size {} is not divisible by num_attention_heads {}", what,
                            c.hidden_size, c.num_attention_heads));
  return c;
}

std::string clip_text_key_prefix(const io::WeightStore& weights) {
  if (weights.contains("text_model.embeddings.token_embedding.weight")) return "text_model.";
  if (weights.contains("embeddings.token_embedding.weight")) return "";
  throw Error(
      ErrorKind::kModel,
      fmt::format("{}: no CLIP text encoder weights (neither \"embeddings.token_embedding.weight\" nor "
                  "\"text_model.embeddings.token_embedding.weight\")",
                  weights.source().string()));
}

ClipTextModel ClipTextModel::from_folder(const std::filesystem::path& dir, bool embeddings_only) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: text encoder folder not found", dir.string()));
  const auto config_path = dir / "config.json";
  const ClipTextConfig config = ClipTextConfig::from_json_file(config_path);
  const auto weights = io::WeightStore::from_component_dir(dir, "model");
  const std::string prefix = clip_text_key_prefix(weights);
  return from_weights(config, weights, prefix, config_path.string(), embeddings_only);
}

ClipTextModel ClipTextModel::from_weights(const ClipTextConfig& config, const io::WeightStore& weights,
                                          const std::string& prefix, const std::string& config_source,
                                          bool embeddings_only) {
  ClipTextModel m;
  m.config_ = config;
  const int64_t D = config.hidden_size, I = config.intermediate_size;
  const auto w = [&](const std::string& name, const Shape& shape) {
    return load_weight(weights, prefix + name, shape, config_source);
  };
  m.token_embedding_ = w("embeddings.token_embedding.weight", {config.vocab_size, D});
  m.position_embedding_ = w("embeddings.position_embedding.weight", {config.max_position_embeddings, D});
  if (embeddings_only) return m;
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = fmt::format("encoder.layers.{}.", i);
    Layer l;
    l.ln1_w = w(p + "layer_norm1.weight", {D});
    l.ln1_b = w(p + "layer_norm1.bias", {D});
    l.q_w = w(p + "self_attn.q_proj.weight", {D, D});
    l.q_b = w(p + "self_attn.q_proj.bias", {D});
    l.k_w = w(p + "self_attn.k_proj.weight", {D, D});
    l.k_b = w(p + "self_attn.k_proj.bias", {D});
    l.v_w = w(p + "self_attn.v_proj.weight", {D, D});
    l.v_b = w(p + "self_attn.v_proj.bias", {D});
    l.o_w = w(p + "self_attn.out_proj.weight", {D, D});
    l.o_b = w(p + "self_attn.out_proj.bias", {D});
    l.ln2_w = w(p + "layer_norm2.weight", {D});
    l.ln2_b = w(p + "layer_norm2.bias", {D});
    l.fc1_w = w(p + "mlp.fc1.weight", {I, D});
    l.fc1_b = w(p + "mlp.fc1.bias", {I});
    l.fc2_w = w(p + "mlp.fc2.weight", {D, I});
    l.fc2_b = w(p + "mlp.fc2.bias", {D});
    m.layers_.push_back(std::move(l));
  }
  m.final_ln_w_ = w("final_layer_norm.weight", {D});
  m.final_ln_b_ = w("final_layer_norm.bias", {D});
  return m;
}

int64_t ClipTextModel::parameter_count() const {
  int64_t n =
      token_embedding_.numel() + position_embedding_.numel() + final_ln_w_.numel() + final_ln_b_.numel();
  for (const auto& l : layers_) {
    for (const Tensor* t : {&l.ln1_w, &l.ln1_b, &l.q_w, &l.q_b, &l.k_w, &l.k_b, &l.v_w, &l.v_b, &l.o_w,
                            &l.o_b, &l.ln2_w, &l.ln2_b, &l.fc1_w, &l.fc1_b, &l.fc2_w, &l.fc2_b})
      n += t->numel();
  }
  return n;
}

Tensor ClipTextModel::embed(std::span<const int32_t> ids) const {
  const auto& c = config_;
  const int64_t S = static_cast<int64_t>(ids.size()), D = c.hidden_size;
  if (S == 0 || S > c.max_position_embeddings)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("text encoder: {} tokens, expected 1..{}", S, c.max_position_embeddings));
  Tensor x({1, S, D}, DType::kF32);
  float* xd = x.data<float>();
  const float* tok = token_embedding_.data<float>();
  const float* pos = position_embedding_.data<float>();
  for (int64_t s = 0; s < S; ++s) {
    const int32_t id = ids[static_cast<size_t>(s)];
    if (id < 0 || id >= c.vocab_size)
      throw Error(ErrorKind::kInvalidArgument,
                  fmt::format("text encoder: token id {} at position {} is outside the vocabulary of {}", id,
                              s, c.vocab_size));
    for (int64_t d = 0; d < D; ++d) xd[s * D + d] = tok[id * D + d] + pos[s * D + d];
  }
  return x;
}

ClipTextOutput ClipTextModel::forward(std::span<const int32_t> ids, bool keep_hidden_states) const {
  const auto& c = config_;
  if (static_cast<int64_t>(layers_.size()) != c.num_hidden_layers)
    throw Error(ErrorKind::kUnsupported,
                "text encoder: only the embeddings are loaded on the CPU (the layers run "
                "on the GPU); hidden states need a CPU model");
  const int64_t S = static_cast<int64_t>(ids.size()), D = c.hidden_size, I = c.intermediate_size;
  const int64_t H = c.num_attention_heads, head_dim = D / H;
  if (S == 0 || S > c.max_position_embeddings)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("text encoder: {} tokens, expected 1..{}", S, c.max_position_embeddings));

  Tensor x = embed(ids);  // [1, S, D]
  float* xd = x.data<float>();

  ClipTextOutput out;
  if (keep_hidden_states) out.hidden_states.push_back(x.to(DType::kF32));

  std::vector<float> h(static_cast<size_t>(S * D)), q(h.size()), k(h.size()), v(h.size()), attn(h.size());
  std::vector<float> mlp(static_cast<size_t>(S * I));
  for (const Layer& l : layers_) {
    // Self-attention block: x += out_proj(attention(ln1(x)))
    cpu::layer_norm(xd, l.ln1_w.data<float>(), l.ln1_b.data<float>(), h.data(), S, D, c.layer_norm_eps);
    cpu::linear(h.data(), l.q_w.data<float>(), l.q_b.data<float>(), q.data(), S, D, D);  // q [S, D]
    cpu::linear(h.data(), l.k_w.data<float>(), l.k_b.data<float>(), k.data(), S, D, D);  // k [S, D]
    cpu::linear(h.data(), l.v_w.data<float>(), l.v_b.data<float>(), v.data(), S, D, D);  // v [S, D]
    cpu::attention({.q = q.data(),
                    .k = k.data(),
                    .v = v.data(),
                    .out = attn.data(),
                    .seq_q = S,
                    .seq_kv = S,
                    .heads = H,
                    .head_dim = head_dim,
                    .q_stride = D,
                    .k_stride = D,
                    .v_stride = D,
                    .out_stride = D,
                    .causal = true});
    cpu::linear(attn.data(), l.o_w.data<float>(), l.o_b.data<float>(), h.data(), S, D, D);
    cpu::add(xd, h.data(), xd, S * D);
    // MLP block: x += fc2(act(fc1(ln2(x))))
    cpu::layer_norm(xd, l.ln2_w.data<float>(), l.ln2_b.data<float>(), h.data(), S, D, c.layer_norm_eps);
    cpu::linear(h.data(), l.fc1_w.data<float>(), l.fc1_b.data<float>(), mlp.data(), S, D, I);  // [S, I]
    cpu::activate(mlp.data(), S * I, c.hidden_act);
    cpu::linear(mlp.data(), l.fc2_w.data<float>(), l.fc2_b.data<float>(), h.data(), S, I, D);  // [S, D]
    cpu::add(xd, h.data(), xd, S * D);
    if (keep_hidden_states) out.hidden_states.push_back(x.to(DType::kF32));
  }

  out.last_hidden_state = Tensor({1, S, D}, DType::kF32);
  cpu::layer_norm(xd, final_ln_w_.data<float>(), final_ln_b_.data<float>(),
                  out.last_hidden_state.data<float>(), S, D, c.layer_norm_eps);

  // Pooled output at the EOS token. transformers' legacy configs (eos_token_id == 2) take the highest id
  // instead.
  int64_t eos_pos = 0;
  if (c.eos_token_id == 2) {
    for (int64_t s = 1; s < S; ++s)
      if (ids[static_cast<size_t>(s)] > ids[static_cast<size_t>(eos_pos)]) eos_pos = s;
  } else {
    for (int64_t s = 0; s < S; ++s)
      if (ids[static_cast<size_t>(s)] == c.eos_token_id) {
        eos_pos = s;
        break;
      }
  }
  out.pooler_output = Tensor({1, D}, DType::kF32);
  std::memcpy(out.pooler_output.data<float>(), out.last_hidden_state.data<float>() + eos_pos * D,
              static_cast<size_t>(D) * sizeof(float));
  return out;
}

}  // namespace sdrt::models
