#include <cblas.h>
// Declared by OpenBLAS; not part of the reference CBLAS header on every distribution.
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
