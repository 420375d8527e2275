// What griditd's engine worker needs from Linux that Swift cannot call or see: prctl (variadic),
// posix_spawn's closefrom action, and the wait-status macros.
#ifndef GRIDIT_PROCESS_SUPPORT_H
#define GRIDIT_PROCESS_SUPPORT_H

#include <spawn.h>

/// The kernel sends `signal` to the calling process when the thread that started it exits
/// (PR_SET_PDEATHSIG). 0 on success, -1 with errno.
int gridit_die_with_parent(int signal);

/// Sets the calling thread's name, which for the main thread is the process's `comm` (ps, top).
void gridit_set_process_name(const char *name);

/// Makes a posix_spawn close every descriptor from `lowest` up in the child before it runs the
/// new program (glibc 2.34's posix_spawn_file_actions_addclosefrom_np; nothing before that).
/// Closing them in the child once it runs would also close what its own runtime opened since
/// (libdispatch's epoll descriptor, which crashes it at its next EINTR: a SIGSTOP and SIGCONT).
/// 0 on success, an errno otherwise.
int gridit_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest);

/// The signal that ended a process (WTERMSIG) from its wait status, or 0 if it exited.
int gridit_exit_signal(int status);

/// Its exit code (WEXITSTATUS), or -1 if a signal ended it.
int gridit_exit_code(int status);

#endif
