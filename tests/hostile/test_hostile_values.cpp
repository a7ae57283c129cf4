// Hostile values (issue 13, items 4, 5 and 6): absurd or non-finite numbers in configs and options are errors
// naming the file and field (or the option), sizes that cannot fit in memory fail at once with an estimate,
// over-long prompts get one warning line, and text from prompts and model files cannot inject lines into the
// PNG metadata or escape sequences into `sdrt info`.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/png.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "models/unet.h"
#include "schedulers/scheduler.h"
#include "sdrt/error.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::fixtures_dir;
using testing::shell_quote;
using testing::TempDir;

constexpr int kTimeLimitSeconds = 60;

struct CliRun {
  int exit_code = -1;
  std::string out, err;
  double seconds = 0;
};

CliRun run_sdrt(const std::string& args) {
  ::setenv("OMP_WAIT_POLICY", "passive", 0);
  TempDir tmp;
  const auto out = tmp / "stdout", err = tmp / "stderr";
  const std::string cmd = "timeout -s KILL " + std::to_string(kTimeLimitSeconds) + " '" +
                          testing::cli_path() + "' " + args + " >'" + out.string() + "' 2>'" + err.string() +
                          "'";
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  CliRun r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = testing::read_file(out);
  r.err = testing::read_file(err);
  return r;
}

fs::path tiny() {
  return fixtures_dir() / "tiny-sd1";
}

std::string txt2img(const fs::path& model, const fs::path& output, const std::string& extra) {
  return "txt2img --model " + shell_quote(model.string()) + " --steps 1 --width 64 --height 64 --output " +
         shell_quote(output.string()) + " " + extra;
}

// One "sdrt: error: " line on stderr containing `needle`, non-zero exit.
void expect_error(const CliRun& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 137) << "a hang";
  EXPECT_EQ(r.err.rfind("sdrt: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "'" << needle << "' not in: " << r.err;
}

json read_json(const fs::path& p) {
  return json::parse(testing::read_file(p));
}

void write_json(const fs::path& p, const json& j) {
  testing::write_file(p, j.dump(2));
}

// Loading `model` throws an sdrt::Error whose message contains every needle.
void expect_load_error(const fs::path& model, const std::vector<std::string>& needles) {
  try {
    Model::load(model);
    ADD_FAILURE() << "loaded without error";
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

// ---- 5. no silent garbage --------------------------------------------------------------------------------

TEST(HostileValues, VaeScalingFactorMustBeSane) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  const auto config_path = model / "vae" / "config.json";
  const json original = read_json(config_path);
  for (const std::string value : {"1e300", "1e-30", "0", "-0.18215", "Infinity"}) {
    std::string text = original.dump(2);
    const auto at = text.find("0.18215");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 7, value);
    testing::write_file(config_path, text);
    SCOPED_TRACE(value);
    // Python's json writes inf as a bare Infinity, which is not JSON: an error naming the file.
    if (value == "Infinity") {
      expect_load_error(model, {"vae/config.json"});
    } else {
      expect_load_error(model, {"vae/config.json", "scaling_factor"});
    }
  }
}

TEST(HostileValues, SchedulerBetasAndTimestepsMustBeSane) {
  const json base = read_json(tiny() / "scheduler" / "scheduler_config.json");
  const auto expect_refused = [&](const char* key, const json& value) {
    json j = base;
    j[key] = value;
    SCOPED_TRACE(std::string(key) + " = " + value.dump());
    try {
      schedulers::SchedulerConfig::from_json_text(j.dump(), "sched.json");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("sched.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  expect_refused("beta_end", 1.0);
  expect_refused("beta_end", 5.0);
  expect_refused("beta_start", 0.0);
  expect_refused("beta_start", -0.001);
  expect_refused("trained_betas", json::array());
  expect_refused("trained_betas", json::array({0.5, 1.5}));
  expect_refused("num_train_timesteps", 0);
  expect_refused("num_train_timesteps", -1000);
  expect_refused("num_train_timesteps", 100001);
  expect_refused("num_train_timesteps", 1e30);
  // NaN as Python's json writes it.
  json j = base;
  j.erase("beta_start");
  std::string text = j.dump();
  text.insert(1, "\"beta_start\":NaN,");
  EXPECT_THROW(schedulers::SchedulerConfig::from_json_text(text, "sched.json"), Error);
  // The fixture itself is fine.
  EXPECT_NO_THROW(schedulers::SchedulerConfig::from_json_text(base.dump(), "sched.json"));
}

TEST(HostileValues, UNetSizesAndChannelsMustBeSane) {
  const json base = read_json(tiny() / "unet" / "config.json");
  EXPECT_NO_THROW(models::UNetConfig::from_json(base, "unet.json"));
  const auto expect_refused = [&](const char* key, const json& value) {
    json j = base;
    j[key] = value;
    SCOPED_TRACE(std::string(key) + " = " + value.dump());
    try {
      models::UNetConfig::from_json(j, "unet.json");
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("unet.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  expect_refused("sample_size", 0);
  expect_refused("sample_size", -8);
  expect_refused("sample_size", 1 << 20);
  expect_refused("in_channels", 0);
  expect_refused("in_channels", -4);
  expect_refused("out_channels", 0);
  expect_refused("cross_attention_dim", -768);
  expect_refused("norm_num_groups", 0);
}

TEST(HostileValues, SeedMinusOneIsRandomAndOutOfRangeSeedsAreErrors) {
  TempDir tmp;
  for (const char* seed : {"-5", "1e30", "18446744073709551616", "0x10", "12abc", "-1.5", "''"}) {
    SCOPED_TRACE(seed);
    const CliRun r = run_sdrt(txt2img(tiny(), tmp / "o.png", "--prompt hi --seed " + std::string(seed)));
    expect_error(r, "--seed");
    EXPECT_EQ(r.out, "");
  }
  // The largest seed torch accepts, and -1 (random: the chosen seed is printed and stored).
  CliRun r = run_sdrt(txt2img(tiny(), tmp / "max.png", "--prompt hi --seed 18446744073709551615"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(seed 18446744073709551615)"), std::string::npos) << r.out;
  r = run_sdrt(txt2img(tiny(), tmp / "random.png", "--prompt hi --seed -1"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto at = r.out.find("(seed ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const std::string seed = r.out.substr(at + 6, r.out.find(')', at) - at - 6);
  const auto png = io::read_png_rgb8(tmp / "random.png");
  ASSERT_FALSE(png.text.empty());
  EXPECT_NE(png.text[0].second.find("Seed: " + seed + ","), std::string::npos) << png.text[0].second;
}

TEST(HostileValues, ExplicitZeroOrNegativeSizeIsAnError) {
  TempDir tmp;
  expect_error(run_sdrt("txt2img --model " + shell_quote(tiny().string()) +
                        " --prompt hi --width 0 --output " + shell_quote((tmp / "o.png").string())),
               "--width");
  expect_error(run_sdrt("txt2img --model " + shell_quote(tiny().string()) +
                        " --prompt hi --height -64 --output " + shell_quote((tmp / "o.png").string())),
               "--height");
  EXPECT_FALSE(fs::exists(tmp / "o.png"));
}

std::string long_prompt() {
  std::string p;
  for (int i = 0; i < 100; ++i) p += "red ";
  return p;  // 100 tokens: 25 beyond the 75 the window holds
}

TEST(HostileValues, LongPromptGetsOneWarningLine) {
  TempDir tmp;
  const std::string model = "--model " + shell_quote(tiny().string());
  CliRun r = run_sdrt("tokenize " + model + " --prompt " + shell_quote(long_prompt()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err,
            "sdrt: warning: the prompt is longer than the text encoder's window of 77 tokens; its last 25 "
            "tokens were dropped\n");
  EXPECT_NO_THROW((void)json::parse(r.out)) << "stdout is still only the ids";
  r = run_sdrt("encode " + model + " --prompt " + shell_quote(long_prompt()) + " --output " +
               shell_quote((tmp / "e.npy").string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto lines_with = [](const std::string& s, const std::string& needle) {
    int n = 0;
    for (size_t at = s.find(needle); at != std::string::npos; at = s.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(lines_with(r.out, "sdrt: warning:"), 1) << r.out;
  EXPECT_EQ(lines_with(r.out, "last 25 tokens were dropped"), 1) << r.out;
  // A prompt that fits: no warning.
  r = run_sdrt("tokenize " + model + " --prompt 'a red circle'");
  EXPECT_EQ(r.err, "");
}

TEST(HostileValues, QuantConvSwitchThatDisagreesWithTheWeightsWarns) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  EXPECT_TRUE(Model::load(model).warnings().empty());
  json config = read_json(model / "vae" / "config.json");
  config["use_quant_conv"] = false;
  write_json(model / "vae" / "config.json", config);
  const auto warnings = Model::load(model).warnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("use_quant_conv"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("quant_conv.weight"), std::string::npos) << warnings[0];
}

// A checkpoint with tensors its config does not describe (a wrong config beside real weights) loads — the
// tensors it needs are there — but says so in one warning line naming the component and a tensor.
TEST(HostileValues, TensorsTheConfigDoesNotDescribeWarn) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  const auto unet_dir = model / "unet";
  std::map<std::string, Tensor> tensors;
  {
    const auto store = io::WeightStore::from_component_dir(unet_dir, "diffusion_pytorch_model");
    for (const auto& name : store.names()) tensors.emplace(name, store.load(name, DType::kF32));
  }
  Tensor extra({4}, DType::kF32);
  std::fill_n(extra.data<float>(), 4, 1.0f);
  tensors.emplace("down_blocks.9.attentions.0.proj_in.weight", extra);
  for (const auto& f : fs::directory_iterator(unet_dir))
    if (f.path().extension() == ".safetensors") fs::remove(f.path());
  io::write_safetensors(unet_dir / "diffusion_pytorch_model.safetensors", tensors);
  const auto warnings = Model::load(model).warnings();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("unet/config.json: 1 tensor the unet does not use"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("down_blocks.9.attentions.0.proj_in.weight"), std::string::npos) << warnings[0];
}

fs::path single_file_with_yaml(const TempDir& tmp, const std::string& yaml) {
  const auto src = fixtures_dir() / "single_file" / "sd2.safetensors";
  const auto dst = tmp / "model.safetensors";
  if (!fs::exists(dst)) fs::copy_file(src, dst);
  testing::write_file(tmp / "model.yaml", yaml);
  return dst;
}

std::string inspected_prediction(const fs::path& file) {
  for (const auto& c : Model::inspect(file).components)
    for (const auto& [k, v] : c.details)
      if (k == "prediction_type") return v;
  return "?";
}

TEST(HostileValues, SidecarYamlIsParsedNotSubstringMatched) {
  if (!fs::exists(fixtures_dir() / "single_file" / "sd2.safetensors"))
    GTEST_SKIP() << "no single-file fixture";
  TempDir tmp;
  const std::string nested =
      "model:\n  target: x\n  params:\n    linear_start: 0.00085\n    parameterization: ";
  EXPECT_EQ(inspected_prediction(single_file_with_yaml(tmp, nested + "\"v\"\n")), "v_prediction");
  EXPECT_EQ(inspected_prediction(single_file_with_yaml(tmp, nested + "'v'  # comment\n")), "v_prediction");
  EXPECT_EQ(inspected_prediction(single_file_with_yaml(tmp, nested + "eps\n")), "epsilon");
  // Not at model.params: ignored (the substring match took each of these).
  EXPECT_EQ(
      inspected_prediction(single_file_with_yaml(tmp, "# parameterization: \"v\"\nmodel:\n  params: {}\n")),
      "epsilon");
  EXPECT_EQ(inspected_prediction(single_file_with_yaml(
                tmp, "model:\n  params:\n    cond_stage_config:\n      parameterization: v\n")),
            "epsilon");
  EXPECT_EQ(inspected_prediction(single_file_with_yaml(tmp, "other:\n  params:\n    parameterization: v\n")),
            "epsilon");
  EXPECT_EQ(
      inspected_prediction(single_file_with_yaml(tmp, "model:\n  params:\n    my_parameterization: v\n")),
      "epsilon");
  // Malformed: an error naming the file and line.
  for (const std::string bad :
       {std::string("model:\n  params:\n\tparameterization: v\n"),
        nested + "v\n" + "    parameterization: eps\n", nested + "\"v\n", nested + "[v]\n"}) {
    SCOPED_TRACE(bad);
    try {
      Model::inspect(single_file_with_yaml(tmp, bad));
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("model.yaml:"), std::string::npos) << e.what();
    }
  }
}

// ---- 6. untrusted text stays inert ------------------------------------------------------------------------

TEST(HostileValues, InfoEscapesControlCharactersFromModelFiles) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  json index = read_json(model / "model_index.json");
  index["_class_name"] = "Evil\x1b[2J\x1b]0;title\x07\nfake: line\r";
  write_json(model / "model_index.json", index);
  const CliRun r = run_sdrt("info --model " + shell_quote(model.string()));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(r.out.find('\x07'), std::string::npos);
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  EXPECT_EQ(r.out.find("\nfake: line"), std::string::npos);
  EXPECT_NE(r.out.find("pipeline: Evil\\x1b[2J\\x1b]0;title\\x07\\x0afake: line\\x0d\n"), std::string::npos)
      << r.out;
  const CliRun j = run_sdrt("info --json --model " + shell_quote(model.string()));
  EXPECT_EQ(j.exit_code, 0) << j.err;
  EXPECT_EQ(j.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(json::parse(j.out)["pipeline_class"], index["_class_name"]);
}

TEST(HostileValues, ComponentNamesInModelIndexAreValidated) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  const json original = read_json(model / "model_index.json");
  for (const std::string name : {"../unet", "..", "a/b", "/etc", "sub\\dir", "x\ny"}) {
    SCOPED_TRACE(name);
    json index = original;
    index[name] = json::array({"diffusers", "UNet2DConditionModel"});
    write_json(model / "model_index.json", index);
    expect_error(run_sdrt("info --model " + shell_quote(model.string())), "is not a plain folder name");
  }
}

TEST(HostileValues, PromptsCannotInjectLinesIntoPngParameters) {
  TempDir tmp;
  const auto model_dir = tmp / "name, with: colon";
  fs::copy(tiny(), model_dir, fs::copy_options::recursive);
  const auto model = Model::load(model_dir);
  GenerateOptions o;
  o.prompt = "a cat\nSteps: 999, Sampler: Evil, Seed: 1\r\nNegative prompt: x\xe2\x80\xa8y";
  o.negative_prompt = "ugly\nSteps: 1";
  o.seed = 7;
  o.steps = 3;
  const std::string text = model.parameters_text(model.resolve(o));
  std::vector<std::string> lines;
  for (size_t start = 0;;) {
    const auto nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  ASSERT_EQ(lines.size(), 3u) << text;
  EXPECT_EQ(lines[0], "a cat Steps: 999, Sampler: Evil, Seed: 1  Negative prompt: x y");
  EXPECT_EQ(lines[1], "Negative prompt: ugly Steps: 1");
  EXPECT_EQ(lines[2].rfind("Steps: 3, ", 0), 0u) << lines[2];
  EXPECT_NE(lines[2].find("Model: \"name, with: colon\""), std::string::npos) << lines[2];
  EXPECT_EQ(std::count(text.begin(), text.end(), '\r'), 0);
  // The flattened prompt still tokenizes to the same ids.
  EXPECT_EQ(model.tokenize(lines[0]), model.tokenize(o.prompt));
}

TEST(HostileValues, InvalidUtf8PromptIsRejectedUpFrontEverywhere) {
  TempDir tmp;
  const std::string model = "--model " + shell_quote(tiny().string());
  for (const std::string bad : {"a \xff b", "\xc0\xaf", "\xed\xa0\x80", "trunc \xe2\x82"}) {
    SCOPED_TRACE(testing::shell_quote(bad));
    for (const std::string& cmd :
         {"tokenize " + model + " --prompt " + shell_quote(bad),
          "encode " + model + " --prompt " + shell_quote(bad) + " --output " +
              shell_quote((tmp / "e.npy").string()),
          txt2img(tiny(), tmp / "o.png", "--prompt " + shell_quote(bad)),
          txt2img(tiny(), tmp / "o.png", "--prompt ok --negative-prompt " + shell_quote(bad))}) {
      const CliRun r = run_sdrt(cmd);
      expect_error(r, "not valid UTF-8");
      EXPECT_EQ(r.out, "") << "rejected only after work was done";
    }
  }
  EXPECT_THROW(validate_prompt("\xff"), Error);
  EXPECT_NO_THROW(validate_prompt("caf\xc3\xa9 \xf0\x9f\x98\x80"));
}

// ---- 4. bounded memory and time ---------------------------------------------------------------------------

TEST(HostileValues, HugeImageFailsAtOnceWithAnEstimate) {
  TempDir tmp;
  const CliRun r =
      run_sdrt("txt2img --model " + shell_quote(tiny().string()) +
               " --prompt hi --width 16384 --height 16384 --output " + shell_quote((tmp / "o.png").string()));
  expect_error(r, "GiB");
  EXPECT_NE(r.err.find("16384x16384 needs at least"), std::string::npos) << r.err;
  EXPECT_LT(r.seconds, 5.0) << "allocated before refusing";
  EXPECT_FALSE(fs::exists(tmp / "o.png"));
  // Beyond the documented limit: refused before loading anything.
  expect_error(run_sdrt("txt2img --model " + shell_quote(tiny().string()) +
                        " --prompt hi --width 16392 --output " + shell_quote((tmp / "o.png").string())),
               "larger than 16384");
  expect_error(run_sdrt("txt2img --model " + shell_quote(tiny().string()) +
                        " --prompt hi --steps 10001 --output " + shell_quote((tmp / "o.png").string())),
               "10000");
}

}  // namespace
}  // namespace sdrt
