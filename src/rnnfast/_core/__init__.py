"""The compiled core of rnnfast: compiled code only (kernels, BLAS wrappers, SIMD headers)."""
