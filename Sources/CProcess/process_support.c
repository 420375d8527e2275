#define _GNU_SOURCE
#include "process_support.h"

#include <spawn.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int gridit_die_with_parent(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

void gridit_set_process_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL); }

int gridit_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
#else
    (void)actions;
    (void)lowest;
    return 0;  // older C libraries: descriptors griditd opened without O_CLOEXEC stay open in the worker
#endif
}

int gridit_exit_signal(int status) { return WIFSIGNALED(status) ? WTERMSIG(status) : 0; }

int gridit_exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
