"""Row-major GEMM over scipy.linalg.cython_blas, for float32 and float64.

rnnfast checks every size against ``BLAS_INT_MAX`` before a kernel runs, so the casts to
``blas_int`` below never truncate.
"""
from scipy.linalg.cython_blas cimport dgemm, sgemm

# Largest size (and leading dimension) one BLAS call accepts.
BLAS_INT_MAX = (<unsigned long long>1 << (8 * sizeof(blas_int) - 1)) - 1


cdef void gemm(BLAS_Trans trans_a, BLAS_Trans trans_b, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
               floating alpha, const floating* a, Py_ssize_t lda,
               const floating* b, Py_ssize_t ldb,
               floating beta, floating* c, Py_ssize_t ldc) noexcept nogil:
    """C (m, n) = alpha * op(A) @ op(B) + beta * C, all row-major.

    op(A) is (m, k), op(B) is (k, n). Empty products are handled here rather than passed to BLAS,
    which rejects a zero leading dimension.
    """
    cdef Py_ssize_t i, j
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        # The product is empty: C = beta * C, with beta == 0 meaning overwrite (as BLAS does).
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = 0 if beta == 0 else beta * c[i * ldc + j]
        return
    cdef char ta = <char>trans_a
    cdef char tb = <char>trans_b
    cdef blas_int bm = <blas_int>m, bn = <blas_int>n, bk = <blas_int>k
    cdef blas_int blda = <blas_int>lda, bldb = <blas_int>ldb, bldc = <blas_int>ldc
    # Column-major view: C^T = op(B)^T @ op(A)^T. Operands swap; flags stay with their matrix.
    if floating is float:
        sgemm(&tb, &ta, &bn, &bm, &bk, &alpha, <float*>b, &bldb, <float*>a, &blda,
              &beta, c, &bldc)
    else:
        dgemm(&tb, &ta, &bn, &bm, &bk, &alpha, <double*>b, &bldb, <double*>a, &blda,
              &beta, c, &bldc)
