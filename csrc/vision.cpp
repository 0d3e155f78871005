// The maskrcnn_benchmark._C module: upstream's Python names and argument order.
#include "ROIAlign.h"
#include "ROIPool.h"
#include "SigmoidFocalLoss.h"
#include "nms.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("nms", &nms, "greedy NMS with the +1 box convention; kept indices in ascending order",
        py::arg("dets"), py::arg("scores"), py::arg("threshold"));
  m.def("batched_nms", &batched_nms, "nms independently per label in one call; kept indices in ascending order",
        py::arg("dets"), py::arg("scores"), py::arg("labels"), py::arg("threshold"));
  m.def("roi_align_forward", &ROIAlign_forward, "ROIAlign forward (Detectron v1)");
  m.def("roi_align_backward", &ROIAlign_backward, "ROIAlign backward");
  m.def("roi_pool_forward", &ROIPool_forward, "ROIPool forward, returns (output, argmax)");
  m.def("roi_pool_backward", &ROIPool_backward, "ROIPool backward");
  m.def("sigmoid_focalloss_forward", &SigmoidFocalLoss_forward, "sigmoid focal loss forward");
  m.def("sigmoid_focalloss_backward", &SigmoidFocalLoss_backward, "sigmoid focal loss backward");
#ifdef WITH_CUDA
  m.attr("compiled_with_cuda") = true;
#else
  m.attr("compiled_with_cuda") = false;
#endif
}
