// C interfaces of the model store: libarchive (Debian: libarchive-dev) for the tar bundles of
// `models export` / `models import`, and the FICLONE ioctl (reflink import), which Swift cannot
// call directly because ioctl is variadic.
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>

/// Makes `dst` a copy-on-write clone of `src` (btrfs, XFS, ...). Returns 0, or -1 with errno set
/// (EOPNOTSUPP, EXDEV, EINVAL where the filesystem cannot).
static inline int gridit_ficlone(int dst, int src) {
#ifdef FICLONE
    return ioctl(dst, FICLONE, src);
#else
    errno = EOPNOTSUPP;
    return -1;
#endif
}

/// The filesystem type (statfs f_type) of `path` and the bytes available to unprivileged users.
static inline int gridit_filesystem(const char *path, long long *type, unsigned long long *available) {
    struct statfs s;
    if (statfs(path, &s) != 0) return -1;
    *type = (long long)s.f_type;
    *available = (unsigned long long)s.f_bavail * (unsigned long long)s.f_bsize;
    return 0;
}
