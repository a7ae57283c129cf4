// CLIP byte-level BPE tokenizer, producing the same ids as transformers' CLIPTokenizer.
//
// Hand-written because no Debian-packaged library implements CLIP's exact pipeline:
//   normalise (NFC, collapse whitespace runs to one space, Unicode lower-case)
//   -> split on CLIP's pattern
//   <|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
//   -> map each piece's UTF-8 bytes to GPT-2's printable byte alphabet
//   -> BPE with the ranked merges, the last symbol of a word carrying "</w>"
//   -> <|startoftext|> ids... <|endoftext|>, truncated to max_length, padded with the pad token.
// Unicode properties (letter / number / whitespace), NFC and lower-casing come from ICU, adjusted where the
// Unicode versions inside `tokenizers` differ from ICU's (see unicode.cpp). Prompt text containing the
// special tokens behaves as in transformers: they are "added tokens" matched before BPE (see AddedToken
// below).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sdrt::text {

struct ClipTokenizerConfig {
  int max_length = 77;  // tokenizer_config.json "model_max_length"; absent or "unlimited" (1e30) -> 77
  std::string pad_token = "<|endoftext|>";  // SD 1.x folders; SD 2.x folders use "!"
};

class ClipTokenizer {
 public:
  // From a diffusers `tokenizer/` folder: vocab.json + merges.txt + tokenizer_config.json (optional:
  // special_tokens_map.json). Missing or malformed files throw sdrt::Error naming the file.
  static ClipTokenizer from_folder(const std::filesystem::path& dir);
  // The vocabulary compiled into sdrt (OpenAI's bpe_simple_vocab_16e6), for checkpoints without tokenizer
  // files.
  static ClipTokenizer builtin(const ClipTokenizerConfig& config = {});
  // From explicit files (vocab.json, merges.txt); config supplies pad token and max length.
  static ClipTokenizer from_files(const std::filesystem::path& vocab_json,
                                  const std::filesystem::path& merges_txt, const ClipTokenizerConfig& config);

  // Ids without BOS/EOS/padding/truncation, e.g. "a photo" -> {320, 1125}.
  std::vector<int32_t> encode_words(std::string_view text) const;
  // BOS + ids + EOS, truncated (keeping BOS and EOS) and padded to max_length: exactly what diffusers passes
  // to the text encoder (`tokenizer(p, padding="max_length", max_length=77, truncation=True)`).
  std::vector<int32_t> encode(std::string_view text) const;

  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int max_length() const { return config_.max_length; }
  size_t vocab_size() const { return vocab_.size(); }
  // Id of a vocabulary entry (in byte-alphabet form, e.g. "photo</w>"), or -1 when absent.
  int32_t token_id(const std::string& token) const;

 private:
  // A token matched in the text before BPE (tokenizers' "added tokens": bos, eos, unk, pad). `normalized`
  // ones are matched after normalisation (so "<|ENDOFTEXT|>" matches when lower-cased), the others on the raw
  // text (SD 2.x's pad "!" — it then encodes as id 0 instead of "!</w>").
  struct AddedToken {
    std::u32string pattern;  // as matched: normalised already when `normalized`
    int32_t id = -1;
    bool normalized = false;
  };
  // Per-object BPE memo: a copy starts empty so that copies never share mutable state. Not thread-safe.
  struct BpeCache {
    std::unordered_map<std::string, std::vector<int32_t>> words;
    BpeCache() = default;
    BpeCache(const BpeCache&) {}
    BpeCache(BpeCache&&) noexcept = default;
    BpeCache& operator=(const BpeCache&) {
      words.clear();
      return *this;
    }
    BpeCache& operator=(BpeCache&&) noexcept = default;
  };
  struct SpecialTokens;

  ClipTokenizer() = default;
  void load_merges(const std::string& text, size_t skip_lines, size_t max_merges, const std::string& source);
  // Resolves the special ids and added tokens; errors name `source` (the file the tokens came from).
  void finish_setup(const SpecialTokens& specials, const std::string& source);
  std::vector<int32_t> bpe(const std::string& word) const;  // word: UTF-8 bytes of one pre-token
  void encode_plain(std::u32string_view text, std::vector<int32_t>& ids) const;   // after normalisation
  void encode_segment(std::u32string_view raw, std::vector<int32_t>& ids) const;  // before normalisation

  ClipTokenizerConfig config_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<std::string, int32_t> merge_ranks_;  // key: left + ' ' + right
  std::vector<AddedToken> added_;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1, unk_id_ = -1;
  mutable BpeCache cache_;
};

}  // namespace sdrt::text
