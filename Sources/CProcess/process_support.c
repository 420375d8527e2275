#define _GNU_SOURCE
#include "process_support.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int gridit_die_with_parent(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

void gridit_set_process_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL); }

void gridit_close_from(int lowest) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned int)lowest, ~0U, 0U) == 0) return;
#endif
    DIR *dir = opendir("/proc/self/fd");
    if (dir == NULL) return;
    int own = dirfd(dir);
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        int fd = atoi(entry->d_name);
        if (fd >= lowest && fd != own) close(fd);
    }
    closedir(dir);
}

int gridit_exit_signal(int status) { return WIFSIGNALED(status) ? WTERMSIG(status) : 0; }

int gridit_exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }
