import Foundation
import GriditJobStorePostgres
import GriditStateDatabase
import GriditTestSupport
import Testing

@Suite("PostgresLocation")
struct PostgresLocationTests {
    @Test("a TCP URL: host, port, database, schema, sslmode; the password from PGPASSWORD")
    func tcp() throws {
        let location = try PostgresLocation(
            url: "postgres://gridit@db.example:6543/jobs?sslmode=require&schema=queue",
            environment: ["PGPASSWORD": "s3cret"])
        #expect(location.endpoint == .tcp(host: "db.example", port: 6543))
        #expect(location.user == "gridit" && location.database == "jobs" && location.schema == "queue")
        #expect(location.tls == .require && location.password == "s3cret")
        #expect(!location.description.contains("s3cret"))
    }

    @Test("defaults: port 5432, the user's database, schema gridit, sslmode prefer")
    func defaults() throws {
        let location = try PostgresLocation(url: "postgresql://gridit@db", environment: [:])
        #expect(location.endpoint == .tcp(host: "db", port: 5432))
        #expect(location.database == "gridit" && location.schema == "gridit" && location.tls == .prefer)
        #expect(location.password == nil)
    }

    @Test("a Unix socket folder through ?host=")
    func unixSocket() throws {
        let location = try PostgresLocation(url: "postgres://gridit@/jobs?host=/run/postgresql", environment: [:])
        #expect(location.endpoint == .unixSocket(path: "/run/postgresql/.s.PGSQL.5432"))
    }

    @Test("the password file (a systemd credential) wins, its newline dropped")
    func passwordFile() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let file = directory.write("password", Array("from-file\n".utf8))
        let location = try PostgresLocation(
            url: "postgres://gridit:in-url@db/jobs", passwordFile: file, environment: ["PGPASSWORD": "env"])
        #expect(location.password == "from-file")
    }

    @Test("bad URLs are refused with what to fix")
    func refused() {
        for url in [
            "mysql://gridit@db/x", "postgres://db/x", "postgres://gridit@db/x?schema=Bad-Name",
            "postgres://gridit@db/x?sslmode=maybe", "postgres://gridit@db/x?options=-c", "postgres://gridit@/x",
        ] {
            #expect(throws: StateError.self, "\(url)") { try PostgresLocation(url: url, environment: [:]) }
        }
    }
}
