#include "loaders/model_source.h"

#include <memory>

#include <fmt/format.h>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "io/regular_file.h"
#include "loaders/single_file.h"
#include "sdrt/error.h"

namespace sdrt::loaders {

namespace {

namespace fs = std::filesystem;

// A component of a diffusers folder: <dir>/config.json and <dir>/<stem>[.fp16].safetensors (or sharded).
ComponentSource folder_component(const io::DiffusersFolder& folder, const std::string& name,
                                 const std::string& stem, bool prefer_fp16) {
  const fs::path dir = folder.component_dir(name);
  const fs::path config_path = dir / "config.json";
  return {name, io::read_json_file(config_path), config_path.string(),
          [dir, stem, prefer_fp16] { return io::WeightStore::from_component_dir(dir, stem, prefer_fp16); }};
}

// A component of a single file; the planned file is shared by every component's opener.
ComponentSource file_component(const std::shared_ptr<const SingleFile>& file,
                               const MappedComponent& component) {
  return {component.name, component.config, fmt::format("{} ({})", file->path().string(), component.name),
          [file, &component] { return file->store(component); }};
}

PipelineConfig folder_pipeline_config(const fs::path& root, const io::DiffusersFolder& folder) {
  PipelineConfig p;
  p.class_name = folder.pipeline_class();
  const fs::path index_path = root / "model_index.json";
  const auto index = io::read_json_file(index_path);
  p.force_zeros_for_empty_prompt =
      io::get_bool(index, "force_zeros_for_empty_prompt", false, index_path.string());
  p.requires_aesthetics_score = io::get_bool(index, "requires_aesthetics_score", false, index_path.string());
  return p;
}

ModelSource resolve_folder(const fs::path& path, const SourceOptions& options) {
  const auto folder = io::DiffusersFolder::open(path);
  std::string name = fs::absolute(path).filename().string();
  if (name.empty()) name = fs::absolute(path).parent_path().filename().string();  // "dir/"
  ModelSource source{path, name, folder_pipeline_config(path, folder), {}, {}, {}, {}, {}};
  // SDXL lists text_encoder_2 / tokenizer_2 (the refiner only those); each encoder has its own tokenizer.
  for (const auto& [encoder, tokenizer] : {std::pair<std::string, std::string>{"text_encoder", "tokenizer"},
                                           {"text_encoder_2", "tokenizer_2"}}) {
    if (!folder.find(encoder)) continue;
    if (!folder.find(tokenizer))
      throw Error(ErrorKind::kModel,
                  fmt::format("{}: model_index.json lists {} but no {}", path.string(), encoder, tokenizer));
    source.text_encoders.push_back({text::ClipTokenizer::from_folder(folder.component_dir(tokenizer)),
                                    folder_component(folder, encoder, "model", options.prefer_fp16)});
  }
  if (source.text_encoders.empty())
    throw Error(ErrorKind::kModel,
                fmt::format("{}: model_index.json lists no text_encoder or text_encoder_2", path.string()));
  if (options.text_encoder_only) return source;
  source.unet = folder_component(folder, "unet", "diffusion_pytorch_model", options.prefer_fp16);
  source.vae = folder_component(folder, "vae", "diffusion_pytorch_model", options.prefer_fp16);
  const fs::path scheduler = folder.component_dir("scheduler") / "scheduler_config.json";
  source.scheduler_config = io::read_text_file(scheduler);
  source.scheduler_label = scheduler.string();
  return source;
}

ModelSource resolve_single_file(const fs::path& path, const SourceOptions& options) {
  const auto file = std::make_shared<const SingleFile>(SingleFile::open(
      path, {.prediction_type = options.prediction_type, .text_encoder_only = options.text_encoder_only}));
  ModelSource source{path, path.stem().string(), {}, {}, {}, {}, {}, {}};
  const auto index = file->pipeline_config();
  const std::string label = fmt::format("{} (model_index)", path.string());
  source.pipeline.class_name = io::get_string(index, "_class_name", source.pipeline.class_name, label);
  source.pipeline.force_zeros_for_empty_prompt =
      io::get_bool(index, "force_zeros_for_empty_prompt", false, label);
  source.pipeline.requires_aesthetics_score = io::get_bool(index, "requires_aesthetics_score", false, label);
  // SDXL: ViT-L (absent in the refiner) and bigG, each with its tokenizer.
  if (file->text_encoder())
    source.text_encoders.push_back({text::ClipTokenizer::builtin(file->tokenizer_config()),
                                    file_component(file, *file->text_encoder())});
  if (file->text_encoder_2())
    source.text_encoders.push_back({text::ClipTokenizer::builtin(file->tokenizer_2_config()),
                                    file_component(file, *file->text_encoder_2())});
  if (source.text_encoders.empty())
    throw Error(ErrorKind::kModel, fmt::format("{}: no text encoder", path.string()));
  if (options.text_encoder_only) return source;
  source.unet = file_component(file, *file->unet());
  source.vae = file_component(file, *file->vae());
  source.scheduler_config = file->scheduler_config().dump();
  source.scheduler_label = fmt::format("{} (scheduler)", path.string());
  return source;
}

}  // namespace

ModelSource resolve_model(const fs::path& path, const SourceOptions& options) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st))
    throw Error(ErrorKind::kIo, path.string() + (fs::is_symlink(fs::symlink_status(path, ec))
                                                     ? ": is a symbolic link to a missing file or folder"
                                                     : ": no such model folder or checkpoint file"));
  if (!fs::is_regular_file(st) && !fs::is_directory(st))  // a FIFO, a device, a socket
    throw Error(ErrorKind::kIo, fmt::format("{}: is {}, not a model folder or a checkpoint file",
                                            path.string(), io::describe_file_type(path)));
  // Checked before anything is read: the VAE file replaces the model's own.
  if (!options.vae.empty() && !options.text_encoder_only) io::require_regular_file(options.vae);
  ModelSource source =
      fs::is_regular_file(st) ? resolve_single_file(path, options) : resolve_folder(path, options);
  if (source.vae && !options.vae.empty()) {
    const auto vae = std::make_shared<const SingleFile>(SingleFile::open_vae(options.vae));
    source.vae = file_component(vae, *vae->vae());
  }
  return source;
}

}  // namespace sdrt::loaders
