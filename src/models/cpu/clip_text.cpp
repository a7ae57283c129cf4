#include "models/cpu/clip_text.h"

#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "io/safetensors.h"
#include "sdrt/error.h"

namespace sdrt::models::cpu {

namespace ops = sdrt::cpu;

namespace {

ops::Activation cpu_activation(Activation act) {
  switch (act) {
    case Activation::kGelu:
      return ops::Activation::kGelu;
    case Activation::kGeluTanh:
      return ops::Activation::kGeluTanh;
    case Activation::kQuickGelu:
      return ops::Activation::kQuickGelu;
  }
  return ops::Activation::kGelu;
}

}  // namespace

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
  return load(describe_clip_text(config), {weights, config_source, prefix}, embeddings_only);
}

ClipTextModel ClipTextModel::load(const ClipTextDescription& d, const WeightSource& w, bool embeddings_only) {
  ClipTextModel m;
  m.config_ = d.config;
  m.token_embedding_ = w.get(d.token_embedding.key, d.token_embedding.shape);
  m.position_embedding_ = w.get(d.position_embedding.key, d.position_embedding.shape);
  if (d.text_projection)  // beside text_model.*, not under it
    m.text_projection_ = Linear::load({w.store, w.config_source, ""}, *d.text_projection);
  if (embeddings_only) return m;
  for (const auto& l : d.layers)
    m.layers_.push_back({LayerNorm::load(w, l.layer_norm1), LayerNorm::load(w, l.layer_norm2),
                         Linear::load(w, l.q_proj), Linear::load(w, l.k_proj), Linear::load(w, l.v_proj),
                         Linear::load(w, l.out_proj), Linear::load(w, l.fc1), Linear::load(w, l.fc2)});
  m.final_layer_norm_ = LayerNorm::load(w, d.final_layer_norm);
  return m;
}

int64_t ClipTextModel::parameter_count() const {
  int64_t n = token_embedding_.numel() + position_embedding_.numel() + final_layer_norm_.weight.numel() +
              final_layer_norm_.bias.numel();
  for (const auto& l : layers_) {
    for (const LayerNorm* ln : {&l.layer_norm1, &l.layer_norm2}) n += ln->weight.numel() + ln->bias.numel();
    for (const Linear* p : {&l.q_proj, &l.k_proj, &l.v_proj, &l.out_proj, &l.fc1, &l.fc2})
      n += p->weight.numel() + p->bias.numel();
  }
  if (text_projection_) n += text_projection_->weight.numel();
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
  const ops::Activation activation = cpu_activation(c.hidden_act);
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
    l.layer_norm1.forward(xd, h.data(), S);
    l.q_proj.forward(h.data(), q.data(), S);  // q [S, D]
    l.k_proj.forward(h.data(), k.data(), S);  // k [S, D]
    l.v_proj.forward(h.data(), v.data(), S);  // v [S, D]
    ops::attention({.q = q.data(),
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
    l.out_proj.forward(attn.data(), h.data(), S);
    ops::add(xd, h.data(), xd, S * D);
    // MLP block: x += fc2(act(fc1(ln2(x))))
    l.layer_norm2.forward(xd, h.data(), S);
    l.fc1.forward(h.data(), mlp.data(), S);  // [S, I]
    ops::activate(mlp.data(), S * I, activation);
    l.fc2.forward(mlp.data(), h.data(), S);  // [S, D]
    ops::add(xd, h.data(), xd, S * D);
    if (keep_hidden_states) out.hidden_states.push_back(x.to(DType::kF32));
  }

  out.last_hidden_state = Tensor({1, S, D}, DType::kF32);
  final_layer_norm_.forward(xd, out.last_hidden_state.data<float>(), S);

  out.pooler_output = pool(out.last_hidden_state, ids);
  if (auto projected = project(out.pooler_output)) out.text_embeds = std::move(*projected);
  return out;
}

Tensor ClipTextModel::pool(const Tensor& last_hidden_state, std::span<const int32_t> ids) const {
  const auto& c = config_;
  const int64_t S = static_cast<int64_t>(ids.size()), D = c.hidden_size;
  if (last_hidden_state.rank() != 3 || last_hidden_state.dim(1) != S || last_hidden_state.dim(2) != D)
    throw Error(ErrorKind::kInternal, "text encoder: pool() of a hidden state that does not match the ids");
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
  const Tensor h = last_hidden_state.to(DType::kF32);
  Tensor pooled({1, D}, DType::kF32);
  std::memcpy(pooled.data<float>(), h.data<float>() + eos_pos * D, static_cast<size_t>(D) * sizeof(float));
  return pooled;
}

std::optional<Tensor> ClipTextModel::project(const Tensor& pooled) const {
  if (!text_projection_) return std::nullopt;
  return text_projection_->forward(pooled.to(DType::kF32), pooled.dim(0));  // [1, P]
}

}  // namespace sdrt::models::cpu
