// Reference values computed by torch / diffusers / transformers / numpy for the unit tests
// (tests/fixtures/typed_references.json, made by scripts/make_typed_references.py; its docstring lists the
// sections and the tests that read them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "test_util.h"

namespace sdrt::testing {

// The whole fixture, read once.
inline const nlohmann::json& typed_references() {
  static const nlohmann::json doc = io::read_json_file(fixtures_dir() / "typed_references.json");
  return doc;
}

// transformers' ids for `text` through the tokenizer `tokenizer` ("sd1", "sd2" or a folder of "folders") from
// the section "encode" (padded to model_max_length, key "prompt") or "encode_words" (no special tokens, key
// "text"). A missing entry fails the test and yields {-2}, which no tokenizer gives.
inline std::vector<int32_t> reference_ids(const std::string& section, const std::string& tokenizer,
                                          const std::string& text) {
  const char* key = section == "encode" ? "prompt" : "text";
  for (const auto& c : typed_references().at("tokenizer").at(section))
    if (c.at("tokenizer") == tokenizer && c.at(key) == text) return c.at("ids").get<std::vector<int32_t>>();
  ADD_FAILURE() << "typed_references.json has no tokenizer." << section << " entry for " << tokenizer << " "
                << nlohmann::json(text).dump()
                << ": add it to scripts/make_typed_references.py and re-run it";
  return {-2};
}

// A special id ("bos", "eos", "pad") or "model_max_length" of a tokenizer, as transformers reports it.
inline int32_t reference_special(const std::string& tokenizer, const std::string& what) {
  return typed_references().at("tokenizer").at("special").at(tokenizer).at(what).get<int32_t>();
}

}  // namespace sdrt::testing
