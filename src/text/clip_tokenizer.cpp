#include "text/clip_tokenizer.h"

#include <algorithm>
#include <array>
#include <map>
#include <optional>
#include <queue>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "sdrt/error.h"
#include "text/builtin_vocab.h"
#include "text/unicode.h"

namespace sdrt::text {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kBos = "<|startoftext|>";
constexpr const char* kEos = "<|endoftext|>";
constexpr const char* kEndOfWord = "</w>";
// bpe_simple_vocab_16e6.txt holds 262,144 merges; CLIP (and transformers' vocab.json) uses only the first
// 49,152 - 256 - 2 of them: 512 byte symbols + merges + 2 specials = 49,408 ids.
constexpr size_t kBuiltinMerges = 49152 - 256 - 2;
// transformers writes int(1e30) for "no limit"; anything this large means "use CLIP's 77 positions".
constexpr double kUnsetMaxLength = 1e6;
constexpr size_t kCacheLimit = 1 << 16;

// GPT-2's reversible byte -> printable character table: printable Latin-1 bytes map to themselves, the
// remaining 68 bytes (controls, space, DEL, NBSP, soft hyphen) to U+0100 onwards in byte order.
struct ByteAlphabet {
  std::array<std::string, 256> symbol;  // UTF-8 of the character standing for each byte
  std::array<uint8_t, 256> order{};     // bytes in vocabulary order (printable ones first)

  ByteAlphabet() {
    auto printable = [](int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174); };
    size_t n = 0;
    for (int b = 0; b < 256; ++b)
      if (printable(b)) order[n++] = static_cast<uint8_t>(b);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      char32_t c = static_cast<char32_t>(b);
      if (!printable(b)) {
        order[n++] = static_cast<uint8_t>(b);
        c = next++;
      }
      append_utf8(symbol[b], c);
    }
  }
};

const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet table;
  return table;
}

// NFC, then every run of whitespace -> one space, then per-character lower-casing (tokenizers' normaliser
// sequence for CLIP, in that order).
std::u32string normalize(std::u32string_view raw) {
  const std::u32string composed = nfc(std::u32string(raw));
  std::u32string out;
  out.reserve(composed.size());
  for (size_t i = 0; i < composed.size();) {
    if (is_whitespace(composed[i])) {
      out.push_back(U' ');
      while (i < composed.size() && is_whitespace(composed[i])) ++i;
    } else {
      append_lowercase(out, composed[i++]);
    }
  }
  return out;
}

bool starts_with(std::u32string_view s, size_t pos, std::u32string_view prefix) {
  return pos <= s.size() && s.size() - pos >= prefix.size() && s.compare(pos, prefix.size(), prefix) == 0;
}

// The end of the pre-token starting at `i` (a non-space), following CLIP's pattern
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+
// where the first alternative that matches at `i` wins.
size_t pre_token_end(std::u32string_view s, size_t i) {
  static constexpr std::u32string_view kLiterals[] = {U"<|startoftext|>", U"<|endoftext|>"};
  static constexpr std::u32string_view kContractions[] = {U"s", U"t", U"re", U"ve", U"m", U"ll", U"d"};
  for (auto lit : kLiterals)
    if (starts_with(s, i, lit)) return i + lit.size();
  if (s[i] == U'\'') {
    for (auto c : kContractions)
      if (starts_with(s, i + 1, c)) return i + 1 + c.size();
  }
  size_t j = i + 1;
  if (is_letter(s[i])) {
    while (j < s.size() && is_letter(s[j])) ++j;
  } else if (!is_number(s[i])) {
    while (j < s.size() && !is_whitespace(s[j]) && !is_letter(s[j]) && !is_number(s[j])) ++j;
  }
  return j;
}

// ---- special tokens as transformers resolves them ----

// One special-token value from tokenizer_config.json / special_tokens_map.json: a plain string or an
// AddedToken object. transformers de-duplicates these by full equality before adding them, and a string never
// equals an object; the last distinct one added decides whether the token is matched after normalisation.
struct TokenSpec {
  std::string content;
  bool is_string = true;
  bool normalized = false;
  bool special = true;
  // Only compared, not applied: lstrip/rstrip swallow whitespace, which CLIP drops anyway; single_word is set
  // by no CLIP tokenizer.
  bool lstrip = false, rstrip = false, single_word = false;
  std::string origin;  // file it came from, for error messages

  bool operator==(const TokenSpec& o) const {
    if (is_string != o.is_string) return false;
    if (is_string) return content == o.content;
    return content == o.content && normalized == o.normalized && special == o.special && lstrip == o.lstrip &&
           rstrip == o.rstrip && single_word == o.single_word;
  }
  // A string becomes a special AddedToken that is matched on the raw text.
  bool matched_normalized() const { return !is_string && normalized; }
};

TokenSpec string_token(const std::string& content, const std::string& origin) {
  TokenSpec t;
  t.content = content;
  t.origin = origin;
  return t;
}

TokenSpec object_token(const std::string& content, bool normalized, const std::string& origin) {
  TokenSpec t = string_token(content, origin);
  t.is_string = false;
  t.normalized = normalized;
  return t;
}

// `forced_special`: special_tokens_map.json entries are always special; tokenizer_config.json objects carry
// their own "special" flag. An absent "normalized" defaults to !special, as for tokenizers' AddedToken.
TokenSpec parse_token(const json& v, const std::string& key, std::optional<bool> forced_special,
                      const std::string& origin) {
  if (v.is_string()) return string_token(v.get<std::string>(), origin);
  if (!v.is_object())
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: field \"{}\" must be a string or an object with \"content\"", origin, key));
  const std::string what = fmt::format("{} ({})", origin, key);
  TokenSpec t;
  t.is_string = false;
  t.origin = origin;
  t.content = io::require_string(v, "content", what);
  t.special = forced_special ? *forced_special : io::get_bool(v, "special", false, what);
  t.normalized = io::get_bool(v, "normalized", !t.special, what);
  t.lstrip = io::get_bool(v, "lstrip", false, what);
  t.rstrip = io::get_bool(v, "rstrip", false, what);
  t.single_word = io::get_bool(v, "single_word", false, what);
  return t;
}

constexpr std::array<const char*, 4> kSpecialKeys = {"bos_token", "eos_token", "unk_token", "pad_token"};

int parse_max_length(const json& cfg, const std::string& origin) {
  auto it = cfg.find("model_max_length");
  if (it == cfg.end() || it->is_null()) return 77;
  if (!it->is_number())
    throw Error(ErrorKind::kFormat, fmt::format("{}: field \"model_max_length\" must be a number", origin));
  const double v = it->get<double>();
  if (v >= kUnsetMaxLength) return 77;
  if (v < 2 || v != static_cast<double>(static_cast<int>(v)))
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: model_max_length must be an integer >= 2 (room for <|startoftext|> and "
                            "<|endoftext|>), got {}",
                            origin, it->dump()));
  return static_cast<int>(v);
}

std::unordered_map<std::string, int32_t> parse_vocab(const json& j, const std::string& origin) {
  if (!j.is_object())
    throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object mapping tokens to ids", origin));
  std::unordered_map<std::string, int32_t> vocab;
  vocab.reserve(j.size());
  for (const auto& [token, id] : j.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: id of token \"{}\" must be a non-negative integer, got {}", origin, token,
                              id.dump()));
    vocab.emplace(token, static_cast<int32_t>(id.get<int64_t>()));
  }
  return vocab;
}

}  // namespace

// Special tokens after resolution: the four named contents and every added token with its match mode.
struct ClipTokenizer::SpecialTokens {
  std::array<TokenSpec, 4> named;                               // bos, eos, unk, pad
  std::vector<std::pair<TokenSpec, int32_t>> added_by_decoder;  // tokenizer_config "added_tokens_decoder"
};

// ---- construction ----

void ClipTokenizer::load_merges(const std::string& text, size_t skip_lines, size_t max_merges,
                                const std::string& source) {
  size_t line_no = 0, rank = 0, pos = 0;
  while (pos < text.size() && rank < max_merges) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    // tokenizers skips "#version" lines anywhere; OpenAI's file has a different first line.
    if (line_no <= skip_lines || line.starts_with("#version")) continue;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
        line.find(' ', space + 1) != std::string_view::npos)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: line {}: expected two space-separated symbols, got \"{}\"", source,
                              line_no, line));
    const std::string left(line.substr(0, space)), right(line.substr(space + 1));
    for (const std::string& tok : {left, right, left + right}) {
      if (!vocab_.contains(tok))
        throw Error(ErrorKind::kFormat,
                    fmt::format("{}: line {}: merge \"{}\" uses token \"{}\" that is not in the vocabulary",
                                source, line_no, line, tok));
    }
    merge_ranks_[left + ' ' + right] = static_cast<int32_t>(rank++);  // a repeated pair keeps its last rank
  }
}

void ClipTokenizer::finish_setup(const SpecialTokens& specials, const std::string& source) {
  auto id_of = [&](const TokenSpec& t, const char* key) {
    auto it = vocab_.find(t.content);
    if (it == vocab_.end())
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: {} \"{}\" is not in the vocabulary ({})",
                              t.origin.empty() ? source : t.origin, key, t.content, source));
    return it->second;
  };

  bos_id_ = id_of(specials.named[0], "bos_token");
  eos_id_ = id_of(specials.named[1], "eos_token");
  unk_id_ = id_of(specials.named[2], "unk_token");
  pad_id_ = id_of(specials.named[3], "pad_token");
  const std::array<int32_t, 4> named_ids = {bos_id_, eos_id_, unk_id_, pad_id_};

  // Added tokens in the order transformers adds them; for a repeated content the last one decides.
  std::vector<std::pair<TokenSpec, int32_t>> order = specials.added_by_decoder;
  std::vector<TokenSpec> from_keys;
  for (size_t k = 0; k < kSpecialKeys.size(); ++k) {
    const TokenSpec& t = specials.named[k];
    const auto& decoder = specials.added_by_decoder;
    const bool in_decoder = std::any_of(decoder.begin(), decoder.end(),
                                        [&](const auto& d) { return d.first.content == t.content; });
    if (in_decoder || std::find(from_keys.begin(), from_keys.end(), t) != from_keys.end()) continue;
    from_keys.push_back(t);
    order.emplace_back(t, named_ids[k]);
  }

  std::map<std::string, AddedToken> by_content;
  std::vector<std::string> content_order;
  for (const auto& [t, id] : order) {
    if (!by_content.contains(t.content)) content_order.push_back(t.content);
    AddedToken a;
    a.id = id;
    a.normalized = t.matched_normalized();
    // Normalised tokens are compared with normalised text, so their own text is normalised too.
    a.pattern = a.normalized ? normalize(utf8_to_u32(t.content)) : utf8_to_u32(t.content);
    by_content[t.content] = a;
  }
  added_.clear();
  for (const auto& c : content_order)
    if (!by_content[c].pattern.empty()) added_.push_back(by_content[c]);

  config_.pad_token = specials.named[3].content;
  if (config_.max_length < 2)
    throw Error(ErrorKind::kInvalidArgument,
                fmt::format("{}: max_length {} leaves no room for <|startoftext|> and <|endoftext|>", source,
                            config_.max_length));
  cache_.words.clear();
}

namespace {

// bos/eos as in the SD 1.x tokenizer folders (matched after normalisation); a pad token other than eos is a
// plain string, as SD 2.x's "!" is.
std::array<TokenSpec, 4> default_specials(const ClipTokenizerConfig& config) {
  TokenSpec pad =
      config.pad_token == kEos ? object_token(kEos, true, "") : string_token(config.pad_token, "");
  return {object_token(kBos, true, ""), object_token(kEos, true, ""), object_token(kEos, true, ""), pad};
}

}  // namespace

ClipTokenizer ClipTokenizer::builtin(const ClipTokenizerConfig& config) {
  const ByteAlphabet& bytes = byte_alphabet();
  const std::string& text = builtin_clip_merges_text();
  ClipTokenizer tok;
  tok.config_ = config;
  tok.vocab_.reserve(kBuiltinMerges + 512 + 2);
  int32_t next = 0;
  for (uint8_t b : bytes.order) tok.vocab_[bytes.symbol[b]] = next++;
  for (uint8_t b : bytes.order) tok.vocab_[bytes.symbol[b] + kEndOfWord] = next++;
  // The merged symbols join the vocabulary in rank order (the first line of the file is a header).
  size_t pos = text.find('\n') + 1;
  for (size_t n = 0; n < kBuiltinMerges && pos < text.size(); ++n) {
    const size_t end = std::min(text.find('\n', pos), text.size());
    std::string merged = text.substr(pos, end - pos);
    merged.erase(std::remove(merged.begin(), merged.end(), ' '), merged.end());
    tok.vocab_[merged] = next++;
    pos = end + 1;
  }
  tok.vocab_[kBos] = next++;
  tok.vocab_[kEos] = next++;
  tok.merge_ranks_.reserve(kBuiltinMerges);
  tok.load_merges(text, 1, kBuiltinMerges, "built-in CLIP vocabulary");
  SpecialTokens specials;
  specials.named = default_specials(config);
  tok.finish_setup(specials, "built-in CLIP vocabulary");
  return tok;
}

ClipTokenizer ClipTokenizer::from_files(const fs::path& vocab_json, const fs::path& merges_txt,
                                        const ClipTokenizerConfig& config) {
  ClipTokenizer tok;
  tok.config_ = config;
  tok.vocab_ = parse_vocab(io::read_json_file(vocab_json), vocab_json.string());
  tok.load_merges(io::read_text_file(merges_txt), 0, SIZE_MAX, merges_txt.string());
  SpecialTokens specials;
  specials.named = default_specials(config);
  tok.finish_setup(specials, vocab_json.string());
  return tok;
}

ClipTokenizer ClipTokenizer::from_folder(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: tokenizer folder not found", dir.string()));
  const fs::path vocab_path = dir / "vocab.json", merges_path = dir / "merges.txt";
  const fs::path config_path = dir / "tokenizer_config.json", map_path = dir / "special_tokens_map.json";

  ClipTokenizer tok;
  const std::string merges = io::read_text_file(merges_path);  // a missing file fails before the slow parse
  tok.vocab_ = parse_vocab(io::read_json_file(vocab_path), vocab_path.string());
  tok.load_merges(merges, 0, SIZE_MAX, merges_path.string());

  // transformers' precedence: defaults < tokenizer_config.json < special_tokens_map.json, except that a
  // config with "added_tokens_decoder" (written by transformers >= 4.34) makes it ignore the map file.
  SpecialTokens specials;
  const std::array<const char*, 4> defaults = {kBos, kEos, kEos, kEos};
  for (size_t k = 0; k < 4; ++k) specials.named[k] = string_token(defaults[k], config_path.string());
  json cfg = json::object();
  if (fs::exists(config_path, ec)) {
    cfg = io::read_json_file(config_path);
    if (!cfg.is_object())
      throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", config_path.string()));
  }
  for (size_t k = 0; k < 4; ++k) {
    auto it = cfg.find(kSpecialKeys[k]);
    if (it != cfg.end() && !it->is_null())
      specials.named[k] = parse_token(*it, kSpecialKeys[k], std::nullopt, config_path.string());
  }
  auto decoder = cfg.find("added_tokens_decoder");
  if (decoder != cfg.end() && !decoder->is_null()) {
    if (!decoder->is_object())
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: field \"added_tokens_decoder\" must be an object", config_path.string()));
    std::vector<std::pair<int64_t, TokenSpec>> entries;
    for (const auto& [key, value] : decoder->items()) {
      int64_t id = -1;
      try {
        id = std::stoll(key);
      } catch (const std::exception&) {
      }
      if (id < 0 || id > INT32_MAX)
        throw Error(ErrorKind::kFormat, fmt::format("{}: added_tokens_decoder key \"{}\" is not a token id",
                                                    config_path.string(), key));
      entries.emplace_back(id,
                           parse_token(value, "added_tokens_decoder", std::nullopt, config_path.string()));
    }
    std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [id, t] : entries) {
      auto it = tok.vocab_.find(t.content);  // a token already in the vocabulary keeps its vocabulary id
      specials.added_by_decoder.emplace_back(t,
                                             it != tok.vocab_.end() ? it->second : static_cast<int32_t>(id));
    }
  } else if (fs::exists(map_path, ec)) {
    const json map = io::read_json_file(map_path);
    if (!map.is_object())
      throw Error(ErrorKind::kFormat, fmt::format("{}: expected a JSON object", map_path.string()));
    for (size_t k = 0; k < 4; ++k) {
      auto it = map.find(kSpecialKeys[k]);
      if (it != map.end() && !it->is_null())
        specials.named[k] = parse_token(*it, kSpecialKeys[k], true, map_path.string());
    }
  }
  tok.config_.max_length = parse_max_length(cfg, config_path.string());
  tok.finish_setup(specials, vocab_path.string());
  return tok;
}

// ---- encoding ----

int32_t ClipTokenizer::token_id(const std::string& token) const {
  auto it = vocab_.find(token);
  return it == vocab_.end() ? -1 : it->second;
}

std::vector<int32_t> ClipTokenizer::bpe(const std::string& word) const {
  if (auto it = cache_.words.find(word); it != cache_.words.end()) return it->second;

  // Symbols form a linked list; pairs wait in a heap ordered by (merge rank, position) so that the best
  // merge, leftmost among equals, is applied first — the same order as tokenizers' BPE.
  const ByteAlphabet& bytes = byte_alphabet();
  struct Symbol {
    std::string text;
    int prev, next;
  };
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  for (size_t i = 0; i < word.size(); ++i)
    syms.push_back({bytes.symbol[static_cast<uint8_t>(word[i])], static_cast<int>(i) - 1,
                    i + 1 < word.size() ? static_cast<int>(i) + 1 : -1});
  if (!syms.empty()) syms.back().text += kEndOfWord;

  auto rank_of = [&](int left) -> int32_t {
    const int right = syms[left].next;
    if (right < 0) return -1;
    auto it = merge_ranks_.find(syms[left].text + ' ' + syms[right].text);
    return it == merge_ranks_.end() ? -1 : it->second;
  };
  using Pair = std::pair<int32_t, int>;  // (rank, left position)
  std::priority_queue<Pair, std::vector<Pair>, std::greater<>> heap;
  auto push = [&](int left) {
    if (left < 0) return;
    if (const int32_t r = rank_of(left); r >= 0) heap.emplace(r, left);
  };
  for (int i = 0; i < static_cast<int>(syms.size()); ++i) push(i);

  std::vector<bool> alive(syms.size(), true);
  while (!heap.empty()) {
    const auto [rank, left] = heap.top();
    heap.pop();
    if (!alive[left] || rank_of(left) != rank) continue;  // stale: a neighbour changed since it was queued
    const int right = syms[left].next;
    syms[left].text += syms[right].text;
    syms[left].next = syms[right].next;
    if (syms[right].next >= 0) syms[syms[right].next].prev = left;
    alive[right] = false;
    push(syms[left].prev);
    push(left);
  }

  std::vector<int32_t> ids;
  for (size_t i = 0; i < syms.size(); ++i) {
    if (!alive[i]) continue;
    auto it = vocab_.find(syms[i].text);
    ids.push_back(it == vocab_.end() ? unk_id_ : it->second);  // only possible with a vocab lacking bytes
  }
  if (cache_.words.size() >= kCacheLimit) cache_.words.clear();
  cache_.words.emplace(word, ids);
  return ids;
}

void ClipTokenizer::encode_plain(std::u32string_view text, std::vector<int32_t>& ids) const {
  for (size_t i = 0; i < text.size();) {
    if (is_whitespace(text[i])) {
      ++i;
      continue;
    }
    const size_t end = pre_token_end(text, i);
    std::u32string_view piece = text.substr(i, end - i);
    i = end;
    // ByteLevel re-splits every pre-token with GPT-2's pattern. That only changes the two literal special
    // tokens (reached here when they are not matched as added tokens): "<|", the word, "|>".
    std::u32string_view parts[3] = {piece, {}, {}};
    if (piece == U"<|startoftext|>" || piece == U"<|endoftext|>") {
      parts[0] = piece.substr(0, 2);
      parts[1] = piece.substr(2, piece.size() - 4);
      parts[2] = piece.substr(piece.size() - 2);
    }
    for (auto part : parts) {
      if (part.empty()) continue;
      const std::vector<int32_t> word = bpe(u32_to_utf8(part));
      ids.insert(ids.end(), word.begin(), word.end());
    }
  }
}

namespace {

// Splits `text` on the added tokens whose `normalized` flag equals `normalized` (leftmost, then longest match
// wins), calling on_text for the stretches between them and on_token for each match.
template <typename Tokens, typename OnText, typename OnToken>
void split_added(std::u32string_view text, const Tokens& tokens, bool normalized, OnText on_text,
                 OnToken on_token) {
  size_t start = 0, i = 0;
  while (i < text.size()) {
    const typename Tokens::value_type* best = nullptr;
    for (const auto& t : tokens)
      if (t.normalized == normalized && starts_with(text, i, t.pattern) &&
          (!best || t.pattern.size() > best->pattern.size()))
        best = &t;
    if (!best) {
      ++i;
      continue;
    }
    if (i > start) on_text(text.substr(start, i - start));
    on_token(best->id);
    i += best->pattern.size();
    start = i;
  }
  if (start < text.size()) on_text(text.substr(start));
}

}  // namespace

void ClipTokenizer::encode_segment(std::u32string_view raw, std::vector<int32_t>& ids) const {
  split_added(
      normalize(raw), added_, true, [&](std::u32string_view s) { encode_plain(s, ids); },
      [&](int32_t id) { ids.push_back(id); });
}

std::vector<int32_t> ClipTokenizer::encode_words(std::string_view text) const {
  // Tokens that are not normalised are found in the raw text first; the rest of the text is normalised piece
  // by piece, as tokenizers' AddedVocabulary does.
  std::vector<int32_t> ids;
  split_added(
      utf8_to_u32(text), added_, false, [&](std::u32string_view s) { encode_segment(s, ids); },
      [&](int32_t id) { ids.push_back(id); });
  return ids;
}

std::vector<int32_t> ClipTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> words = encode_words(text);
  const size_t room = static_cast<size_t>(config_.max_length) - 2;
  if (words.size() > room) words.resize(room);
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(config_.max_length));
  ids.push_back(bos_id_);
  ids.insert(ids.end(), words.begin(), words.end());
  ids.push_back(eos_id_);
  ids.resize(static_cast<size_t>(config_.max_length), pad_id_);
  return ids;
}

}  // namespace sdrt::text
