/**
 * RoadSeg Studio: run an exported segmentation network (MindIR) on an Ascend 310 over the binary
 * tiles written by preprocess.py, writing one float32 logits file per input batch for
 * postprocess.py.
 *
 *   roadseg_310 --mindir_path=net.mindir --input_path=pre/tiles --result_path=out/result
 *               [--device_id=0] [--precision_mode=allow_fp32_to_fp16|force_fp32]
 *
 * Input files: `<name>.bin`, raw float32 NCHW with exactly the model's (static) input shape, the
 * batch dimension included (preprocess.py pads the last batch). Output: `<name>_0.bin`, raw
 * float32 NKHW logits, plus `timing.json` with the per-batch device times.
 */
#include <chrono>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "utils.h"

using mindspore::Context;
using mindspore::Graph;
using mindspore::GraphCell;
using mindspore::Model;
using mindspore::ModelType;
using mindspore::MSTensor;
using mindspore::Serialization;
using mindspore::Status;

namespace {

std::map<std::string, std::string> ParseArgs(int argc, char **argv) {
  std::map<std::string, std::string> args = {{"device_id", "0"},
                                             {"precision_mode", "allow_fp32_to_fp16"}};
  for (int i = 1; i < argc; ++i) {
    std::string a(argv[i]);
    if (a.rfind("--", 0) != 0 || a.find('=') == std::string::npos) {
      throw std::runtime_error("argument '" + a + "' is not of the form --name=value");
    }
    const size_t eq = a.find('=');
    args[a.substr(2, eq - 2)] = a.substr(eq + 1);
  }
  for (const char *req : {"mindir_path", "input_path", "result_path"}) {
    if (args.find(req) == args.end() || args[req].empty()) {
      throw std::runtime_error(std::string("missing --") + req + "=...");
    }
  }
  return args;
}

int Run(const std::map<std::string, std::string> &args) {
  const std::string mindir = args.at("mindir_path");
  const int device_id = std::stoi(args.at("device_id"));

  auto context = std::make_shared<Context>();
  auto ascend310 = std::make_shared<mindspore::Ascend310DeviceInfo>();
  ascend310->SetDeviceID(device_id);
  ascend310->SetPrecisionMode(args.at("precision_mode"));
  context->MutableDeviceInfo().push_back(ascend310);

  Graph graph;
  Status ret = Serialization::Load(mindir, ModelType::kMindIR, &graph);
  if (ret != mindspore::kSuccess) {
    std::cerr << mindir << ": cannot load MindIR: " << ret.ToString() << std::endl;
    return 1;
  }
  Model model;
  ret = model.Build(GraphCell(graph), context);
  if (ret != mindspore::kSuccess) {
    std::cerr << mindir << ": build failed on device " << device_id << ": " << ret.ToString()
              << std::endl;
    return 1;
  }

  std::vector<MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1) {
    std::cerr << mindir << ": expected one input, found " << model_inputs.size() << std::endl;
    return 1;
  }
  const MSTensor &in0 = model_inputs[0];
  const size_t expect_bytes = roadseg::Float32Bytes(in0.Shape());

  const std::vector<std::string> files = roadseg::ListFiles(args.at("input_path"), ".bin");
  if (files.empty()) {
    std::cerr << args.at("input_path") << ": no .bin tiles found (run preprocess.py first)"
              << std::endl;
    return 1;
  }
  roadseg::MakeDirs(args.at("result_path"));

  std::vector<double> times_ms;
  for (const std::string &file : files) {
    std::vector<uint8_t> data = roadseg::ReadBinary(file);
    if (data.size() != expect_bytes) {
      std::cerr << file << ": " << data.size() << " bytes, the model input needs " << expect_bytes
                << std::endl;
      return 1;
    }
    std::vector<MSTensor> inputs;
    inputs.emplace_back(in0.Name(), in0.DataType(), in0.Shape(), data.data(), data.size());
    std::vector<MSTensor> outputs;
    const auto t0 = std::chrono::steady_clock::now();
    ret = model.Predict(inputs, &outputs);
    const auto t1 = std::chrono::steady_clock::now();
    if (ret != mindspore::kSuccess) {
      std::cerr << file << ": predict failed: " << ret.ToString() << std::endl;
      return 1;
    }
    times_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
    for (size_t k = 0; k < outputs.size(); ++k) {
      const std::string out = args.at("result_path") + "/" + roadseg::Stem(file) + "_" +
                              std::to_string(k) + ".bin";
      roadseg::WriteBinaryAtomic(out, outputs[k].Data().get(), outputs[k].DataSize());
    }
  }
  roadseg::WriteTimingJson(args.at("result_path") + "/timing.json", times_ms, device_id, mindir);
  std::cout << "processed " << files.size() << " batches" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const std::exception &e) {
    std::cerr << "roadseg_310: error: " << e.what() << std::endl;
    return 2;
  }
}
