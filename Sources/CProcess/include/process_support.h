// What griditd's engine worker needs from Linux that Swift cannot call or see: prctl (variadic),
// close_range, and the wait-status macros.
#ifndef GRIDIT_PROCESS_SUPPORT_H
#define GRIDIT_PROCESS_SUPPORT_H

/// The kernel sends `signal` to the calling process when the thread that started it exits
/// (PR_SET_PDEATHSIG). 0 on success, -1 with errno.
int gridit_die_with_parent(int signal);

/// Sets the calling thread's name, which for the main thread is the process's `comm` (ps, top).
void gridit_set_process_name(const char *name);

/// Closes every descriptor from `lowest` up (close_range; a loop where the kernel lacks it).
void gridit_close_from(int lowest);

/// The signal that ended a process (WTERMSIG) from its wait status, or 0 if it exited.
int gridit_exit_signal(int status);

/// Its exit code (WEXITSTATUS), or -1 if a signal ended it.
int gridit_exit_code(int status);

#endif
