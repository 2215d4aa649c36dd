// Unit test of the host-side helpers (no Ascend toolkit needed): ctest-free, exits non-zero on
// the first failed check and prints "N passed, 0 failed" at the end.
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "utils.h"

namespace fs = std::filesystem;
static int passed = 0;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::cerr << __FILE__ << ":" << __LINE__ << ": CHECK failed: " #cond "\n"; \
      std::cout << passed << " passed, 1 failed\n";                              \
      return 1;                                                                  \
    }                                                                            \
    ++passed;                                                                    \
  } while (0)

int main() {
  const fs::path dir = fs::temp_directory_path() / ("roadseg310_test_" + std::to_string(::getpid()));
  roadseg::MakeDirs((dir / "sub").string());
  CHECK(fs::is_directory(dir / "sub"));

  std::vector<float> v = {1.f, 2.5f, -3.f};
  roadseg::WriteBinaryAtomic((dir / "b_0002.bin").string(), v.data(), v.size() * sizeof(float));
  roadseg::WriteBinaryAtomic((dir / "a_0001.bin").string(), v.data(), 4);
  roadseg::WriteBinaryAtomic((dir / "note.txt").string(), "x", 1);
  CHECK(!fs::exists(dir / "b_0002.bin.part"));

  auto files = roadseg::ListFiles(dir.string(), ".bin");
  CHECK(files.size() == 2);
  CHECK(roadseg::Stem(files[0]) == "a_0001");
  CHECK(roadseg::Stem(files[1]) == "b_0002");

  auto bytes = roadseg::ReadBinary(files[1]);
  CHECK(bytes.size() == 12);
  const float *f = reinterpret_cast<const float *>(bytes.data());
  CHECK(f[1] == 2.5f && f[2] == -3.f);

  CHECK(roadseg::Float32Bytes({2, 3, 64, 64}) == 2u * 3 * 64 * 64 * 4);
  bool threw = false;
  try {
    roadseg::Float32Bytes({-1, 3});
  } catch (const std::runtime_error &) {
    threw = true;
  }
  CHECK(threw);
  threw = false;
  try {
    roadseg::ReadBinary((dir / "missing.bin").string());
  } catch (const std::runtime_error &e) {
    threw = std::string(e.what()).find("missing.bin") != std::string::npos;
  }
  CHECK(threw);

  roadseg::WriteTimingJson((dir / "timing.json").string(), {2.0, 4.0}, 0, "net.mindir");
  auto js = roadseg::ReadBinary((dir / "timing.json").string());
  std::string s(js.begin(), js.end());
  CHECK(s.find("\"mean_ms_per_batch\": 3") != std::string::npos);

  fs::remove_all(dir);
  std::cout << passed << " passed, 0 failed\n";
  return 0;
}
