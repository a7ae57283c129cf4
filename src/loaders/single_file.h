// Single-file SD 1.x / 2.x / XL checkpoints in the original CompVis / Stability layout, mapped onto diffusers
// names. A loader: it sits above io/ (the tensor containers) and text/ (the tokenizer configuration and the
// built-in CLIP vocabulary that convert_to_diffusers writes out as tokenizer/).
//
//   model.diffusion_model.*          UNet (model_ema.diffusion_model<key without dots> when EMA is stored)
//   first_stage_model.*              VAE (encoder.down.N.block.M..., decoder.up.N reversed, mid.attn_1.q...)
//   cond_stage_model.transformer.*   SD 1.x text encoder: CLIP ViT-L/14, already in transformers' names
//   cond_stage_model.model.*         SD 2.x text encoder: OpenCLIP ViT-H (fused attn.in_proj, resblocks)
//   conditioner.embedders.0.transformer.*   SDXL base: CLIP ViT-L/14 -> text_encoder
//   conditioner.embedders.1.model.*         SDXL base: OpenCLIP ViT-bigG -> text_encoder_2 (with projection)
//   conditioner.embedders.0.model.*         SDXL refiner: bigG alone -> text_encoder_2 (no text_encoder)
//   model.diffusion_model.label_emb.0.{0,2}.*  SDXL: the UNet's add_embedding (pooled text + time ids)
//
// Reading one is a plan: from the tensor names and shapes (headers only) it derives the diffusers configs
// and, for every diffusers tensor, the original key it comes from. What shapes cannot tell comes from SD's
// conventions:
//   - family: the text encoders' layout (OpenCLIP -> SD 2.x; conditioner.embedders -> SDXL, bigG as embedder
//     0 -> the refiner); without one, label_emb -> SDXL, else linear proj_in / 1024-wide context;
//   - UNet heads: SD 1.x 8 per attention; SD 2.x / XL head dim 64 (heads = max(1, width / 64));
//   - text encoder heads: head dim 64 (ViT-L 768 -> 12, ViT-H 1024 -> 16, bigG 1280 -> 20); max(1, width /
//     64) below that;
//   - GroupNorm groups: 32 when every width is a multiple of 32, else the widths' gcd (tiny test models);
//   - SD 2.x text encoder: the penultimate layer, as diffusers' converted SD 2.x models (its last resblock is
//     dropped, then ln_final applies); SDXL keeps every layer of both encoders (its pipeline takes
//     hidden_states[-2] itself, and the pooled output needs the last layer);
//   - SDXL time ids: 6 (base: original size, crop, target size) or 5 (refiner: the aesthetic score instead of
//     the target size), so addition_time_embed_dim = (label_emb input width - pooled width) / time ids;
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

enum class SdFamily { kSd1, kSd2, kSdxl, kSdxlRefiner };
const char* sd_family_name(SdFamily family);  // "SD 1.x", "SD 2.x", "SDXL", "SDXL refiner"
bool is_sdxl(SdFamily family);                // base or refiner

struct SingleFileOptions {
  std::optional<std::string> prediction_type;  // "epsilon" | "v_prediction": wins over the sidecar .yaml
  bool prefer_ema = true;                      // model_ema.* weights when the file has them
  bool text_encoder_only = false;              // plan (and require) the text encoder(s) alone
};

// One diffusers tensor: the original key it comes from.
struct MappedTensor {
  std::string source;      // original key
  Shape shape;             // diffusers shape
  int part = -1;           // 0, 1, 2: the q / k / v third of a fused in_proj along dim 0; -1: all of it
  bool transpose = false;  // a matrix stored transposed (OpenCLIP's text_projection [hidden, projection])
};

// One converted component: its diffusers config and tensors.
struct MappedComponent {
  std::string name;                             // "unet", "vae", "text_encoder", "text_encoder_2"
  std::string class_name;                       // "UNet2DConditionModel", "CLIPTextModelWithProjection", ...
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

  // CLIP ViT-L (SD 1.x, SDXL base) or OpenCLIP ViT-H (SD 2.x); empty for the SDXL refiner.
  const std::optional<MappedComponent>& text_encoder() const { return text_encoder_; }
  // SDXL's OpenCLIP ViT-bigG as CLIPTextModelWithProjection (text_projection.weight [projection, hidden]);
  // empty for SD 1.x / 2.x.
  const std::optional<MappedComponent>& text_encoder_2() const { return text_encoder_2_; }
  const std::optional<MappedComponent>& unet() const { return unet_; }
  const std::optional<MappedComponent>& vae() const { return vae_; }
  // The planned components in diffusers' order (text_encoder, text_encoder_2, unet, vae), those present.
  std::vector<const MappedComponent*> components() const;
  // scheduler_config.json of the family (SD 1.5 / 2.1's PNDMScheduler, SDXL 1.0's EulerDiscreteScheduler)
  // with this file's prediction type.
  nlohmann::json scheduler_config() const;
  // model_index.json's pipeline fields: "_class_name" (StableDiffusionPipeline, StableDiffusionXLPipeline or,
  // for the refiner, StableDiffusionXLImg2ImgPipeline); SDXL adds "force_zeros_for_empty_prompt" (base true,
  // refiner false) and "requires_aesthetics_score" (base false, refiner true).
  nlohmann::json pipeline_config() const;
  // tokenizer/: SD 1.x and SDXL pad with <|endoftext|>, SD 2.x with "!".
  text::ClipTokenizerConfig tokenizer_config() const;
  // SDXL's tokenizer_2/ (the bigG encoder's): pads with "!".
  text::ClipTokenizerConfig tokenizer_2_config() const;
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
  std::optional<MappedComponent> text_encoder_, text_encoder_2_, unet_, vae_;
};

// Writes `file` as a diffusers folder at `output` (it must not exist or be an empty folder; a symbolic link
// to one is written through): model_index.json, configs, one safetensors per component, and tokenizer/ (and
// SDXL's tokenizer_2/) from the built-in CLIP vocabulary; the refiner's missing text_encoder / tokenizer are
// null entries in model_index.json, as in diffusers' refiner folders. The folder is filled under a temporary
// sibling name and renamed at the end; on an error or an interrupt (io/interrupt.h, kCancelled) nothing is
// left.
void convert_to_diffusers(const SingleFile& file, const std::filesystem::path& output);

}  // namespace sdrt::loaders
