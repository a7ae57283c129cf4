// Shared helpers for sdrt's tests: temporary folders, fixture paths, running the CLI.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/npy.h"
#include "sdrt/model.h"

namespace sdrt::testing {

inline std::filesystem::path fixtures_dir() {
  // The environment wins, so the test binary can run against another checkout (the GPU machine's copy).
  if (const char* env = std::getenv("SDRT_FIXTURES_DIR")) return env;
  return SDRT_FIXTURES_DIR;
}

// A fresh folder under the system temp dir, removed with everything in it when the object dies.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ =
        std::filesystem::temp_directory_path() / ("sdrt-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_file(const std::filesystem::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Copies a fixture model folder into `dest` so that a test can damage it.
inline std::filesystem::path copy_fixture(const std::string& name, const TempDir& dest) {
  const auto target = dest.path() / name;
  std::filesystem::copy(fixtures_dir() / name, target, std::filesystem::copy_options::recursive);
  return target;
}

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

// The sdrt binary the CLI tests run: $SDRT_CLI_PATH when set (another build of the CLI, e.g. a scratch build
// with deliberately broken flags), else the one built with the tests.
inline std::string cli_path() {
  if (const char* env = std::getenv("SDRT_CLI_PATH"); env != nullptr && *env != '\0') return env;
  return SDRT_CLI_PATH;
}

// Runs the sdrt CLI with `args` (already shell-quoted) and captures stdout and stderr.
inline CommandResult run_cli(const std::string& args) {
  TempDir tmp;
  const auto out_path = tmp / "stdout", err_path = tmp / "stderr";
  const std::string cmd = std::string("'") + cli_path() + "' " + args + " >'" + out_path.string() + "' 2>'" +
                          err_path.string() + "'";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

// Single-quotes a string for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The DType of a safetensors dtype string ("F16", "BF16"; anything else: F32).
inline DType stored_dtype(const std::string& s) {
  return s == "F16" ? DType::kF16 : s == "BF16" ? DType::kBF16 : DType::kF32;
}

// The GenerateOptions of one case of a reference/pipeline_cases.json (scripts/make_fixtures.py).
inline GenerateOptions pipeline_case_options(const nlohmann::json& c, const std::filesystem::path& ref) {
  GenerateOptions o;
  o.prompt = c["prompt"];
  o.negative_prompt = c["negative_prompt"];
  o.cfg_scale = c["guidance"];
  o.steps = c["steps"];
  o.height = c["height"];
  o.width = c["width"];
  o.seed = c["seed"];
  const std::string scheduler = c["scheduler"];
  o.scheduler = scheduler == "default" ? "" : scheduler;
  o.karras = c["karras"];
  if (c.contains("init_noise")) o.init_noise = io::read_npy(ref / c["init_noise"].get<std::string>());
  return o;
}

}  // namespace sdrt::testing
