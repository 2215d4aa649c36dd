#include "utils.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace fs = std::filesystem;

namespace roadseg {

std::vector<std::string> ListFiles(const std::string &dir, const std::string &suffix) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error(dir + ": not a directory");
  }
  std::vector<std::string> out;
  for (const auto &entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    if (name.size() >= suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      out.push_back(entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<uint8_t> ReadBinary(const std::string &path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error(path + ": cannot open for reading");
  const std::streamsize size = in.tellg();
  in.seekg(0, std::ios::beg);
  std::vector<uint8_t> buf(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char *>(buf.data()), size)) {
    throw std::runtime_error(path + ": read failed");
  }
  return buf;
}

void WriteBinaryAtomic(const std::string &path, const void *data, size_t size) {
  const std::string tmp = path + ".part";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw std::runtime_error(tmp + ": cannot open for writing");
    out.write(reinterpret_cast<const char *>(data), static_cast<std::streamsize>(size));
    if (!out) throw std::runtime_error(tmp + ": write failed");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw std::runtime_error(path + ": rename failed");
  }
}

std::string Stem(const std::string &path) { return fs::path(path).stem().string(); }

void MakeDirs(const std::string &dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) throw std::runtime_error(dir + ": cannot create directory");
}

size_t Float32Bytes(const std::vector<int64_t> &shape) {
  size_t n = sizeof(float);
  for (int64_t d : shape) {
    if (d < 0) throw std::runtime_error("dynamic or negative dimension in model input shape");
    n *= static_cast<size_t>(d);
  }
  return n;
}

void WriteTimingJson(const std::string &path, const std::vector<double> &times_ms, int device_id,
                     const std::string &model_path) {
  const double total = std::accumulate(times_ms.begin(), times_ms.end(), 0.0);
  const double mean = times_ms.empty() ? 0.0 : total / static_cast<double>(times_ms.size());
  std::ostringstream js;
  js << "{\"device_id\": " << device_id << ", \"model\": \"" << model_path << "\", \"batches\": "
     << times_ms.size() << ", \"total_ms\": " << total << ", \"mean_ms_per_batch\": " << mean
     << "}\n";
  const std::string s = js.str();
  WriteBinaryAtomic(path, s.data(), s.size());
}

}  // namespace roadseg
