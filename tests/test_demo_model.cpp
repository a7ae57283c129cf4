// The built-in demo model (models/demo) end to end on the CPU:
//
//  - DemoAnalysis: a C++ port of training/semantic_eval.py's image analysis (the rules are in that file's
//    docstring), checked against Python's results on ground truth rendered by training/dataset.py and on
//    shapes drawn here, including images that must fail, so that the semantic test can fail for the right
//    reasons only;
//  - DemoModel.SemanticAccuracy: the fixed seeded prompts of semantic_eval.py (tests/fixtures/demo/
//    semantic_prompts.json, written by scripts/make_demo_reference.py) through sdrt's txt2img, each image
//    checked for the requested colours, shapes, counts, places and relations; the share that passes must
//    reach kMinSemanticAccuracy;
//  - DemoModel.MatchesDiffusers: a few of those prompts against diffusers' StableDiffusionPipeline (CPU,
//  fp32):
//    images within the CPU parity bar of test_pipeline.cpp (<= 1 level in >= 99% of values, <= 3 anywhere);
//  - DemoCli: `sdrt txt2img` and `sdrt info` without --model use the demo model, SDRT_MODEL overrides it.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json_file.h"
#include "io/npy.h"
#include "io/png.h"
#include "sdrt/model.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::fixtures_dir;
using testing::shell_quote;
using testing::TempDir;

// The share of the semantic prompts that sdrt's images of the shipped demo model must get right. Set a little
// below the accuracy measured on the shipped model (models/demo/README.md) so that a regression anywhere in
// the CPU pipeline, or a worse model, fails the test. The shipped model: 23/24 = 0.96 through diffusers (71/72
// with three more seeds per prompt); the bar needs 22/24.
constexpr double kMinSemanticAccuracy = 0.9;

std::filesystem::path demo_model_dir() {
  return SDRT_DEMO_MODEL_DIR;
}
std::filesystem::path demo_fixtures() {
  return fixtures_dir() / "demo";
}

// ---------------------------------------------------------------------------------------------- analysis

struct Rules {  // semantic_prompts.json: palette (class order), component size floor, fill thresholds
  std::vector<std::string> colour_names;
  std::vector<std::array<int, 3>> colours;
  double min_area_fraction = 0;
  std::vector<std::pair<double, std::string>> shape_thresholds;  // (lowest fill, shape), descending
};

struct ObjectSpec {
  std::string colour, shape;
  int count = 1;
};

struct Spec {
  std::string bg;  // "" when the prompt names no background
  std::string place, relation;
  std::vector<ObjectSpec> objects;
};

struct Found {
  std::string colour, shape;
  int area = 0;
  double fill = 0, cx = 0, cy = 0;  // centroid as fractions of width / height
};

struct Analysis {
  std::string bg;
  std::vector<Found> objects;
};

const nlohmann::json& prompt_file() {
  static const nlohmann::json j = io::read_json_file(demo_fixtures() / "semantic_prompts.json");
  return j;
}

const Rules& rules() {
  static const Rules r = [] {
    const auto& j = prompt_file();
    Rules out;
    for (const auto& c : j["palette"]) {
      out.colour_names.push_back(c["name"]);
      out.colours.push_back({c["rgb"][0].get<int>(), c["rgb"][1].get<int>(), c["rgb"][2].get<int>()});
    }
    out.min_area_fraction = j["min_area_fraction"];
    for (const auto& t : j["shape_thresholds"]) out.shape_thresholds.emplace_back(t[0], t[1]);
    return out;
  }();
  return r;
}

std::string str_or_empty(const nlohmann::json& j, const char* key) {
  return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

Spec spec_of(const nlohmann::json& j) {
  Spec s;
  if (j.value("bg_named", false)) s.bg = j["bg"];
  s.place = str_or_empty(j, "place");
  s.relation = str_or_empty(j, "relation");
  for (const auto& o : j["objects"]) s.objects.push_back({o["colour"], o["shape"], o["count"].get<int>()});
  return s;
}

std::string shape_of(double fill) {
  for (const auto& [threshold, name] : rules().shape_thresholds)
    if (fill >= threshold) return name;
  return "star";
}

// semantic_eval.analyse: nearest palette class per pixel, the most frequent class is the background, every
// other class's mask is eroded once (4-neighbourhood, outside counts as inside), its 4-connected components
// (raster order) of at least min_area pixels are the objects, classified by how much of their box they fill.
Analysis analyse(const std::vector<uint8_t>& rgb, int width, int height) {
  const Rules& r = rules();
  const int n_classes = static_cast<int>(r.colours.size());
  std::vector<int> cls(static_cast<size_t>(width) * height);
  std::vector<int64_t> counts(n_classes, 0);
  for (size_t p = 0; p < cls.size(); ++p) {
    int best = 0, best_d = -1;
    for (int c = 0; c < n_classes; ++c) {
      int d = 0;
      for (int k = 0; k < 3; ++k) {
        const int diff = static_cast<int>(rgb[3 * p + k]) - r.colours[c][k];
        d += diff * diff;
      }
      if (best_d < 0 || d < best_d) best = c, best_d = d;  // ties keep the lower index
    }
    cls[p] = best;
    ++counts[best];
  }
  const int bg = static_cast<int>(std::max_element(counts.begin(), counts.end()) - counts.begin());
  const auto min_area = static_cast<int64_t>(std::ceil(r.min_area_fraction * height * width));
  Analysis out;
  out.bg = r.colour_names[bg];
  const auto at = [&](int y, int x) { return static_cast<size_t>(y) * width + x; };
  for (int c = 0; c < n_classes; ++c) {
    if (c == bg || counts[c] == 0) continue;
    std::vector<uint8_t> mask(cls.size(), 0);
    const auto in = [&](int y, int x) {  // outside the image counts as in the mask
      return y < 0 || y >= height || x < 0 || x >= width || cls[at(y, x)] == c;
    };
    for (int y = 0; y < height; ++y)
      for (int x = 0; x < width; ++x)
        mask[at(y, x)] = cls[at(y, x)] == c && in(y - 1, x) && in(y + 1, x) && in(y, x - 1) && in(y, x + 1);
    std::vector<uint8_t> seen(cls.size(), 0);
    for (int y0 = 0; y0 < height; ++y0) {
      for (int x0 = 0; x0 < width; ++x0) {
        if (!mask[at(y0, x0)] || seen[at(y0, x0)]) continue;
        seen[at(y0, x0)] = 1;
        std::deque<std::pair<int, int>> queue{{y0, x0}};
        int64_t area = 0, sum_x = 0, sum_y = 0;
        int bx0 = x0, bx1 = x0, by0 = y0, by1 = y0;
        while (!queue.empty()) {
          const auto [y, x] = queue.front();
          queue.pop_front();
          ++area, sum_x += x, sum_y += y;
          bx0 = std::min(bx0, x), bx1 = std::max(bx1, x), by0 = std::min(by0, y), by1 = std::max(by1, y);
          for (const auto& [yy, xx] : {std::pair{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}}) {
            if (yy < 0 || yy >= height || xx < 0 || xx >= width) continue;
            if (mask[at(yy, xx)] && !seen[at(yy, xx)]) {
              seen[at(yy, xx)] = 1;
              queue.emplace_back(yy, xx);
            }
          }
        }
        if (area < min_area) continue;
        Found f;
        f.colour = r.colour_names[c];
        f.area = static_cast<int>(area);
        f.fill = static_cast<double>(area) / static_cast<double>((bx1 - bx0 + 1) * (by1 - by0 + 1));
        f.shape = shape_of(f.fill);
        f.cx = (static_cast<double>(sum_x) / static_cast<double>(area) + 0.5) / width;
        f.cy = (static_cast<double>(sum_y) / static_cast<double>(area) + 0.5) / height;
        out.objects.push_back(f);
      }
    }
  }
  return out;
}

bool place_ok(const std::string& place, double cx, double cy) {
  if (place == "center") return std::fabs(cx - 0.5) < 0.15 && std::fabs(cy - 0.5) < 0.15;
  bool ok = true;
  size_t start = 0;
  while (start < place.size()) {
    const size_t end = std::min(place.find(' ', start), place.size());
    const std::string part = place.substr(start, end - start);
    ok &= part == "left" ? cx < 0.4 : part == "right" ? cx > 0.6 : part == "top" ? cy < 0.4 : cy > 0.6;
    start = end + 1;
  }
  return ok;
}

// semantic_eval.check: the reasons the analysis does not match the spec (empty: it passes).
std::vector<std::string> check(const Spec& spec, const Analysis& found) {
  std::vector<std::string> fails;
  if (!spec.bg.empty() && found.bg != spec.bg)
    fails.push_back(fmt::format("background {} != {}", found.bg, spec.bg));
  int total = 0;
  std::vector<std::vector<const Found*>> groups;
  for (const auto& o : spec.objects) {
    total += o.count;
    std::vector<const Found*> mine;
    std::vector<std::string> bad;
    for (const auto& f : found.objects) {
      if (f.colour != o.colour) continue;
      mine.push_back(&f);
      if (f.shape != o.shape) bad.push_back(f.shape);
    }
    if (static_cast<int>(mine.size()) != o.count)
      fails.push_back(fmt::format("{} {} objects != {}", mine.size(), o.colour, o.count));
    if (!bad.empty())
      fails.push_back(fmt::format("{} shapes [{}] != {}", o.colour, fmt::join(bad, ", "), o.shape));
    groups.push_back(mine);
  }
  if (static_cast<int>(found.objects.size()) != total)
    fails.push_back(fmt::format("{} objects in all != {}", found.objects.size(), total));
  if (!spec.place.empty() && groups[0].size() == 1 &&
      !place_ok(spec.place, groups[0][0]->cx, groups[0][0]->cy))
    fails.push_back(
        fmt::format("place ({:.2f}, {:.2f}) is not {}", groups[0][0]->cx, groups[0][0]->cy, spec.place));
  const std::string& rel = spec.relation;
  if ((rel == "above" || rel == "below" || rel == "left of" || rel == "right of") && groups.size() == 2 &&
      groups[0].size() == 1 && groups[1].size() == 1) {
    const Found &a = *groups[0][0], &b = *groups[1][0];
    const bool ok = rel == "above"     ? a.cy + 0.1 < b.cy
                    : rel == "below"   ? a.cy > b.cy + 0.1
                    : rel == "left of" ? a.cx + 0.1 < b.cx
                                       : a.cx > b.cx + 0.1;
    if (!ok)
      fails.push_back(fmt::format("relation {} fails: A ({:.2f}, {:.2f}) B ({:.2f}, {:.2f})", rel, a.cx, a.cy,
                                  b.cx, b.cy));
  }
  return fails;
}

// ---------------------------------------------------------------------------------------------- drawing

// Flat shapes drawn the way training/dataset.py draws them (2x supersampled, box-filtered down), for checks
// of the analysis that do not depend on Python.
class Canvas {
 public:
  Canvas(int size, const std::string& bg)
      : size_(size), big_(2 * size), px_(static_cast<size_t>(big_) * big_) {
    std::fill(px_.begin(), px_.end(), colour(bg));
  }
  // Centre (x, y) and size s as fractions of the side, like dataset.layout's items.
  void draw(const std::string& shape, const std::string& col, double x, double y, double s) {
    const double cx = x * big_, cy = y * big_, sz = s * big_;
    std::vector<std::pair<double, double>> poly;
    if (shape == "triangle") {
      const double w = sz * 1.05, h = w * std::sqrt(3.0) / 2;
      poly = {{cx, cy - h / 2}, {cx + w / 2, cy + h / 2}, {cx - w / 2, cy + h / 2}};
    } else if (shape == "star") {
      const double pi = std::acos(-1.0), r_out = sz / (2 * std::sin(72 * pi / 180)) * 1.1,
                   r_in = r_out * 0.42;
      const double oy = cy - r_out * (1 + std::cos(36 * pi / 180)) / 2 + r_out;
      for (int k = 0; k < 10; ++k) {
        const double ang = (-90 + 36 * k) * pi / 180, r = k % 2 == 0 ? r_out : r_in;
        poly.emplace_back(cx + r * std::cos(ang), oy + r * std::sin(ang));
      }
    }
    const auto c = colour(col);
    for (int py = 0; py < big_; ++py) {
      for (int px = 0; px < big_; ++px) {
        const double u = px + 0.5, v = py + 0.5;
        bool inside = false;
        if (shape == "circle") {
          inside = (u - cx) * (u - cx) + (v - cy) * (v - cy) <= sz * sz / 4;
        } else if (shape == "square") {
          inside = std::fabs(u - cx) <= sz * 0.43 && std::fabs(v - cy) <= sz * 0.43;
        } else {  // even-odd rule
          for (size_t i = 0, j = poly.size() - 1; i < poly.size(); j = i++) {
            const auto [xi, yi] = poly[i];
            const auto [xj, yj] = poly[j];
            if ((yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi) inside = !inside;
          }
        }
        if (inside) px_[static_cast<size_t>(py) * big_ + px] = c;
      }
    }
  }
  std::vector<uint8_t> rgb() const {  // 2 x 2 box filter, rounded like PIL's reduce
    std::vector<uint8_t> out(static_cast<size_t>(size_) * size_ * 3);
    for (int y = 0; y < size_; ++y)
      for (int x = 0; x < size_; ++x)
        for (int k = 0; k < 3; ++k) {
          int sum = 0;
          for (int dy = 0; dy < 2; ++dy)
            for (int dx = 0; dx < 2; ++dx) sum += px_[static_cast<size_t>(2 * y + dy) * big_ + 2 * x + dx][k];
          out[(static_cast<size_t>(y) * size_ + x) * 3 + k] = static_cast<uint8_t>((sum + 2) / 4);
        }
    return out;
  }

 private:
  static std::array<int, 3> colour(const std::string& name) {
    const auto& r = rules();
    const auto it = std::find(r.colour_names.begin(), r.colour_names.end(), name);
    EXPECT_NE(it, r.colour_names.end()) << name;
    return r.colours[static_cast<size_t>(it - r.colour_names.begin())];
  }
  int size_, big_;
  std::vector<std::array<int, 3>> px_;
};

Spec make_spec(const std::string& bg, std::vector<ObjectSpec> objects, const std::string& place = "",
               const std::string& relation = "") {
  return Spec{bg, place, relation, std::move(objects)};
}

// ---------------------------------------------------------------------------------------------- tests

// The port finds exactly what Python finds on scenes rendered by dataset.py: every eval prompt's scene and 8
// random data-set scenes (all of which pass Python's check).
TEST(DemoAnalysis, MatchesPythonOnRenderedGroundTruth) {
  const auto dir = demo_fixtures() / "groundtruth";
  const auto cases = io::read_json_file(dir / "groundtruth.json")["cases"];
  ASSERT_GE(cases.size(), 24u);
  for (const auto& c : cases) {
    SCOPED_TRACE(c["image"].get<std::string>());
    const auto png = io::read_png_rgb8(dir / c["image"].get<std::string>());
    const Analysis got = analyse(png.rgb8, static_cast<int>(png.width), static_cast<int>(png.height));
    const auto& want = c["found"];
    EXPECT_EQ(got.bg, want["bg"].get<std::string>());
    ASSERT_EQ(got.objects.size(), want["objects"].size());
    for (size_t i = 0; i < got.objects.size(); ++i) {
      const auto& w = want["objects"][i];
      EXPECT_EQ(got.objects[i].colour, w["colour"].get<std::string>());
      EXPECT_EQ(got.objects[i].shape, w["shape"].get<std::string>());
      EXPECT_EQ(got.objects[i].area, w["area"].get<int>());
      EXPECT_NEAR(got.objects[i].fill, w["fill"].get<double>(), 1e-4);
      EXPECT_NEAR(got.objects[i].cx, w["cx"].get<double>(), 1e-9);
      EXPECT_NEAR(got.objects[i].cy, w["cy"].get<double>(), 1e-9);
    }
    EXPECT_TRUE(c["pass"].get<bool>());
    EXPECT_EQ(check(spec_of(c["spec"]), got), std::vector<std::string>{});
  }
}

// Shapes drawn here are found with the right colour, shape and place, and wrong pictures fail with the reason
// that makes them wrong (swapped colours, a missing or extra object, a wrong shape, place or relation).
TEST(DemoAnalysis, JudgesShapesDrawnHere) {
  const auto analyse_canvas = [](const Canvas& c) { return analyse(c.rgb(), 128, 128); };
  {
    Canvas c(128, "blue");
    c.draw("circle", "red", 0.5, 0.5, 0.42);
    const Analysis a = analyse_canvas(c);
    EXPECT_EQ(a.bg, "blue");
    ASSERT_EQ(a.objects.size(), 1u);
    EXPECT_EQ(a.objects[0].colour, "red");
    EXPECT_EQ(a.objects[0].shape, "circle");
    EXPECT_NEAR(a.objects[0].cx, 0.5, 0.01);
    EXPECT_NEAR(a.objects[0].cy, 0.5, 0.01);
    EXPECT_TRUE(check(make_spec("blue", {{"red", "circle"}}), a).empty());
    EXPECT_TRUE(check(make_spec("", {{"red", "circle"}}, "center"), a).empty());
    // Colour binding: the same picture is not "a blue circle on a red background".
    const auto swapped = check(make_spec("red", {{"blue", "circle"}}), a);
    ASSERT_FALSE(swapped.empty());
    EXPECT_EQ(swapped[0], "background blue != red");
    EXPECT_FALSE(check(make_spec("blue", {{"red", "square"}}), a).empty());
    EXPECT_FALSE(check(make_spec("blue", {{"red", "circle", 2}}), a).empty());
    EXPECT_FALSE(check(make_spec("blue", {{"red", "circle"}}, "top left"), a).empty());
  }
  for (const char* shape : {"circle", "square", "triangle", "star"}) {
    SCOPED_TRACE(shape);
    Canvas c(128, "white");
    c.draw(shape, "green", 0.27, 0.73, 0.34);
    const Analysis a = analyse_canvas(c);
    EXPECT_TRUE(check(make_spec("white", {{"green", shape}}, "bottom left"), a).empty());
    EXPECT_FALSE(check(make_spec("white", {{"green", shape}}, "top right"), a).empty());
  }
  {
    Canvas c(128, "black");
    c.draw("star", "yellow", 0.45, 0.25, 0.28);
    c.draw("triangle", "purple", 0.5, 0.75, 0.28);
    const Analysis a = analyse_canvas(c);
    EXPECT_TRUE(
        check(make_spec("black", {{"yellow", "star"}, {"purple", "triangle"}}, "", "above"), a).empty());
    EXPECT_TRUE(check(make_spec("", {{"purple", "triangle"}, {"yellow", "star"}}, "", "below"), a).empty());
    EXPECT_FALSE(check(make_spec("", {{"yellow", "star"}, {"purple", "triangle"}}, "", "below"), a).empty());
    EXPECT_FALSE(check(make_spec("", {{"purple", "star"}, {"yellow", "triangle"}}, "", "above"), a).empty());
    EXPECT_FALSE(check(make_spec("", {{"yellow", "star", 1}}), a).empty());  // an extra object
  }
  {
    Canvas c(128, "white");
    for (double x : {0.2, 0.5, 0.8}) c.draw("square", "red", x, 0.5, 0.2);
    EXPECT_TRUE(check(make_spec("white", {{"red", "square", 3}}), analyse_canvas(c)).empty());
    EXPECT_FALSE(check(make_spec("white", {{"red", "square", 2}}), analyse_canvas(c)).empty());
  }
  {  // a blank picture has no objects
    const Canvas c(128, "orange");
    const Analysis a = analyse_canvas(c);
    EXPECT_EQ(a.bg, "orange");
    EXPECT_TRUE(a.objects.empty());
    EXPECT_FALSE(check(make_spec("orange", {{"blue", "circle"}}), a).empty());
  }
}

GenerateOptions demo_options(const std::string& prompt, uint64_t seed) {
  const auto& j = prompt_file();
  GenerateOptions o;
  o.prompt = prompt;
  o.seed = seed;
  o.steps = j["steps"];
  o.cfg_scale = j["guidance"];
  o.width = o.height = j["size"];
  return o;
}

TEST(DemoModel, SemanticAccuracy) {
  const auto model = Model::load(demo_model_dir());
  const auto& prompts = prompt_file()["prompts"];
  ASSERT_GE(prompts.size(), 20u);
  int passed = 0;
  std::string report;
  for (const auto& p : prompts) {
    const std::string prompt = p["prompt"];
    const Image image = model.txt2img(demo_options(prompt, p["seed"].get<uint64_t>()));
    const auto fails = check(spec_of(p["spec"]), analyse(image.rgb, image.width, image.height));
    passed += fails.empty();
    report += fmt::format("{} {}{}{}\n", fails.empty() ? "PASS" : "FAIL", prompt, fails.empty() ? "" : "  ",
                          fmt::join(fails, "; "));
  }
  const double accuracy = static_cast<double>(passed) / static_cast<double>(prompts.size());
  RecordProperty("semantic_accuracy", fmt::format("{}/{}", passed, prompts.size()));
  std::printf("%ssemantic accuracy %d/%zu = %.3f (threshold %.2f)\n", report.c_str(), passed, prompts.size(),
              accuracy, kMinSemanticAccuracy);
  EXPECT_GE(accuracy, kMinSemanticAccuracy) << report;
}

// sum over the file's bytes of (index + 1) * byte mod 2^64, as scripts/make_demo_reference.py computes it.
std::string checksum(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> buf(1 << 20);
  uint64_t h = 0, i = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize k = 0; k < in.gcount(); ++k)
      h += ++i * static_cast<uint8_t>(buf[static_cast<size_t>(k)]);
  }
  return fmt::format("{:016x}", h);
}

TEST(DemoModel, MatchesDiffusers) {
  const auto ref = demo_fixtures() / "reference";
  const auto doc = io::read_json_file(ref / "cases.json");
  for (const auto& [file, sum] : doc["model_files"].items())
    ASSERT_EQ(checksum(demo_model_dir() / file), sum.get<std::string>())
        << file << " changed since tests/fixtures/demo/reference was made: re-run "
        << "scripts/make_demo_reference.py";
  const auto model = Model::load(demo_model_dir());
  ASSERT_GE(doc["cases"].size(), 3u);
  for (const auto& c : doc["cases"]) {
    SCOPED_TRACE(c.dump());
    const GenerateOptions o = model.resolve(demo_options(c["prompt"], c["seed"].get<uint64_t>()));
    ASSERT_EQ(o.steps, c["steps"].get<int>());
    ASSERT_EQ(o.cfg_scale, c["guidance"].get<double>());
    const Tensor context = model.encode_prompts(o);
    Sampling sampling = model.prepare_latents(o);
    const Tensor latents = model.denoise(sampling, context, o.cfg_scale);
    const Tensor want_latents = io::read_npy(ref / c["latents"].get<std::string>());
    ASSERT_EQ(latents.shape(), want_latents.shape());
    double worst = 0.0, scale = 0.0;
    for (int64_t i = 0; i < latents.numel(); ++i) {
      worst = std::max(
          worst, static_cast<double>(std::fabs(latents.data<float>()[i] - want_latents.data<float>()[i])));
      scale = std::max(scale, static_cast<double>(std::fabs(want_latents.data<float>()[i])));
    }
    RecordProperty("latents_rel_diff_" + c["image"].get<std::string>(), fmt::format("{:.3g}", worst / scale));
    EXPECT_LE(worst / scale, 1e-3) << "latents";

    const Image image = model.decode_latents(latents);
    const auto want = io::read_png_rgb8(ref / c["image"].get<std::string>());
    ASSERT_EQ(image.width, want.width);
    ASSERT_EQ(image.height, want.height);
    ASSERT_EQ(image.rgb.size(), want.rgb8.size());
    int max_diff = 0;
    size_t within_one = 0;
    for (size_t i = 0; i < image.rgb.size(); ++i) {
      const int d = std::abs(static_cast<int>(image.rgb[i]) - static_cast<int>(want.rgb8[i]));
      max_diff = std::max(max_diff, d);
      within_one += d <= 1;
    }
    EXPECT_LE(max_diff, 3);
    EXPECT_GE(static_cast<double>(within_one) / static_cast<double>(image.rgb.size()), 0.99);
  }
}

// Runs the CLI with SDRT_MODEL set to `model_env` (or unset when empty).
testing::CommandResult run_cli_env(const std::string& model_env, const std::string& args) {
  const std::string env =
      model_env.empty() ? "env -u SDRT_MODEL" : "env SDRT_MODEL=" + shell_quote(model_env);
  TempDir tmp;
  const auto out_path = tmp / "stdout", err_path = tmp / "stderr";
  const std::string cmd = env + " '" + SDRT_CLI_PATH + "' " + args + " >'" + out_path.string() + "' 2>'" +
                          err_path.string() + "'";
  const int status = std::system(cmd.c_str());
  testing::CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = testing::read_file(out_path);
  r.err = testing::read_file(err_path);
  return r;
}

TEST(DemoCli, WithoutModelUsesTheDemoModel) {
  TempDir tmp;
  const auto out = tmp / "out.png";
  const auto r = run_cli_env("",
                             "txt2img --prompt 'a red circle on a blue background' --seed 1000 --steps 20 "
                             "--output " +
                                 shell_quote(out.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto png = io::read_png_rgb8(out);
  EXPECT_EQ(png.width, 128);
  EXPECT_EQ(png.height, 128);
  const auto model = Model::load(demo_model_dir());
  EXPECT_EQ(png.rgb8, model.txt2img(demo_options("a red circle on a blue background", 1000)).rgb);
  ASSERT_EQ(png.text.size(), 1u);
  EXPECT_NE(png.text[0].second.find("Model: demo"), std::string::npos) << png.text[0].second;

  const auto info = run_cli_env("", "info");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("model: " + demo_model_dir().string()), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("unet (UNet2DConditionModel)"), std::string::npos) << info.out;
}

TEST(DemoCli, SdrtModelEnvironmentOverridesTheDefault) {
  const auto tiny = (fixtures_dir() / "tiny-sd1").string();
  const auto info = run_cli_env(tiny, "info");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("model: " + tiny), std::string::npos) << info.out;
  // --model still wins over the environment.
  const auto both = run_cli_env(tiny, "info --model " + shell_quote(demo_model_dir().string()));
  ASSERT_EQ(both.exit_code, 0) << both.err;
  EXPECT_NE(both.out.find("model: " + demo_model_dir().string()), std::string::npos) << both.out;
  // A missing model is one error line that names it.
  TempDir tmp;
  const auto r = run_cli_env("/nonexistent/sdrt-model",
                             "txt2img --prompt hi --output " + shell_quote((tmp / "x.png").string()));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("sdrt: error: ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/sdrt-model"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "x.png"));
}

}  // namespace
}  // namespace sdrt
