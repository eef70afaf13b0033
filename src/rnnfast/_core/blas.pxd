# Row-major BLAS wrappers over scipy.linalg.cython_blas (the scikit-learn _cython_blas pattern).
#
# BLAS is column-major. A row-major C = op(A) @ op(B) is the column-major C^T = op(B)^T @ op(A)^T,
# so every wrapper swaps the operands (and m with n) and passes the same transpose flags.
from cython cimport floating

include "_blas_int.pxi"

cpdef enum BLAS_Trans:
    NoTrans = 110  # 'n'
    Trans = 116    # 't'

cdef void gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* a, Py_ssize_t lda,
               const floating* b, Py_ssize_t ldb,
               floating beta, floating* c, Py_ssize_t ldc) noexcept nogil
