// Hostile files and interruptions (issue 13, items 1, 2, 3 and 7): sdrt never destroys what is at the output
// path or an input of the run, never hangs on a FIFO or a device, leaves no temporary file or half-written
// folder behind when a write fails or a signal arrives, and reports every failure as one line on stderr that
// names the real cause. Each case runs the CLI on the tiny fixtures (a few steps, 64×64) under a time limit,
// so that a hang fails the test instead of stalling the suite.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "io/atomic_file.h"
#include "io/interrupt.h"
#include "sdrt/error.h"
#include "test_util.h"

extern char** environ;

namespace sdrt {
namespace {

namespace fs = std::filesystem;
using testing::fixtures_dir;
using testing::shell_quote;
using testing::TempDir;

constexpr int kTimeLimitSeconds = 60;  // a hang is killed (exit 137) and fails the test

struct Run {
  int exit_code = -1;
  std::string out, err;
  double seconds = 0;
};

// Runs `prefix 'sdrt' args` under `timeout -s KILL`, capturing stdout and stderr.
Run run_sdrt(const std::string& args, const std::string& prefix = "") {
  ::setenv("OMP_WAIT_POLICY", "passive",
           0);  // as ctest sets it: spinning threads starve each other on few cores
  TempDir tmp;
  const auto out = tmp / "stdout", err = tmp / "stderr";
  const std::string cmd = "timeout -s KILL " + std::to_string(kTimeLimitSeconds) + " " + prefix + " '" +
                          testing::cli_path() + "' " + args + " >'" + out.string() + "' 2>'" + err.string() +
                          "'";
  const auto start = std::chrono::steady_clock::now();
  const int status = std::system(cmd.c_str());
  Run r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = testing::read_file(out);
  r.err = testing::read_file(err);
  return r;
}

std::string model_arg(const fs::path& model) {
  return "--model " + shell_quote(model.string());
}

std::string txt2img(const fs::path& model, const fs::path& output, const std::string& extra = "") {
  return "txt2img " + model_arg(model) + " --prompt 'a red circle' --steps 2 --seed 1 --output " +
         shell_quote(output.string()) + (extra.empty() ? "" : " " + extra);
}

fs::path tiny() {
  return fixtures_dir() / "tiny-sd1";
}

// A failure: non-zero exit, stderr exactly one "sdrt: error: " line containing `needle`; when `up_front`, the
// failure came before any work (no stage ran: stdout is empty).
void expect_error(const Run& r, const std::string& needle, bool up_front = true) {
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.exit_code, 137) << "killed after " << kTimeLimitSeconds << " s: a hang";
  EXPECT_EQ(r.err.rfind("sdrt: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "'" << needle << "' not in: " << r.err;
  if (up_front) {
    EXPECT_EQ(r.out, "") << "the output check came after work was done";
  }
}

// Entries of `dir` that a write leaves while in progress (".<name>.tmp-XXXXXX").
std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos) found.push_back(name);
  }
  return found;
}

bool is_fifo_node(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISFIFO(st.st_mode);
}

fs::path make_fifo(const fs::path& p) {
  EXPECT_EQ(::mkfifo(p.c_str(), 0644), 0) << p << ": " << std::strerror(errno);
  return p;
}

// ---- 1. outputs
// ----------------------------------------------------------------------------------------------

TEST(HostileOutput, OverAnInputOfTheRunIsRefused) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  const auto noise = model / "reference" / "pipe7_init_noise.npy";
  for (const fs::path& input : {model / "model_index.json", model / "unet" / "config.json",
                                model / "tokenizer" / "vocab.json", noise}) {
    const std::string before = testing::read_file(input);
    expect_error(run_sdrt(txt2img(model, input, "--init-noise " + shell_quote(noise.string()))),
                 "input of this run");
    EXPECT_EQ(testing::read_file(input), before) << input;
  }
  // Through a symbolic link and a hard link to an input, and encode's output over its text encoder.
  fs::create_symlink(model / "scheduler" / "scheduler_config.json", tmp / "link.png");
  expect_error(run_sdrt(txt2img(model, tmp / "link.png")), "input of this run");
  fs::create_hard_link(model / "vae" / "config.json", tmp / "hard.png");
  expect_error(run_sdrt(txt2img(model, tmp / "hard.png")), "input of this run");
  EXPECT_TRUE(fs::is_symlink(tmp / "link.png"));
  for (const auto& e : fs::directory_iterator(model / "text_encoder")) {
    if (e.path().extension() != ".safetensors") continue;
    const auto size = fs::file_size(e.path());
    expect_error(
        run_sdrt("encode " + model_arg(model) + " --prompt hi --output " + shell_quote(e.path().string())),
        "input of this run");
    EXPECT_EQ(fs::file_size(e.path()), size);
  }
  EXPECT_TRUE(temporaries(model).empty());

  // A single-file checkpoint, its sidecar .yaml and a --vae file.
  const auto single = fixtures_dir() / "single_file";
  if (!fs::exists(single / "sd2.yaml")) return;
  for (const char* name : {"sd2.safetensors", "sd2.yaml", "sd1_vae_ldm.safetensors"})
    fs::copy_file(single / name, tmp / name);
  for (const char* name : {"sd2.safetensors", "sd2.yaml", "sd1_vae_ldm.safetensors"}) {
    const auto size = fs::file_size(tmp / name);
    expect_error(run_sdrt(txt2img(tmp / "sd2.safetensors", tmp / name,
                                  "--vae " + shell_quote((tmp / "sd1_vae_ldm.safetensors").string()))),
                 "input of this run");
    EXPECT_EQ(fs::file_size(tmp / name), size) << name;
  }
}

TEST(HostileOutput, FifoIsRefusedAndKept) {
  TempDir tmp;
  const auto fifo = make_fifo(tmp / "out.png");
  expect_error(run_sdrt(txt2img(tiny(), fifo)), "FIFO");
  EXPECT_TRUE(is_fifo_node(fifo));
  expect_error(
      run_sdrt("encode " + model_arg(tiny()) + " --prompt hi --output " + shell_quote(fifo.string())),
      "FIFO");
  EXPECT_TRUE(is_fifo_node(fifo));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
}

TEST(HostileOutput, CharacterDeviceIsRefusedAndKept) {
  // As root sdrt could replace /dev/null itself, so the root case uses a private node with /dev/null's
  // numbers; without root, /dev/null itself (it could not be replaced anyway, but must not be written
  // either).
  TempDir tmp;
  fs::path device = "/dev/null";
  if (::geteuid() == 0) {
    device = tmp / "null";
    if (::mknod(device.c_str(), S_IFCHR | 0666, makedev(1, 3)) != 0)
      GTEST_SKIP() << "mknod: " << std::strerror(errno);
  }
  expect_error(run_sdrt(txt2img(tiny(), device)), "character device");
  struct stat st {};
  ASSERT_EQ(::lstat(device.c_str(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode)) << device << " was replaced";
  EXPECT_EQ(st.st_rdev, makedev(1, 3));
  if (::geteuid() == 0) {
    EXPECT_TRUE(temporaries(tmp.path()).empty());
  }
}

TEST(HostileOutput, FolderAndSocketAreRefused) {
  TempDir tmp;
  fs::create_directory(tmp / "dir.png");
  expect_error(run_sdrt(txt2img(tiny(), tmp / "dir.png")), "is a folder");
  EXPECT_TRUE(fs::is_directory(tmp / "dir.png"));

  const auto sock_path = tmp / "sock.png";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(sock_path.string().size(), sizeof addr.sun_path);
  std::strcpy(addr.sun_path, sock_path.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
  expect_error(run_sdrt(txt2img(tiny(), sock_path)), "socket");
  EXPECT_TRUE(fs::is_socket(sock_path));
  ::close(fd);
}

TEST(HostileOutput, SymlinkIsWrittenThroughAndKept) {
  TempDir tmp;
  fs::create_directory(tmp / "real");
  testing::write_file(tmp / "real" / "target.png", "old");
  fs::create_symlink("real/target.png", tmp / "link.png");  // relative, as users make them
  const auto r = run_sdrt(txt2img(tiny(), tmp / "link.png"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");  // item 7: nothing on stderr when all went well
  EXPECT_TRUE(fs::is_symlink(tmp / "link.png"));
  EXPECT_EQ(testing::read_file(tmp / "real" / "target.png").substr(1, 3), "PNG");
  // A dangling link: its target is created, the link stays.
  fs::create_symlink(tmp / "real" / "new.png", tmp / "dangling.png");
  ASSERT_EQ(run_sdrt(txt2img(tiny(), tmp / "dangling.png")).exit_code, 0);
  EXPECT_TRUE(fs::is_symlink(tmp / "dangling.png"));
  EXPECT_TRUE(fs::is_regular_file(tmp / "real" / "new.png"));
  // A link to a FIFO is refused like the FIFO.
  make_fifo(tmp / "real" / "fifo");
  fs::create_symlink(tmp / "real" / "fifo", tmp / "to-fifo.png");
  expect_error(run_sdrt(txt2img(tiny(), tmp / "to-fifo.png")), "FIFO");
  EXPECT_TRUE(fs::is_symlink(tmp / "to-fifo.png"));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
  EXPECT_TRUE(temporaries(tmp / "real").empty());
}

TEST(HostileOutput, NameTooLongAndUnwritableFolderFailUpFront) {
  TempDir tmp;
  // 250 bytes fits NAME_MAX (255) but not with the temporary suffix: refused before the model is loaded.
  expect_error(run_sdrt(txt2img(tiny(), tmp / (std::string(246, 'x') + ".png"))), "too long");
  if (::geteuid() != 0) {
    fs::create_directory(tmp / "ro");
    fs::permissions(tmp / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    expect_error(run_sdrt(txt2img(tiny(), tmp / "ro" / "out.png")), "cannot write in folder");
    fs::permissions(tmp / "ro", fs::perms::owner_all);
  }
}

// ---- 3. inputs that are not regular files
// --------------------------------------------------------------------

TEST(HostileInput, FifoDeviceAndFolderInputsAreNamedNeverWaitedOn) {
  TempDir tmp;
  const auto out = tmp / "out.png";
  const auto fifo = make_fifo(tmp / "fifo.npy");
  expect_error(run_sdrt(txt2img(tiny(), out, "--init-noise " + shell_quote(fifo.string()))),
               "fifo.npy: is a FIFO (named pipe), not a regular file");
  expect_error(run_sdrt(txt2img(tiny(), out, "--init-noise /dev/zero")), "/dev/zero: is a character device");
  expect_error(run_sdrt(txt2img(tiny(), out, "--init-noise " + shell_quote(tmp.path().string()))),
               "is a folder, not a regular file");
  expect_error(run_sdrt(txt2img(tiny(), out, "--vae " + shell_quote(fifo.string()))), "FIFO");
  expect_error(run_sdrt(txt2img(fifo, out)),
               "is a FIFO (named pipe), not a model folder or a checkpoint file");
  expect_error(run_sdrt(txt2img("/dev/zero", out)), "is a character device");
  const auto info = run_sdrt("info " + model_arg(fifo));
  expect_error(info, "FIFO");
  EXPECT_EQ(info.err.find("No such file"), std::string::npos) << info.err;
  EXPECT_EQ(info.err.find("no such"), std::string::npos) << info.err;
  EXPECT_EQ(info.err.find("not supported yet"), std::string::npos) << info.err;
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(is_fifo_node(fifo));
}

TEST(HostileInput, FifoInsideTheModelFolderIsNamed) {
  TempDir tmp;
  const auto model = testing::copy_fixture("tiny-sd1", tmp);
  for (const fs::path rel :
       {"model_index.json", "unet/config.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"}) {
    fs::rename(model / rel, tmp / "saved");
    make_fifo(model / rel);
    expect_error(run_sdrt(txt2img(model, tmp / "out.png")), rel.filename().string() + ": is a FIFO", false);
    fs::remove(model / rel);
    fs::rename(tmp / "saved", model / rel);
  }
  // A weights file: the first one the loader looks for.
  for (const auto& e : fs::directory_iterator(model / "unet")) {
    if (e.path().extension() != ".safetensors") continue;
    fs::remove(e.path());
    make_fifo(e.path());
  }
  expect_error(run_sdrt(txt2img(model, tmp / "out.png")), "FIFO", false);
  EXPECT_FALSE(fs::exists(tmp / "out.png"));
}

TEST(HostileInput, SidecarYamlFifoIsNamed) {
  const auto checkpoint = fixtures_dir() / "single_file" / "sd1.safetensors";
  if (!fs::exists(checkpoint)) GTEST_SKIP() << checkpoint << " missing";
  TempDir tmp;
  fs::copy_file(checkpoint, tmp / "sd1.safetensors");
  make_fifo(tmp / "sd1.yaml");
  expect_error(run_sdrt(txt2img(tmp / "sd1.safetensors", tmp / "out.png")), "sd1.yaml: is a FIFO");
}

// ---- 7. messages name the real cause
// -------------------------------------------------------------------------

TEST(HostileMessages, ARenamedCheckpointIsCalledAZipArchive) {
  TempDir tmp;
  std::string zip("PK\x03\x04", 4);
  zip += std::string(200, '\0');
  testing::write_file(tmp / "model.safetensors", zip);
  expect_error(run_sdrt(txt2img(tmp / "model.safetensors", tmp / "out.png")),
               "not a safetensors file (looks like a zip archive");
  expect_error(run_sdrt("info " + model_arg(tmp / "model.safetensors")), "looks like a zip archive");
  expect_error(run_sdrt(txt2img(tmp / "missing", tmp / "out.png")), "no such model folder");
}

// ---- 2. nothing left behind
// ----------------------------------------------------------------------------------

// Starts sdrt with stdout/stderr to files and returns its pid.
pid_t spawn_sdrt(const std::vector<std::string>& args, const fs::path& out, const fs::path& err) {
  ::setenv("OMP_WAIT_POLICY", "passive", 0);
  const std::string cli = testing::cli_path();
  std::vector<std::string> argv_s = {cli};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, cli.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0) << std::strerror(rc);
  return pid;
}

// Waits up to `seconds` for `pid`; kills it (and fails) when it does not end.
int wait_exit(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ADD_FAILURE() << "sdrt did not stop within " << seconds << " s of the signal";
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
}

class HostileSignal : public ::testing::TestWithParam<int> {};

TEST_P(HostileSignal, StopsWithinAStepLeavesNothingAndSaysSo) {
  const int signo = GetParam();
  TempDir tmp;
  const auto out = tmp / "out.png";
  const pid_t pid = spawn_sdrt({"txt2img", "--model", tiny().string(), "--prompt", "a red circle", "--steps",
                                "1000", "--scheduler", "euler", "--seed", "1", "--output", out.string()},
                               tmp / "stdout", tmp / "stderr");
  ASSERT_GT(pid, 0);
  // Wait until denoising has begun (a progress line on stdout).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kTimeLimitSeconds);
  while (testing::read_file(tmp / "stdout").find("step 2/") == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline || ::waitpid(pid, nullptr, WNOHANG) != 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      FAIL() << "no progress: " << testing::read_file(tmp / "stderr");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(::kill(pid, signo), 0);
  EXPECT_EQ(wait_exit(pid, 10), 128 + signo);
  const std::string err = testing::read_file(tmp / "stderr");
  EXPECT_EQ(err.rfind("sdrt: error: ", 0), 0u) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  EXPECT_NE(err.find("signal " + std::to_string(signo)), std::string::npos) << err;
  // Honoured at once (the loop stops after the step in progress), far from the 1000 steps asked for.
  EXPECT_NE(err.find("cancelled after step"), std::string::npos) << err;
  EXPECT_EQ(testing::read_file(tmp / "stdout").find("step 1000/"), std::string::npos);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
}

INSTANTIATE_TEST_SUITE_P(Signals, HostileSignal, ::testing::Values(SIGINT, SIGTERM, SIGHUP),
                         [](const auto& p) { return std::string(sigabbrev_np(p.param)); });

// A signal during a write (in-process: the flag the CLI's handler sets): the write stops, its temporary file
// and a conversion's temporary folder are removed, and the error is kCancelled.
TEST(HostileWrite, InterruptedWritesLeaveNothing) {
  TempDir tmp;
  const std::string big(size_t{40} << 20, 'x');  // several write chunks
  io::request_interrupt(SIGINT);
  try {
    io::write_file_atomically(tmp / "out.bin", big);
    ADD_FAILURE() << "an interrupted write succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kCancelled) << e.what();
    EXPECT_NE(std::string(e.what()).find("SIGINT"), std::string::npos) << e.what();
  }
  io::clear_interrupt();
  {
    io::TemporaryFolder folder(tmp / "converted");
    io::write_file_atomically(folder.path() / "a.json", "{}");
    io::request_interrupt(SIGTERM);
    EXPECT_THROW(folder.commit(), Error);
    io::clear_interrupt();
  }
  EXPECT_FALSE(fs::exists(tmp / "out.bin"));
  EXPECT_FALSE(fs::exists(tmp / "converted"));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
  // Without an interrupt the same calls succeed (so the checks above can fail).
  io::write_file_atomically(tmp / "out.bin", "ok");
  io::TemporaryFolder folder(tmp / "converted");
  folder.commit();
  EXPECT_TRUE(fs::is_directory(tmp / "converted"));
  EXPECT_EQ(testing::read_file(tmp / "out.bin"), "ok");
}

bool have_prlimit() {
  return std::system("command -v prlimit >/dev/null 2>&1") == 0;
}

TEST(HostileWrite, FileSizeLimitFailsCleanly) {
  if (!have_prlimit()) GTEST_SKIP() << "no prlimit";
  TempDir tmp;
  const auto out = tmp / "out.png", npy = tmp / "emb.npy";
  // 4 KiB: the log lines fit, the 64×64 PNG (over 10 KiB) and the [1, 77, 32] float32 .npy (9.9 KiB) do not.
  const std::string limit = "prlimit --fsize=4096 --";
  expect_error(run_sdrt(txt2img(tiny(), out, "--scheduler euler"), limit), "File too large", false);
  expect_error(
      run_sdrt("encode " + model_arg(tiny()) + " --prompt hi --output " + shell_quote(npy.string()), limit),
      "File too large", false);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(npy));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
}

TEST(HostileWrite, FailedConvertLeavesNoFolder) {
  const auto checkpoint = fixtures_dir() / "single_file" / "sd1.safetensors";
  if (!fs::exists(checkpoint)) GTEST_SKIP() << checkpoint << " missing";
  if (!have_prlimit()) GTEST_SKIP() << "no prlimit";
  TempDir tmp;
  const auto out = tmp / "converted";
  expect_error(run_sdrt("convert " + model_arg(checkpoint) + " --output " + shell_quote(out.string()),
                        "prlimit --fsize=65536 --"),
               "File too large", false);
  EXPECT_FALSE(fs::exists(out));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
  // Refused up front: an output that is a file (the checkpoint itself) or a non-empty folder.
  expect_error(run_sdrt("convert " + model_arg(checkpoint) + " --output " + shell_quote(checkpoint.string())),
               "not a folder");
  fs::create_directory(tmp / "busy");
  testing::write_file(tmp / "busy" / "x", "keep");
  expect_error(
      run_sdrt("convert " + model_arg(checkpoint) + " --output " + shell_quote((tmp / "busy").string())),
      "not empty");
  EXPECT_EQ(testing::read_file(tmp / "busy" / "x"), "keep");
  // And a successful conversion leaves exactly the folder.
  const auto r = run_sdrt("convert " + model_arg(checkpoint) + " --output " + shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(out / "model_index.json"));
  EXPECT_TRUE(temporaries(tmp.path()).empty());
}

// ---- disk full (ENOSPC)
// -------------------------------------------------------------------------------------

// The LD_PRELOAD shim (tests/hostile/enospc_shim.c) that fails writes to regular files with ENOSPC once
// SDRT_TEST_ENOSPC_AFTER bytes were written; not built where it cannot work (tests/CMakeLists.txt says why).
#ifdef SDRT_ENOSPC_SHIM
const char* const kEnospcShim = SDRT_ENOSPC_SHIM;
const char* const kEnospcShimMissing = "";
#else
const char* const kEnospcShim = "";
#ifdef SDRT_ENOSPC_SHIM_MISSING
const char* const kEnospcShimMissing = SDRT_ENOSPC_SHIM_MISSING;
#else
const char* const kEnospcShimMissing = "the ENOSPC shim was not built";
#endif
#endif

// Why the disk-full tests cannot run here ("" when they can).
std::string enospc_skip_reason() {
  if (*kEnospcShimMissing != '\0') return kEnospcShimMissing;
  if (!fs::exists(kEnospcShim)) return std::string(kEnospcShim) + " missing";
  return "";
}

// A run_sdrt prefix: sdrt under the shim with room for `after` bytes of regular-file output; without `after`
// the variable is unset and the shim passes every write through.
std::string disk_full_after(const std::string& after) {
  const std::string preload = "LD_PRELOAD=" + shell_quote(kEnospcShim);
  return after.empty() ? "env -u SDRT_TEST_ENOSPC_AFTER " + preload
                       : "env " + preload + " SDRT_TEST_ENOSPC_AFTER=" + after;
}

// One error line that says the disk is full and names `output`.
void expect_disk_full(const Run& r, const fs::path& output) {
  expect_error(r, std::strerror(ENOSPC), false);
  EXPECT_NE(r.err.find(output.string()), std::string::npos) << output << " not named in: " << r.err;
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// No room at all (the first write fails) and room for 100 bytes (a short write, then ENOSPC).
const char* const kDiskFullAfter[] = {"0", "100"};

TEST(HostileDiskFull, ImageOutputLeavesNothing) {
  if (const auto why = enospc_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir tmp;
  const auto out = tmp / "out.png";
  for (const char* after : kDiskFullAfter) {
    SCOPED_TRACE(std::string("SDRT_TEST_ENOSPC_AFTER=") + after);
    expect_disk_full(run_sdrt(txt2img(tiny(), out), disk_full_after(after)), out);
    EXPECT_TRUE(entries(tmp.path()).empty()) << "left behind: " << entries(tmp.path()).front();
  }
  // An existing output is left as it was, and nothing is added next to it.
  testing::write_file(out, "old");
  expect_disk_full(run_sdrt(txt2img(tiny(), out), disk_full_after("100")), out);
  EXPECT_EQ(testing::read_file(out), "old");
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"out.png"});
  // Control: the shim without a limit changes nothing.
  const auto r = run_sdrt(txt2img(tiny(), out), disk_full_after(""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(testing::read_file(out).substr(1, 3), "PNG");
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"out.png"});
}

TEST(HostileDiskFull, EncodeOutputLeavesNothing) {
  if (const auto why = enospc_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir tmp;
  const auto npy = tmp / "x.npy";
  const std::string encode =
      "encode " + model_arg(tiny()) + " --prompt hi --output " + shell_quote(npy.string());
  for (const char* after : kDiskFullAfter) {
    SCOPED_TRACE(std::string("SDRT_TEST_ENOSPC_AFTER=") + after);
    expect_disk_full(run_sdrt(encode, disk_full_after(after)), npy);
    EXPECT_TRUE(entries(tmp.path()).empty()) << "left behind: " << entries(tmp.path()).front();
  }
  testing::write_file(npy, "old");
  expect_disk_full(run_sdrt(encode, disk_full_after("100")), npy);
  EXPECT_EQ(testing::read_file(npy), "old");
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"x.npy"});
  const auto r = run_sdrt(encode, disk_full_after(""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(testing::read_file(npy).substr(1, 5), "NUMPY");
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"x.npy"});
}

TEST(HostileDiskFull, ConvertLeavesNoFolder) {
  if (const auto why = enospc_skip_reason(); !why.empty()) GTEST_SKIP() << why;
  const auto checkpoint = fixtures_dir() / "single_file" / "sd1.safetensors";
  if (!fs::exists(checkpoint)) GTEST_SKIP() << checkpoint << " missing";
  TempDir tmp;
  const auto out = tmp / "converted";
  const std::string convert = "convert " + model_arg(checkpoint) + " --output " + shell_quote(out.string());
  // 64 KiB: the first files (configs) are written whole into the temporary folder before the disk fills.
  for (const char* after : {"0", "100", "65536"}) {
    SCOPED_TRACE(std::string("SDRT_TEST_ENOSPC_AFTER=") + after);
    expect_disk_full(run_sdrt(convert, disk_full_after(after)), out);
    EXPECT_TRUE(entries(tmp.path()).empty()) << "left behind: " << entries(tmp.path()).front();
  }
  const auto r = run_sdrt(convert, disk_full_after(""));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_TRUE(fs::exists(out / "model_index.json"));
  EXPECT_EQ(entries(tmp.path()), std::vector<std::string>{"converted"});
}

}  // namespace
}  // namespace sdrt
