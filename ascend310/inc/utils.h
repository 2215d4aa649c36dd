/**
 * Host-side helpers of the Ascend 310 road-segmentation program: file listing, binary tile I/O
 * and the run-time statistics file. They use only the C++17 standard library so they compile and
 * are tested on any machine, with or without the Ascend toolkit.
 */
#ifndef ROADSEG_ASCEND310_UTILS_H_
#define ROADSEG_ASCEND310_UTILS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace roadseg {

/** Sorted paths of the regular files in `dir` whose names end with `suffix` (e.g. ".bin"). */
std::vector<std::string> ListFiles(const std::string &dir, const std::string &suffix);

/** Whole file as bytes; throws std::runtime_error naming the file when it cannot be read. */
std::vector<uint8_t> ReadBinary(const std::string &path);

/** Writes `size` bytes to `path` via a temporary name and a rename (never a partial file). */
void WriteBinaryAtomic(const std::string &path, const void *data, size_t size);

/** File name without directory and without the last extension: "/a/b/t_0007.bin" -> "t_0007". */
std::string Stem(const std::string &path);

/** Creates `dir` (and parents) if needed; throws std::runtime_error on failure. */
void MakeDirs(const std::string &dir);

/** Expected byte size of a float32 tensor of `shape`; throws on negative dimensions. */
size_t Float32Bytes(const std::vector<int64_t> &shape);

/** Mean and total of `times_ms`, written as one JSON object to `path` (atomic). */
void WriteTimingJson(const std::string &path, const std::vector<double> &times_ms, int device_id,
                     const std::string &model_path);

}  // namespace roadseg

#endif  // ROADSEG_ASCEND310_UTILS_H_
