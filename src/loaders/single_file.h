// Single-file SD 1.x / 2.x checkpoints in the original CompVis / Stability layout, mapped onto diffusers
// names. A loader: it sits above io/ (the tensor containers) and text/ (the tokenizer configuration and the
// built-in CLIP vocabulary that convert_to_diffusers writes out as tokenizer/).
//
//   model.diffusion_model.*          UNet (model_ema.diffusion_model<key without dots> when EMA is stored)
//   first_stage_model.*              VAE (encoder.down.N.block.M..., decoder.up.N reversed, mid.attn_1.q...)
//   cond_stage_model.transformer.*   SD 1.x text encoder: CLIP ViT-L/14, already in transformers' names
//   cond_stage_model.model.*         SD 2.x text encoder: OpenCLIP ViT-H (fused attn.in_proj, resblocks)
//
// Reading one is a plan: from the tensor names and shapes (headers only) it derives the diffusers configs
// and, for every diffusers tensor, the original key it comes from. What shapes cannot tell comes from SD's
// conventions:
//   - family: the text encoder's layout (OpenCLIP -> SD 2.x); without one, linear proj_in / 1024-wide
//   context;
//   - UNet heads: SD 1.x 8 per attention; SD 2.x head dim 64 (heads = max(1, width / 64): [5, 10, 20, 20]);
//   - text encoder heads: head dim 64 (ViT-L 768 -> 12, ViT-H 1024 -> 16); max(1, width / 64) below that;
//   - GroupNorm groups: 32 when every width is a multiple of 32, else the widths' gcd (tiny test models);
//   - SD 2.x text encoder: the penultimate layer, as diffusers' converted SD 2.x models (its last resblock is
//     dropped, then ln_final applies);
//   - prediction type: epsilon, unless `prediction_type` or a sidecar <checkpoint>.yaml with
//     `parameterization: "v"` says v_prediction (SD 2.x 768-v models cannot be told apart by their weights).
// Tensors load in the checkpoint's dtype (F16/BF16/F32): the converted model costs the file's size, not 2x.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sdrt/tensor.h"
#include "text/clip_tokenizer.h"

namespace sdrt::io {
class WeightStore;  // io/safetensors.h
}  // namespace sdrt::io

namespace sdrt::loaders {

enum class SdFamily { kSd1, kSd2 };
const char* sd_family_name(SdFamily family);  // "SD 1.x", "SD 2.x"

struct SingleFileOptions {
  std::optional<std::string> prediction_type;  // "epsilon" | "v_prediction": wins over the sidecar .yaml
  bool prefer_ema = true;                      // model_ema.* weights when the file has them
  bool text_encoder_only = false;              // plan (and require) the text encoder alone
};

// One diffusers tensor: the original key it comes from.
struct MappedTensor {
  std::string source;  // original key
  Shape shape;         // diffusers shape
  int part = -1;       // 0, 1, 2: the q / k / v third of a fused in_proj along dim 0; -1: all of it
};

// One converted component: its diffusers config and tensors.
struct MappedComponent {
  std::string name;                             // "unet", "vae", "text_encoder"
  std::string class_name;                       // "UNet2DConditionModel", ...
  nlohmann::json config;                        // what config.json would hold
  std::map<std::string, MappedTensor> tensors;  // diffusers name -> origin
  int64_t parameter_count() const;
};

class SingleFile {
 public:
  // Plans a whole checkpoint (.safetensors, or .ckpt/.pt through WeightStore::open). Throws sdrt::Error
  // naming the file for an unknown layout, and the original key for a missing tensor.
  static SingleFile open(const std::filesystem::path& path, const SingleFileOptions& options = {});
  // A VAE on its own (--vae): original layout (encoder.* / decoder.*, optionally first_stage_model.*) or
  // diffusers names. Only vae() is set.
  static SingleFile open_vae(const std::filesystem::path& path);

  SingleFile(SingleFile&&) noexcept;
  SingleFile& operator=(SingleFile&&) noexcept;
  ~SingleFile();

  const std::filesystem::path& path() const { return path_; }
  SdFamily family() const { return family_; }
  const std::string& prediction_type() const { return prediction_type_; }      // epsilon | v_prediction
  const std::string& prediction_source() const { return prediction_source_; }  // why: default / yaml / option
  bool uses_ema() const { return uses_ema_; }

  const std::optional<MappedComponent>& text_encoder() const { return text_encoder_; }
  const std::optional<MappedComponent>& unet() const { return unet_; }
  const std::optional<MappedComponent>& vae() const { return vae_; }
  // scheduler_config.json of the family (SD 1.5 / 2.1's PNDMScheduler) with this file's prediction type.
  nlohmann::json scheduler_config() const;
  // SD 1.x pads with <|endoftext|>, SD 2.x with "!".
  text::ClipTokenizerConfig tokenizer_config() const;
  // The original file's tensor count and stored dtypes ("F16", "F16,F32").
  size_t tensor_count() const;
  std::string stored_dtypes() const;

  // A component's tensors under diffusers names, in the stored dtype.
  std::map<std::string, Tensor> load(const MappedComponent& component) const;
  // The same served as a WeightStore labelled "<file> (<component>)".
  io::WeightStore store(const MappedComponent& component) const;

 private:
  SingleFile();
  std::filesystem::path path_;
  std::shared_ptr<const io::WeightStore> source_;
  SdFamily family_ = SdFamily::kSd1;
  std::string prediction_type_ = "epsilon", prediction_source_ = "default";
  bool uses_ema_ = false;
  std::optional<MappedComponent> text_encoder_, unet_, vae_;
};

// Writes `file` as a diffusers folder at `output` (it must not exist or be an empty folder; a symbolic link
// to one is written through): model_index.json, configs, one safetensors per component, and tokenizer/ from
// the built-in CLIP vocabulary. The folder is filled under a temporary sibling name and renamed at the end;
// on an error or an interrupt (io/interrupt.h, kCancelled) nothing is left.
void convert_to_diffusers(const SingleFile& file, const std::filesystem::path& output);

}  // namespace sdrt::loaders
