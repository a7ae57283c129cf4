// The files a front end (the sdrt command line, a server) reads and writes next to a Model: the PNG with its
// generation parameters, float32 .npy tensors, and a single-file checkpoint converted to a diffusers folder.
// Every writer goes through a temporary file renamed into place, so a failure never leaves a partial file.
//
//   sdrt::write_png("out.png", image, {{"parameters", model.parameters_text(options)}});
//   sdrt::Tensor noise = sdrt::read_npy("noise.npy");
//   sdrt::convert_checkpoint("v1-5-pruned-emaonly.safetensors", "sd15");
//
// Errors are thrown as sdrt::Error with a message naming the file at fault.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sdrt/model.h"
#include "sdrt/tensor.h"

namespace sdrt {

// PNG text chunks, key -> value (both UTF-8), in file order. A value Latin-1 can represent goes into a tEXt
// chunk, anything else into an iTXt chunk, as AUTOMATIC1111 (through Pillow) writes them; the generation
// parameters travel as key "parameters" (Model::parameters_text).
using PngText = std::vector<std::pair<std::string, std::string>>;

// Writes `image` (8-bit RGB) as a PNG with `text`. Keys must be 1-79 printable ASCII characters without
// leading, trailing or doubled spaces; values valid UTF-8 without NUL. Throws kInvalidArgument for bad
// arguments, kIo naming the path when the file cannot be written.
void write_png(const std::filesystem::path& path, const Image& image, const PngText& text = {});

// Writes `tensor` as a float32 little-endian C-order .npy (F16/BF16 are converted).
void write_npy(const std::filesystem::path& path, const Tensor& tensor);

// Reads a float32 ('<f4') C-order .npy (format 1.0/2.0/3.0); anything else throws naming the file and what
// is wrong.
Tensor read_npy(const std::filesystem::path& path);

struct ConvertOptions {
  // "epsilon" | "v_prediction": what the weights cannot tell; default: a sidecar <checkpoint>.yaml with
  // `parameterization: "v"`, else epsilon.
  std::optional<std::string> prediction_type;
};

// What convert_checkpoint found in the checkpoint.
struct ConvertedCheckpoint {
  std::string family;           // "SD 1.x" | "SD 2.x"
  std::string prediction_type;  // "epsilon" | "v_prediction"
};

// Writes a single-file SD 1.x / 2.x checkpoint in the original CompVis / Stability layout (.safetensors,
// .ckpt) as a diffusers folder at `output_dir` (created; it must not exist or must be an empty folder, a
// symbolic link to one is written through): model_index.json, the components' configs and safetensors (in
// the checkpoint's dtype, EMA weights when stored), scheduler/ and tokenizer/ from the built-in CLIP
// vocabulary. The output is checked before the checkpoint is read; the folder is filled under a temporary
// sibling name and renamed at the end, so an error or an interrupt leaves nothing.
ConvertedCheckpoint convert_checkpoint(const std::filesystem::path& checkpoint,
                                       const std::filesystem::path& output_dir,
                                       const ConvertOptions& options = {});

// ---- Output safety
// The rules every writer above follows: a symbolic link is written through to the file it leads to; an
// existing output that is not a regular file (a FIFO, a device such as /dev/null, a folder, a socket) is
// refused, never replaced; the output's folder must exist and be writable and the temporary name
// (".<name>.tmp-XXXXXX") must fit the file system's limit.
//
// check_output_path applies them before any work (call it before loading a model, not after generating),
// and also refuses an output that is one of the run's `inputs` (same file, through any link or hard link):
// an input may be a file (a checkpoint also stands for its sidecar .yaml) or a folder (a diffusers model:
// every file in it and in its subfolders). Empty paths in `inputs` are ignored. Throws sdrt::Error (kIo, or
// kInvalidArgument for an input) naming the output and what is wrong.
void check_output_path(const std::filesystem::path& output,
                       const std::vector<std::filesystem::path>& inputs = {});

// ---- Interrupting
// request_interrupt(signo) is async-signal-safe (for a SIGINT / SIGTERM / SIGHUP handler): a write in
// progress stops, removes its temporary file (or convert_checkpoint its temporary folder) and throws
// sdrt::Error of kind kCancelled; so does every later write. interrupt_signal() returns the signal (0 when
// none), so that a StepCallback can return false when it is set (Model::denoise then throws kCancelled
// after the current step) and a front end can exit with 128 + signal.
void request_interrupt(int signo) noexcept;
int interrupt_signal() noexcept;

}  // namespace sdrt
