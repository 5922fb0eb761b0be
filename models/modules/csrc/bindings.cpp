// The Python module of the C++ kernels (models.modules._native): the GRU recurrence
// (recurrence.cpp), DIN's fused attention pooling (din_attention.cpp) and the bank's
// [item, category] gather (gather.cpp), the top MLPs' Dice and dropout (dice_dropout.cpp).
#include <torch/extension.h>

#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward_loop", &forward_loop, "FusedGRU forward recurrence");
  m.def("backward", &backward, "FusedGRU backward");
  m.def("din_forward", &din_forward, "DIN attention pooling, training forward");
  m.def("din_backward", &din_backward, "DIN attention pooling backward");
  m.def("pair_gather", &pair_gather, "[item, category] vectors of row indices");
  m.def("pair_gather_backward", &pair_gather_backward, "pair_gather's table gradients");
  m.def("dense_rows", &dense_rows, "the bank's rows of ids through its dense table");
  m.def("dice_forward", &dice_forward, "Dice with batch statistics, training forward");
  m.def("dice_backward", &dice_backward, "Dice backward");
  m.def("bn_running_update", &bn_running_update, "BatchNorm running statistics, in place");
  m.def("dropout_forward", &dropout_forward, "dropout: output and the kept / (1 - p) mask");
}
