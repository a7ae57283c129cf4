// libFuzzer target for the A1111 emphasis parser: any bytes either throw sdrt::Error or give pieces that hold
// only bytes of the prompt, with finite weights within ±100 and no two neighbours of equal weight.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sdrt/error.h"
#include "text/prompt_attention.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view prompt(reinterpret_cast<const char*>(data), size);
  try {
    const auto pieces = sdrt::text::parse_prompt_attention(prompt);
    if (pieces.empty()) std::abort();
    size_t bytes = 0;
    for (size_t i = 0; i < pieces.size(); ++i) {
      const auto& piece = pieces[i];
      bytes += piece.text.size();
      if (!(std::fabs(piece.weight) <= 100)) std::abort();
      if (piece.is_break && (piece.text != "BREAK" || piece.weight != 1.0)) std::abort();
      if (i > 0 && !piece.is_break && !pieces[i - 1].is_break && piece.weight == pieces[i - 1].weight)
        std::abort();
    }
    if (bytes > size && !(size == 0 && bytes == 0)) std::abort();
  } catch (const sdrt::Error&) {
    // rejected prompt: expected
  }
  return 0;
}
