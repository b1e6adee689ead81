// pybind11 module bulletd._native. Python reaches it only through bulletd/kernels.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "bq4.h"

namespace py = pybind11;
using namespace bullet;

namespace {

// blocks: uint8 array of shape (rows, nblocks*20) or flat; returns float32 (rows, cols)
py::array_t<float> bq4_dequantize(py::array_t<uint8_t, py::array::c_style> blocks, int64_t rows, int64_t cols) {
    if (cols % QK != 0) throw std::invalid_argument("bq4_dequantize: cols must be a multiple of 32");
    const int64_t need = rows * (cols / QK) * (int64_t)sizeof(BlockBQ4);
    if (blocks.nbytes() != need)
        throw std::invalid_argument("bq4_dequantize: expected " + std::to_string(need) + " bytes, got " +
                                    std::to_string(blocks.nbytes()));
    py::array_t<float> out({rows, cols});
    const auto* src = reinterpret_cast<const BlockBQ4*>(blocks.data());
    float* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
        for (int64_t r = 0; r < rows; r++) bq4_dequantize_row_ref(src + r * (cols / QK), dst + r * cols, cols);
    }
    return out;
}

// out[r] = dot(row r of W, x); W is BQ4 (rows, cols), x float32 (cols)
py::array_t<float> bq4_matvec_f32(py::array_t<uint8_t, py::array::c_style> blocks, int64_t rows, int64_t cols,
                                  py::array_t<float, py::array::c_style | py::array::forcecast> x) {
    if (cols % QK != 0) throw std::invalid_argument("bq4_matvec_f32: cols must be a multiple of 32");
    if (blocks.nbytes() != rows * (cols / QK) * (int64_t)sizeof(BlockBQ4))
        throw std::invalid_argument("bq4_matvec_f32: weight byte count does not match rows x cols");
    if (x.size() != cols) throw std::invalid_argument("bq4_matvec_f32: x has the wrong length");
    py::array_t<float> out(rows);
    const auto* w = reinterpret_cast<const BlockBQ4*>(blocks.data());
    const float* xp = x.data();
    float* o = out.mutable_data();
    {
        py::gil_scoped_release release;
        for (int64_t r = 0; r < rows; r++) o[r] = bq4_dot_f32_ref(w + r * (cols / QK), xp, cols);
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "Bullet OS native kernels (BQ4)";
    m.def("bq4_dequantize", &bq4_dequantize, py::arg("blocks"), py::arg("rows"), py::arg("cols"));
    m.def("bq4_matvec_f32", &bq4_matvec_f32, py::arg("blocks"), py::arg("rows"), py::arg("cols"), py::arg("x"));
}
