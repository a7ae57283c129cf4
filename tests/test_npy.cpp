#include <gtest/gtest.h>

#include "io/npy.h"
#include "sdrt/error.h"
#include "test_util.h"

namespace sdrt {
namespace {

using testing::TempDir;

TEST(Npy, RoundTrip) {
  TempDir tmp;
  const std::vector<float> values = {1.0f, -2.5f, 3.25f, 0.0f, 1e-30f, -7.0f};
  const Tensor t = Tensor::from_f32({1, 2, 3}, values);
  io::write_npy(tmp / "a.npy", t);
  const Tensor back = io::read_npy(tmp / "a.npy");
  ASSERT_EQ(back.shape(), (Shape{1, 2, 3}));
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(back.data<float>()[i], values[i]);
  // The data starts on a 64-byte boundary, as numpy writes it.
  EXPECT_EQ((std::filesystem::file_size(tmp / "a.npy") - values.size() * 4) % 64, 0u);
}

TEST(Npy, OneDimensionalAndScalar) {
  TempDir tmp;
  io::write_npy(tmp / "v.npy", Tensor::from_f32({3}, std::vector<float>{1, 2, 3}));
  EXPECT_EQ(io::read_npy(tmp / "v.npy").shape(), (Shape{3}));
  io::write_npy(tmp / "s.npy", Tensor::from_f32({}, std::vector<float>{4}));
  const Tensor s = io::read_npy(tmp / "s.npy");
  EXPECT_EQ(s.shape(), Shape{});
  EXPECT_EQ(s.data<float>()[0], 4.0f);
}

TEST(Npy, F16TensorIsWrittenAsF32) {
  TempDir tmp;
  const Tensor t = Tensor::from_f32({2}, std::vector<float>{0.5f, -1.0f}).to(DType::kF16);
  io::write_npy(tmp / "h.npy", t);
  const Tensor back = io::read_npy(tmp / "h.npy");
  EXPECT_EQ(back.data<float>()[0], 0.5f);
  EXPECT_EQ(back.data<float>()[1], -1.0f);
}

void expect_format_error(const std::string& bytes, const std::string& needle) {
  try {
    io::parse_npy(bytes.data(), bytes.size(), "x.npy");
    ADD_FAILURE() << "expected an error for " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_NE(std::string(e.what()).find("x.npy"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::string npy_bytes(const std::string& header, size_t data_bytes) {
  std::string out = "\x93NUMPY\x01";
  out += '\0';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  return out + header + std::string(data_bytes, '\0');
}

TEST(Npy, RejectsBadFiles) {
  expect_format_error("hello", "magic");
  expect_format_error(npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 16), "'<f8'");
  expect_format_error(npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", 8), "Fortran");
  expect_format_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 8),
                      "24 bytes");
  expect_format_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, }", 8), "'shape'");
  expect_format_error(npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", 8), "shape");
  std::string truncated = npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8);
  truncated[8] = '\xff';  // header length beyond the file
  expect_format_error(truncated, "header length");
}

TEST(Npy, MissingFile) {
  EXPECT_THROW(io::read_npy("/nonexistent/a.npy"), Error);
}

}  // namespace
}  // namespace sdrt
