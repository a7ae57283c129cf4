// libFuzzer target for a diffusers tokenizer/ folder (vocab.json, merges.txt, tokenizer_config.json,
// special_tokens_map.json; the input holds them in that order, separated by "\n@@@\n"): the folder must
// either be rejected with sdrt::Error or give a tokenizer whose ids are non-negative, max_length long.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_util.h"
#include "sdrt/error.h"
#include "text/clip_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = sdrt::fuzz::scratch_dir();
  const char* files[] = {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"};
  const auto parts = sdrt::fuzz::split(data, size, "\n@@@\n", 4);
  for (size_t i = 0; i < 4; ++i) {
    std::error_code ec;
    if (i < parts.size())
      sdrt::fuzz::write_file(dir / files[i], parts[i]);
    else
      std::filesystem::remove(dir / files[i], ec);
  }
  try {
    const auto tok = sdrt::text::ClipTokenizer::from_folder(dir);
    // A bounded max_length keeps one input's work bounded; larger ones are accepted but not encoded.
    if (tok.max_length() > 4096) return 0;
    for (const char* prompt : {"a photo of a cat", "ab ba, <|endoftext|> \xc3\xa9\xe2\x9c\x93 !!", ""}) {
      const auto ids = tok.encode(prompt);
      if (static_cast<int>(ids.size()) != tok.max_length()) std::abort();
      for (const int32_t id : ids)
        if (id < 0) std::abort();
      for (const int32_t id : tok.encode_words(prompt))
        if (id < 0) std::abort();
    }
  } catch (const sdrt::Error&) {
    // rejected input: expected
  }
  return 0;
}
