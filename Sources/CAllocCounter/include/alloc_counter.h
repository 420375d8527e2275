// Counts heap allocations of the process (gridit-bench only): the executable defines malloc and
// friends, which forward to glibc's implementations and count while counting is on. Used to check
// that a forward pass allocates nothing.
#ifndef ALLOC_COUNTER_H
#define ALLOC_COUNTER_H
#include <stddef.h>

void alloc_counter_start(void);
/// Allocations (malloc, calloc, realloc, aligned forms) since alloc_counter_start; stops counting.
size_t alloc_counter_stop(void);
#endif
