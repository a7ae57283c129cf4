// OpenAI's CLIP merges file (bpe_simple_vocab_16e6.txt), compiled into the library so that checkpoints
// without tokenizer files (single-file .safetensors) can still be tokenised.
#pragma once

#include <string>

namespace sdrt::text {

// The decompressed merges file: a header line, then one "left right" merge per line, best rank first.
// Decompressed on first call and cached; the returned reference stays valid for the program's lifetime.
const std::string& builtin_clip_merges_text();

}  // namespace sdrt::text
