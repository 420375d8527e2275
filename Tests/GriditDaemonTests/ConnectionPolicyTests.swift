import Foundation
import GriditAPI
import GriditJobQueue
import GriditStateDatabase
import NIOCore
import Synchronization
import Testing

@testable import GriditDaemon

@Suite("connection and submit policy")
struct ConnectionPolicyTests {
    static func caller(_ uid: UInt32, admin: Bool = false) -> Caller {
        Caller(credentials: PeerCredentials(pid: 1, uid: uid, gid: uid), isAdmin: admin, isMember: true)
    }

    static var limits: HTTPServerLimits {
        var limits = HTTPServerLimits()
        limits.maxConnections = 10
        limits.maxConnectionsPerUser = 4
        limits.adminConnections = 3
        limits.headerTimeout = .seconds(10)
        limits.bodyTimeout = .seconds(30)
        limits.idleTimeout = .seconds(60)
        return limits
    }

    @Test("a user gets at most its own share; users together never take the admins' reserve")
    func connectionTable() {
        var table = ConnectionTable()
        let limits = Self.limits
        func enter(_ uid: UInt32) -> ConnectionTable.Refusal? {
            table.enter(.uid(uid), isAdmin: uid == 0, limits: limits)
        }
        let alice: UInt32 = 1001, bob: UInt32 = 1002, carol: UInt32 = 1003, root: UInt32 = 0
        for _ in 0..<4 { #expect(enter(alice) == nil) }
        #expect(enter(alice) == .perPeer(open: 4))
        for _ in 0..<3 { #expect(enter(bob) == nil) }
        // 7 open = 10 - 3 reserved: no user gets in, admins do, up to 10.
        #expect(enter(carol) == .reservedForAdmins)
        for _ in 0..<3 { #expect(enter(root) == nil) }
        #expect(enter(root) == .full)
        #expect(enter(carol) == .full)
        table.leave(.uid(alice))
        table.leave(.uid(root))
        #expect(enter(carol) == .reservedForAdmins, "9 open: the free one is the admins'")
        table.leave(.uid(bob))
        table.leave(.uid(bob))
        #expect(enter(carol) == nil)
        #expect(table.byPeer[.uid(1002)] == 1 && table.total == 7)
    }

    @Test("the metrics listener's peers are budgeted by address, at most 8 each of 128")
    func addresses() {
        var table = ConnectionTable()
        let limits = HTTPServerLimits().metricsListener
        #expect(limits.maxConnections == 128 && limits.maxConnectionsPerUser == 8 && limits.adminConnections == 0)
        for _ in 0..<8 { #expect(table.enter(.address("10.0.0.2"), isAdmin: false, limits: limits) == nil) }
        #expect(table.enter(.address("10.0.0.2"), isAdmin: false, limits: limits) == .perPeer(open: 8))
        #expect(table.enter(.address("10.0.0.3"), isAdmin: false, limits: limits) == nil)
        for i in 0..<119 { #expect(table.enter(.address("10.1.0.\(i)"), isAdmin: false, limits: limits) == nil) }
        #expect(table.enter(.address("10.0.0.4"), isAdmin: false, limits: limits) == .full)
    }

    @Test("a group larger than the lookup's first buffer is still found (the buffer grows on ERANGE)")
    func largeGroups() {
        // Too small for any entry: glibc answers ERANGE, as for a group of a thousand members.
        #expect(Authorizer.gid(of: "root", initialBuffer: 8) == 0)
        #expect(Authorizer.gid(of: "no-such-group-gridit", initialBuffer: 8) == nil)
        let tries = Mutex(0)
        let found: Int? = Authorizer.lookUp(initialBuffer: 8) { buffer in
            tries.withLock { $0 += 1 }
            return (buffer.count < 64 ? ERANGE : 0, buffer.count)
        }
        #expect(found == 64 && tries.withLock { $0 } == 4)
    }

    @Test("the metrics listener counts an IPv6 peer by its /64, an IPv4 one (mapped or not) by its address")
    func peerKeys() throws {
        func key(_ ip: String) throws -> String? { HTTPServer.peerKey(try SocketAddress(ipAddress: ip, port: 1)) }
        #expect(try key("192.0.2.7") == "192.0.2.7")
        #expect(try key("::ffff:192.0.2.7") == "192.0.2.7")
        #expect(try key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64")
        #expect(try key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64")
        #expect(try key("2001:db8:1:3::1") == "2001:db8:1:3::/64")
        #expect(try key("::1") == "0:0:0:0::/64")
    }

    @Test("refusals name the limit and what to do")
    func refusalMessages() {
        let limiter = ConnectionLimiter(limits: Self.limits, adminGroup: "gridit-admin")
        for _ in 0..<4 { #expect(limiter.enter(Self.caller(1001), as: .uid(1001)) == nil) }
        let perUser = limiter.enter(Self.caller(1001), as: .uid(1001))
        #expect(perUser?.code == .unavailable)
        #expect(perUser?.message.contains("uid 1001 has 4 connections") == true)
        #expect(perUser?.message.contains("--max-connections-per-user") == true)
        for _ in 0..<3 { #expect(limiter.enter(Self.caller(1002), as: .uid(1002)) == nil) }
        let reserved = limiter.enter(Self.caller(1003), as: .uid(1003))
        #expect(
            reserved?.message.contains("kept for root and the group 'gridit-admin'") == true,
            "\(reserved?.message ?? "")")
        let tcp = ConnectionLimiter(limits: Self.limits.metricsListener, adminGroup: nil)
        for _ in 0..<4 { #expect(tcp.enter(.anonymous, as: .address("192.0.2.7")) == nil) }
        let perAddress = tcp.enter(.anonymous, as: .address("192.0.2.7"))
        #expect(
            perAddress?.message.contains("192.0.2.7 has 4 connections open to griditd's metrics listener") == true,
            "\(perAddress?.message ?? "")")
    }

    @Test("a fresh connection has the header timeout; the body its own; an idle or unread one the idle timeout")
    func timeouts() {
        func at(_ seconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(1_000 + seconds) * 1_000_000_000) }
        var t = ConnectionTimeouts(limits: Self.limits, connectedAt: at(0))
        #expect(t.expired(at: at(9)) == nil)
        #expect(t.expired(at: at(10)) == .header, "a client that never sends a whole head")
        t.bytesArrived(at: at(5))
        #expect(t.expired(at: at(10)) == .header, "bytes of the head do not extend it (slowloris)")
        t.headReceived(at: at(6))
        #expect(t.expired(at: at(35)) == nil)
        #expect(t.expired(at: at(36)) == .body)
        t.requestEnded()
        #expect(t.expired(at: at(10_000)) == nil, "griditd may take its time to answer")
        t.writabilityChanged(writable: false, at: at(100))
        #expect(t.expired(at: at(160)) == .idle, "a client that stops reading the answer")
        t.writabilityChanged(writable: true, at: at(120))
        #expect(t.expired(at: at(10_000)) == nil)
        t.responseEnded(at: at(200))
        #expect(t.expired(at: at(259)) == nil)
        #expect(t.expired(at: at(260)) == .idle, "kept alive without a next request")
        t.bytesArrived(at: at(250))
        #expect(t.phase == .waitingForHead && t.expired(at: at(259)) == nil && t.expired(at: at(260)) == .header)
        t.writabilityChanged(writable: false, at: at(255))
        #expect(t.expired(at: at(260)) == .header, "writability only matters while answering")
    }

    @Test("an upload's body may take as long as it needs while bytes keep coming; an ordinary body may not")
    func streamedBody() {
        func at(_ seconds: Int64) -> NIODeadline { .uptimeNanoseconds(UInt64(1_000 + seconds) * 1_000_000_000) }
        var t = ConnectionTimeouts(limits: Self.limits, connectedAt: at(0))
        t.headReceived(at: at(1), streamed: true)
        for second in stride(from: Int64(20), through: 600, by: 20) {
            t.bodyArrived(at: at(second))
            #expect(t.expired(at: at(second + 29)) == nil)
        }
        #expect(t.expired(at: at(630)) == .body, "a stalled upload")
        t.requestEnded()
        t.responseEnded(at: at(700))
        t.bytesArrived(at: at(701))
        t.headReceived(at: at(702))
        t.bodyArrived(at: at(720))
        #expect(t.expired(at: at(732)) == .body, "the next request's body has 30 s in all")
    }

    @Test("members use their priority range; admins any; a member's default is the allowed one nearest 0")
    func priorities() throws {
        var configuration = DaemonConfiguration(userGroup: "users", adminGroup: "wheel")
        let member = Self.caller(1001), admin = Self.caller(0, admin: true)
        #expect(try SubmitPolicy.priority(nil, caller: member, configuration: configuration) == 0)
        #expect(try SubmitPolicy.priority(-5, caller: member, configuration: configuration) == -5)
        #expect(try SubmitPolicy.priority(1000, caller: admin, configuration: configuration) == 1000)
        do {
            _ = try SubmitPolicy.priority(1, caller: member, configuration: configuration)
            Issue.record("a member outranked the admins' default")
        } catch {
            #expect(error.code == .forbidden)
            #expect(
                error.message.contains("-1000...0") && error.message.contains("--member-priority-max"),
                "\(error.message)")
            #expect(error.message.contains("'wheel'"))
        }
        configuration.memberPriorities = -10...(-2)
        #expect(try SubmitPolicy.priority(nil, caller: member, configuration: configuration) == -2)
        configuration.memberPriorities = 3...7
        #expect(try SubmitPolicy.priority(nil, caller: member, configuration: configuration) == 3)
    }

    @Test("per-user limits bind members, not admins")
    func limits() {
        var configuration = DaemonConfiguration()
        configuration.maxQueued = 50
        configuration.maxQueuedPerUser = 7
        configuration.maxWorkPerUser = 3600
        configuration.maxJobsPerUser = 500
        let member = SubmitPolicy.limits(for: Self.caller(1001), configuration: configuration)
        #expect(member.maxQueued == 50 && member.maxQueuedPerOwner == 7 && member.maxWorkPerOwner == 3600)
        #expect(member.maxRecordedPerOwner == 500)
        let admin = SubmitPolicy.limits(for: Self.caller(0, admin: true), configuration: configuration)
        #expect(admin.maxQueued == 50 && admin.maxQueuedPerOwner == nil && admin.maxWorkPerOwner == nil)
        #expect(admin.maxRecordedPerOwner == nil)
        #expect(SubmitPolicy.remedy(.ownerJobLimit)?.contains("--max-queued-per-user") == true)
        #expect(SubmitPolicy.remedy(.ownerHistoryLimit)?.contains("griditctl jobs rm") == true)
        #expect(SubmitPolicy.remedy(.ownerWorkLimit)?.contains("--max-work-per-user") == true)
        #expect(SubmitPolicy.remedy(.queueFull) == nil)
    }
}

@Suite("the engine worker's channel")
struct WorkerChannelTests {
    @Test("once released, a send fails instead of writing to the file that took the descriptor's number")
    func releasedChannel() throws {
        var ends: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
        defer { close(ends[1]) }
        let channel = WorkerChannel(fd: ends[0])
        try channel.send(WorkerRequest.exit)
        channel.close()
        channel.release()
        // Another connection takes the lowest free number: most likely the channel's old one.
        var other: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &other) == 0)
        defer { other.forEach { close($0) } }
        #expect(throws: WorkerChannel.Closed.self) { try channel.send(WorkerRequest.exit) }
        var byte: UInt8 = 0
        #expect(recv(other[1], &byte, 1, Int32(MSG_DONTWAIT)) < 0, "a frame went to another connection")
    }
}
