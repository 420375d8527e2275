// Who is calling, from the kernel's SO_PEERCRED on the accepted Unix socket (no tokens, no
// passwords: the socket's 0660 mode and group already decide who may connect at all).

import Foundation
import GriditAPI
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The connecting process as the kernel reports it.
public struct PeerCredentials: Sendable, Hashable {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32

    public init(pid: Int32, uid: UInt32, gid: UInt32) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
    }

    /// Layout of Linux's `struct ucred` (pid_t, uid_t, gid_t), which Glibc's module hides
    /// behind _GNU_SOURCE.
    struct UCred: Sendable {
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }

    /// `SO_PEERCRED` on Linux (asm-generic/socket.h).
    static let soPeerCred: Int32 = 17

    /// Nil when the kernel cannot tell (the connection is handled as unknown and closed).
    static func read(from channel: any Channel) -> EventLoopFuture<PeerCredentials?> {
        guard let provider = channel as? any SocketOptionProvider else {
            return channel.eventLoop.makeSucceededFuture(nil)
        }
        let future: EventLoopFuture<UCred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(soPeerCred))
        return
            future
            .map { Optional(PeerCredentials(pid: $0.pid, uid: $0.uid, gid: $0.gid)) }
            .recover { _ in nil }
    }
}

/// A request's caller and what it may do.
public struct Caller: Sendable, Hashable {
    public var credentials: PeerCredentials
    /// Root, the daemon's own user, or a member of the admin group.
    public var isAdmin: Bool
    /// May use the API at all: an admin or a member of the users' group (or anyone when the
    /// daemon runs without a group, e.g. in the foreground for one user).
    public var isMember: Bool
    /// Every group of the caller (primary, supplementary, the connection's gid): what the files
    /// griditd opens for the caller must grant (`FileReader`).
    public var groups: Set<UInt32>

    public var uid: UInt32 { credentials.uid }
    public var pid: Int32 { credentials.pid }

    public init(credentials: PeerCredentials, isAdmin: Bool, isMember: Bool, groups: Set<UInt32> = []) {
        self.credentials = credentials
        self.isAdmin = isAdmin
        self.isMember = isMember
        self.groups = groups.union([credentials.gid])
    }

    /// A peer of the TCP metrics listener: no credentials, no rights (uid `nobody`).
    public static let anonymous = Caller(
        credentials: PeerCredentials(pid: 0, uid: 65_534, gid: 65_534), isAdmin: false, isMember: false)

    /// The answer to a caller who may not use griditd at all.
    public func notMemberError(userGroup: String?, adminGroup: String?) -> APIError {
        APIError(
            .forbidden,
            "uid \(uid) is not a member of the group '\(userGroup ?? "?")' that may use griditd (nor of its admin group "
                + "'\(adminGroup ?? "gridit-admin")'); ask an admin to run `usermod -aG \(userGroup ?? "gridit") <user>`, "
                + "then log in again")
    }

    public var info: CallerInfo {
        CallerInfo(uid: credentials.uid, gid: credentials.gid, pid: credentials.pid, admin: isAdmin)
    }
}

/// Decides admin and membership from the caller's uid and groups (from the user database, so a
/// `usermod -aG gridit alice` takes effect on her next connection; cached for a few seconds).
public final class Authorizer: Sendable {
    /// Members may submit and manage their own jobs; nil: no group check (socket mode decides).
    public let userGroup: String?
    /// Members manage every job and the models, like root.
    public let adminGroup: String?
    private let daemonUID: UInt32
    private let cache = Mutex<[UInt32: (groups: Set<UInt32>, at: ContinuousClock.Instant)]>([:])

    public init(userGroup: String?, adminGroup: String?, daemonUID: UInt32 = getuid()) {
        self.userGroup = userGroup
        self.adminGroup = adminGroup
        self.daemonUID = daemonUID
    }

    public func caller(for credentials: PeerCredentials) -> Caller {
        let uid = credentials.uid
        let groups = self.groups(of: uid).union([credentials.gid])
        if uid == 0 || uid == daemonUID {
            return Caller(credentials: credentials, isAdmin: true, isMember: true, groups: groups)
        }
        let admin = adminGroup.flatMap { Self.gid(of: $0) }.map(groups.contains) ?? false
        let member = admin || (userGroup.flatMap { Self.gid(of: $0) }.map(groups.contains) ?? (userGroup == nil))
        return Caller(credentials: credentials, isAdmin: admin, isMember: member, groups: groups)
    }

    /// Supplementary and primary groups of `uid` from the user database.
    private func groups(of uid: UInt32) -> Set<UInt32> {
        let now = ContinuousClock.now
        if let hit = cache.withLock({ $0[uid] }), now - hit.at < .seconds(5) { return hit.groups }
        var result: Set<UInt32> = []
        var pwd = passwd()
        let found = Self.lookUp { buffer in
            var entry: UnsafeMutablePointer<passwd>?
            let code = getpwuid_r(uid, &pwd, &buffer, buffer.count, &entry)
            return (code, entry.map { (String(cString: $0.pointee.pw_name), $0.pointee.pw_gid) })
        }
        if let (name, primary) = found {
            result.insert(primary)
            var count: Int32 = 64
            var list = [gid_t](repeating: 0, count: Int(count))
            if getgrouplist(name, primary, &list, &count) < 0, count > 64 {
                list = [gid_t](repeating: 0, count: Int(count))
                _ = getgrouplist(name, primary, &list, &count)
            }
            result.formUnion(list.prefix(Int(max(0, count))))
        }
        cache.withLock { $0[uid] = (result, now) }
        return result
    }

    /// The gid of a group name, or nil when there is no such group.
    public static func gid(of group: String, initialBuffer: Int = 16384) -> UInt32? {
        var grp = GroupEntry()
        return lookUp(initialBuffer: initialBuffer) { buffer in
            var entry: UnsafeMutablePointer<GroupEntry>?
            let code = getgrnam_r(group, &grp, &buffer, buffer.count, &entry)
            return (code, entry?.pointee.gr_gid)
        }
    }

    /// A reentrant user-database lookup (`getgrnam_r`, `getpwuid_r`) given a buffer that grows
    /// while it answers ERANGE: a group of a thousand members (its names and their pointers)
    /// outgrows any fixed one, and would read as no group at all, locking every user out.
    static func lookUp<T>(
        initialBuffer: Int = 16384, _ call: (inout [CChar]) -> (code: Int32, found: T?)
    ) -> T? {
        var size = max(initialBuffer, 1)
        while true {
            var buffer = [CChar](repeating: 0, count: size)
            let (code, found) = call(&buffer)
            guard code == ERANGE, size < 1 << 26 else { return code == 0 ? found : nil }
            size *= 2
        }
    }
}

/// glibc's `struct group` (in Swift the type and `group` the function share one name).
typealias GroupEntry = Glibc.group
