// The `/v1` endpoints. `ControlAPI.routes` is the table the router dispatches on and the one the
// OpenAPI test compares with docs/openapi.yaml, so the document cannot drift from the server.

import CDispatch  // declares `struct stat` and `timespec` first once Hummingbird is a dependency
import Foundation
import GriditAPI
import GriditJobQueue
import GriditJobSpec
import GriditStateDatabase
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

public struct Route: Sendable {
    public var method: HTTPRequest.Method
    /// `/v1/jobs/{id}`; a last segment `{path...}` takes the rest of the path.
    public var template: String
    let handler: @Sendable (ControlAPI, APIRequest, [String: String]) async throws -> Response

    var segments: [String] { template.split(separator: "/").map(String.init) }

    func match(_ path: [String]) -> [String: String]? {
        var params: [String: String] = [:]
        let segments = self.segments
        for (i, segment) in segments.enumerated() {
            if segment.hasPrefix("{") && segment.hasSuffix("...}") {
                guard path.count > i else { return nil }
                params[String(segment.dropFirst().dropLast(4))] = path[i...].joined(separator: "/")
                return params
            }
            guard i < path.count else { return nil }
            if segment.hasPrefix("{") {
                params[String(segment.dropFirst().dropLast())] = path[i]
            } else if segment != path[i] {
                return nil
            }
        }
        return path.count == segments.count ? params : nil
    }
}

public struct ControlAPI: Sendable {
    let context: DaemonContext
    /// The TCP listener's scrapes share one reading (see `ScrapeCache`); nil on the Unix socket.
    private var scrapes: ScrapeCache?

    public init(context: DaemonContext) { self.context = context }

    /// Every endpoint, in match order (literal segments before parameters).
    public static let routes: [Route] = [
        // Also served on the optional TCP listener (`observabilityRoutes`).
        Route(method: .get, template: "/metrics") { api, _, _ in await api.metricsText() },
        Route(method: .get, template: "/healthz") { api, _, _ in api.health() },
        Route(method: .get, template: "/readyz") { api, _, _ in await api.readiness() },
        Route(method: .get, template: "/v1/version") { api, _, _ in .json(VersionInfo()) },
        Route(method: .get, template: "/v1/status") { api, r, _ in try await api.status(r) },
        Route(method: .get, template: "/v1/queue") { api, _, _ in try await api.queueStatus() },
        Route(method: .post, template: "/v1/queue/pause") { api, r, _ in try await api.setPaused(true, r) },
        Route(method: .post, template: "/v1/queue/resume") { api, r, _ in try await api.setPaused(false, r) },
        Route(method: .get, template: "/v1/nodes") { api, r, _ in try await api.listNodes(r) },
        Route(method: .post, template: "/v1/nodes/{node}/drain") { api, r, p in try await api.drain(true, r, p) },
        Route(method: .post, template: "/v1/nodes/{node}/undrain") { api, r, p in try await api.drain(false, r, p) },
        Route(method: .delete, template: "/v1/nodes/{node}") { api, r, p in try await api.removeNode(r, p) },
        Route(method: .post, template: "/v1/jobs") { api, r, _ in try await api.submit(r) },
        Route(method: .get, template: "/v1/jobs") { api, r, _ in try await api.list(r) },
        Route(method: .post, template: "/v1/jobs/prune") { api, r, _ in try await api.prune(r) },
        Route(method: .post, template: "/v1/jobs/plan") { api, r, _ in try await api.plan(r) },
        Route(method: .get, template: "/v1/jobs/{id}") { api, r, p in try await api.show(r, p) },
        Route(method: .delete, template: "/v1/jobs/{id}") { api, r, p in try await api.remove(r, p) },
        Route(method: .post, template: "/v1/jobs/{id}/cancel") { api, r, p in try await api.cancel(r, p) },
        Route(method: .post, template: "/v1/jobs/{id}/retry") { api, r, p in try await api.retry(r, p) },
        Route(method: .get, template: "/v1/jobs/{id}/events") { api, r, p in try await api.events(r, p) },
        Route(method: .get, template: "/v1/jobs/{id}/files") { api, r, p in try await api.files(r, p) },
        Route(method: .get, template: "/v1/jobs/{id}/files/{path...}") { api, r, p in try await api.file(r, p) },
        Route(method: .get, template: "/v1/models") { api, r, _ in try await api.model(.list, r) },
        Route(method: .get, template: "/v1/models/ps") { api, r, _ in try await api.model(.ps, r) },
        Route(method: .get, template: "/v1/models/check") { api, r, _ in try await api.model(.check, r) },
        Route(method: .post, template: "/v1/models/import") { api, r, _ in
            let body = try api.decode(ImportModelRequest.self, r)
            guard body.path.hasPrefix("/") else {
                throw APIError(
                    .badRequest, "path must be absolute (griditctl makes it so); got '\(body.path.prefix(100))'")
            }
            do {
                return try await api.model(.importPipeline(body), r)
            } catch let error as APIError where error.code == .notFound {
                // griditd cannot tell a missing path from one its sandbox hides; griditctl can.
                throw APIError(
                    .notFound,
                    error.message + "; if the path exists for you, griditd's unit hides it (ProtectHome= hides /home, "
                        + "PrivateTmp= /tmp): `griditctl models import` then streams it over the socket")
            }
        },
        Route(method: .post, template: "/v1/models/upload") { api, r, _ in try await api.upload(r) },
        Route(method: .post, template: "/v1/models/tag") { api, r, _ in
            try await api.model(.tag(try api.decode(TagModelRequest.self, r)), r)
        },
        Route(method: .post, template: "/v1/models/convert") { api, r, _ in
            try await api.model(.convert(try api.decode(ConvertModelRequest.self, r)), r)
        },
        Route(method: .post, template: "/v1/models/verify") { api, r, _ in
            try await api.model(.verify(try api.decode(VerifyModelsRequest.self, r, emptyAllowed: true)), r)
        },
        Route(method: .post, template: "/v1/models/gc") { api, r, _ in
            try await api.model(.gc(try api.decode(GCModelsRequest.self, r, emptyAllowed: true)), r)
        },
        Route(method: .get, template: "/v1/models/{ref}") { api, r, p in
            try await api.model(.show(reference: p["ref"]!), r)
        },
        Route(method: .delete, template: "/v1/models/{ref}") { api, r, p in
            try await api.model(.remove(reference: p["ref"]!), r)
        },
        Route(method: .get, template: "/v1/models/{ref}/bundle") { api, r, p in try await api.exportBundle(r, p["ref"]!)
        },
    ]

    /// Requests whose body is staged to a file (an admin's model upload).
    public static func isUpload(_ method: HTTPRequest.Method, _ target: String) -> Bool {
        method == .post && (target == "/v1/models/upload" || target.hasPrefix("/v1/models/upload?"))
    }

    /// Where uploads are staged, and which requests are uploads (for the server's limits).
    public var uploads: UploadPolicy { UploadPolicy(directory: context.layout.tmp, accepts: Self.isUpload) }

    /// The routes of the TCP listener: metrics and health, nothing that reads or changes jobs
    /// (a TCP peer has no credentials to authorize).
    static let observabilityRoutes = Set(["/metrics", "/healthz", "/readyz"])

    /// The Unix socket's router, every route; or the TCP listener's, `observabilityRoutes` alone.
    /// GET routes answer HEAD too.
    public func router(observability: Bool = false) -> Router<APIContext> {
        var api = self
        if observability { api.scrapes = ScrapeCache(maxAge: .seconds(1)) }
        return api.makeRouter(observability: observability)
    }

    private func makeRouter(observability: Bool) -> Router<APIContext> {
        let router = Router(context: APIContext.self, options: .autoGenerateHeadEndpoints)
        let routes = Self.routes.filter { !observability || Self.observabilityRoutes.contains($0.template) }
        // A last `{name...}` takes the rest of the path: Hummingbird's recursive wildcard.
        let paths = routes.map { RouterPath($0.template.replacing(/\{\w+\.\.\.\}/, with: "**")) }
        let templates = Dictionary(
            zip(paths.map(\.description), routes.map(\.template)), uniquingKeysWith: { a, _ in a })
        router.add(middleware: APIGate(api: self, routes: routes, templates: templates, observability: observability))
        for (route, path) in zip(routes, paths) {
            router.on(path, method: route.method) { request, context in await self.run(route, request, context) }
        }
        return router
    }

    /// Runs a route's handler on the request's body (collected, or staged to a file for an
    /// admin's upload); every failure becomes an error body with a message.
    private func run(_ route: Route, _ request: Request, _ context: APIContext) async -> Response {
        let rawPath = request.head.path ?? ""
        let (path, query) = context.target ?? ([], [:])
        let upload = Self.isUpload(request.method, rawPath)
        var file: String?
        defer { if let file { unlink(file) } }
        var response: Response
        do {
            var body = Data()
            if upload {
                // Only admins may import; anyone else is refused unread (see below).
                if context.caller.isAdmin { file = try await uploads.stage(request.body) }
            } else {
                body = try await Self.body(of: request, context: context)
            }
            let api = APIRequest(
                query: query, headers: request.headers, body: body, bodyFile: file, caller: context.caller)
            response = try await route.handler(self, api, route.match(path) ?? [:])
        } catch let error as APIError {
            response = .error(error)
        } catch {
            context.logger.error("handler failed", metadata: ["error": "\(error)", "http.path": "\(rawPath)"])
            response = .error(APIError(.internalError, "internal error: \(error)"))
        }
        // A refused upload ends the connection rather than the server draining up to 256 GiB of it.
        if upload && file == nil { response.headers[.connection] = "close" }
        return response
    }

    /// The whole body, at most `context.maxUploadSize` bytes; a larger one is read to its end and
    /// dropped (the server cuts off one past `maxDrainBytes`), then answered 413, so that a
    /// client that sends its whole body first still reads the answer.
    static func body(of request: Request, context: APIContext) async throws(APIError) -> Data {
        var body = Data()
        var tooLarge = false
        do {
            for try await buffer in request.body {
                tooLarge = tooLarge || body.count + buffer.readableBytes > context.maxUploadSize
                if tooLarge { body = Data() } else { body.append(contentsOf: buffer.readableBytesView) }
            }
        } catch {
            throw APIError(.badRequest, "the request body did not arrive whole: \(error)")
        }
        if tooLarge { throw ConnectionGuard.tooLarge(context.limits, upload: false) }
        return body
    }

    /// What no route takes: 405 with the methods the path has (and its first template, for the
    /// metrics), else 404.
    static func unrouted(
        _ method: HTTPRequest.Method, _ path: [String], _ rawPath: String, routes: [Route], observability: Bool
    ) -> (Response, route: String) {
        let matching = routes.filter { $0.match(path) != nil }
        guard let first = matching.first else {
            let message =
                observability
                ? "this listener serves only GET /metrics, /healthz and /readyz; the API is on griditd's Unix socket"
                : "no endpoint \(method.rawValue) \(rawPath.prefix(200)); the API is described in docs/openapi.yaml"
            return (.error(APIError(.notFound, message)), "other")
        }
        let allowed = matching.map(\.method.rawValue)
        var response = Response.error(
            APIError(
                .methodNotAllowed,
                "\(method.rawValue) is not allowed on \(rawPath.prefix(200)); use \(allowed.joined(separator: " or "))")
        )
        response.headers[.allow] = allowed.joined(separator: ", ")
        return (response, first.template)
    }
}

/// Around every route: before it, the target parsed (400 when it cannot be) and the rules for
/// every request (members only, no writes to a lost database); after it, 404/405 for what no
/// route takes, the request counted in `gridit_http_requests_total` by route template and
/// logged at debug.
struct APIGate: RouterMiddleware {
    typealias Context = APIContext

    let api: ControlAPI
    let routes: [Route]
    /// Hummingbird's endpoint paths to route templates.
    let templates: [String: String]
    let observability: Bool

    func handle(
        _ request: Request, context: APIContext, next: (Request, APIContext) async throws -> Response
    ) async throws -> Response {
        let started = ContinuousClock.now
        let rawPath = request.head.path ?? ""
        var route = "other"
        let response: Response
        if let target = HTTPServer.parseTarget(rawPath) {
            if let refusal = refusal(request, context.caller) {
                response = .error(refusal)
            } else {
                var context = context
                context.target = target
                do {
                    response = try await next(request, context)
                    route = context.endpointPath.flatMap { templates[$0] } ?? "other"
                } catch {
                    let unrouted = ControlAPI.unrouted(
                        request.method, target.0, rawPath, routes: routes, observability: observability)
                    response = unrouted.0
                    route = unrouted.route
                }
            }
        } else {
            response = .error(APIError(.badRequest, "malformed request target '\(rawPath.prefix(200))'"))
        }
        let elapsed = ContinuousClock.now - started
        api.context.metrics.request(
            route: route, method: request.method.rawValue, status: UInt(response.status.code), duration: elapsed)
        let ms = elapsed / .milliseconds(1)
        let caller = context.caller
        // Every request at debug: at info the journal would be mostly `jobs watch` and status polls.
        context.logger.debug(
            "\(request.method.rawValue) \(rawPath.prefix(300)) \(response.status.code) uid \(caller.uid)",
            metadata: [
                "http.method": "\(request.method.rawValue)", "http.path": "\(rawPath.prefix(300))",
                "http.status": "\(response.status.code)", "uid": "\(caller.uid)", "pid": "\(caller.pid)",
                "duration_ms": "\(String(format: "%.1f", ms))",
            ])
        return response
    }

    private func refusal(_ request: Request, _ caller: Caller) -> APIError? {
        guard !observability else { return nil }
        // The server refuses non-members' connections; this keeps the rule for any other caller.
        guard caller.isMember else {
            let c = api.context.configuration
            return caller.notMemberError(userGroup: c.userGroup, adminGroup: c.adminGroup)
        }
        // Writes to a database file that was deleted or replaced would be acknowledged and lost.
        if request.method != .get && request.method != .head,
            let lost = api.context.startBlocker(remakeReserve: false), lost.code == .databaseLost
        {
            return APIError(.unavailable, lost.message)
        }
        return nil
    }
}

extension ControlAPI {
    // MARK: - Metrics and health

    /// Prometheus text format 0.0.4; gauges read now, counters and histograms as they stand.
    func metricsText() async -> Response {
        let text = if let scrapes { await scrapes.text(render: renderMetrics) } else { await renderMetrics() }
        return .data(Data(text.utf8), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }

    @Sendable private func renderMetrics() async -> String {
        let counts = (try? await context.store.counts()) ?? [:]
        let paused = (try? await context.store.isPaused()) ?? false
        let snapshot = DaemonMetrics.Snapshot(
            counts: counts, paused: paused, running: context.monitor.runningIDs.count,
            ready: await readinessReasons().isEmpty, diskFreeBytes: context.freeBytes(),
            models: await context.catalog?.loadedModels() ?? [])
        return context.metrics.render(snapshot)
    }

    /// Live: griditd answers (its event loop, its handlers).
    func health() -> Response {
        .json(HealthStatus(status: "ok", uptimeSeconds: Date().timeIntervalSince(context.startedAt)))
    }

    /// Ready: a queued job would be claimed now (200), else 503 with the reasons.
    func readiness() async -> Response {
        let reasons = await readinessReasons()
        return .json(
            Readiness(ready: reasons.isEmpty, reasons: reasons), status: reasons.isEmpty ? .ok : .serviceUnavailable)
    }

    private func readinessReasons() async -> [String] {
        var reasons: [String] = []
        if context.engine == nil { reasons.append("this griditd has no engine: jobs stay queued") }
        if let blocker = context.startBlocker(remakeReserve: false), blocker.blocksJobs {
            reasons.append(blocker.message)
        }
        do {
            if try await context.store.isPaused() { reasons.append("the queue is paused (`griditctl queue resume`)") }
        } catch {
            reasons.append("the job database cannot be read: \(error)")
        }
        return reasons
    }

    // MARK: - Queue and status

    func queueStatus() async throws(APIError) -> Response {
        .json(try await currentQueue())
    }

    func currentQueue() async throws(APIError) -> QueueStatus {
        let counts = try await store { try await $0.counts() }
        let paused = try await store { try await $0.isPaused() }
        var wire = QueueCounts()
        for (state, n) in counts { wire[state] = n }
        return QueueStatus(paused: paused, counts: wire, maxQueued: context.configuration.maxQueued)
    }

    func setPaused(_ paused: Bool, _ request: APIRequest) async throws(APIError) -> Response {
        try requireAdmin(request, "\(paused ? "pause" : "resume") the queue")
        try await store { try await $0.setPaused(paused) }
        context.logger.notice(
            paused ? "queue paused" : "queue resumed", metadata: ["uid": "\(request.caller.uid)"])
        if !paused { context.monitor.wake() }
        await context.refreshStatus()
        return .json(try await currentQueue())
    }

    /// How long `status` waits for a shared job database before it answers without it.
    static let statusDatabaseWait: Duration = .seconds(5)

    func status(_ request: APIRequest) async throws(APIError) -> Response {
        var notices = context.startBlocker(remakeReserve: false).map { [$0] } ?? []
        // A lost database may not read any more: status still answers, saying so.
        let lost = notices.first?.code == .databaseLost
        let uid = request.caller.uid
        let reading: StatusReading
        if context.singleHost {
            reading = try await readStatus(owner: uid, lost: lost)
        } else {
            // A shared database that does not answer must not hold status up (each statement
            // may wait its deadline for a connection, and be tried again): status says so.
            let api = self
            let read: @Sendable () async throws(APIError) -> StatusReading = { () async throws(APIError) in
                try await api.readStatus(owner: uid, lost: lost)
            }
            switch await result(within: Self.statusDatabaseWait, read) {
            case .success(let answer)?:
                context.conditions.databaseAnswered()
                reading = answer
            case .failure(let error)?:
                context.conditions.databaseFailed(error.message, at: Date())
                reading = StatusReading(queue: emptyQueue)
            case nil:
                context.conditions.databaseFailed(
                    "no answer within \(Self.statusDatabaseWait / .seconds(1)) s", at: Date())
                reading = StatusReading(queue: emptyQueue)
            }
            if let outage = context.databaseOutageNotice() { notices.append(outage) }
        }
        let now = Date()
        return .json(
            DaemonStatus(
                version: griditVersion, apiVersion: apiVersion, instanceID: context.configuration.instanceID,
                pid: getpid(), startedAt: context.startedAt, uptimeSeconds: now.timeIntervalSince(context.startedAt),
                stateDirectory: context.configuration.stateDirectory, diskFreeBytes: context.freeBytes(),
                minFreeBytes: context.configuration.minFreeBytes, queue: reading.queue, running: reading.running,
                yourJobs: reading.mine.map {
                    QueuedJobPosition(id: $0.id, state: $0.state, queuePosition: $0.queuePosition)
                },
                loadedModels: await context.catalog?.loadedModels() ?? [], engineAvailable: context.engine != nil,
                modelStoreAvailable: context.catalog != nil, blasThreads: context.configuration.blasThreads,
                caller: request.caller.info, notices: notices, worker: context.engine?.worker, nodes: reading.nodes,
                sharedRoot: context.configuration.sharedRoot))
    }

    /// What `status` reads from the job store.
    private struct StatusReading: Sendable {
        var queue: QueueStatus
        var running: [RunningJob] = []
        var mine: [Job] = []
        /// Every host, where several share the queue.
        var nodes: [NodeInfo]? = nil
    }

    /// The counts of a queue that cannot be read.
    private var emptyQueue: QueueStatus {
        QueueStatus(paused: false, counts: QueueCounts(), maxQueued: context.configuration.maxQueued)
    }

    private func readStatus(owner: UInt32, lost: Bool) async throws(APIError) -> StatusReading {
        let queue: QueueStatus
        do {
            queue = try await currentQueue()
        } catch  where lost {
            queue = emptyQueue
        }
        var running: [RunningJob] = []
        for id in context.monitor.runningIDs {
            guard let job = try? await context.store.get(id: id) else { continue }
            running.append(
                RunningJob(
                    id: id, ownerUID: job.ownerUID, pipelineDigest: job.pipelineDigest,
                    progress: try Self.info(job, live: context.monitor.live(id)).progress))
        }
        let filter = JobFilter(states: [.queued, .retryable, .running], ownerUID: owner, limit: 100)
        let mine =
            lost ? ((try? await context.store.list(filter)) ?? []) : try await store { try await $0.list(filter) }
        let nodes = context.singleHost ? nil : (lost ? nil : try await nodeInfos())
        return StatusReading(queue: queue, running: running, mine: mine, nodes: nodes)
    }

    /// What holds this host only (drained, its shared root gone): it holds a job only where no
    /// other host shares the queue.
    static let thisHostOnly: Set<StatusNotice.Code> = [.draining, .sharedRootUnavailable]

    /// Why a due job that waits does not start now (nil: it starts when its turn comes).
    private func waitReason(_ job: Job, paused: Bool?) -> String? {
        guard JobState.claimable.contains(job.state), job.notBefore <= Date() else { return nil }
        if let blocker = context.startBlocker(remakeReserve: false), blocker.blocksJobs,
            context.singleHost || !Self.thisHostOnly.contains(blocker.code)
        {
            return blocker.message
        }
        if paused == true { return "the queue is paused; an admin resumes it with `griditctl queue resume`" }
        return nil
    }

    private func info(_ job: Job, paused: Bool?, errors: [JobErrorRecord]? = nil) throws(APIError) -> JobInfo {
        var info = try Self.info(job, live: context.monitor.live(job.id), errors: errors)
        info.waitingFor = waitReason(job, paused: paused)
        // The SQLite queue is this host's alone: its running jobs are this node's.
        info.node = job.node ?? (context.singleHost && job.state == .running ? context.node.id : nil)
        return info
    }

    /// A job row as the API shows it; a row whose spec does not decode is an internal error.
    static func info(_ job: Job, live: StepProgress? = nil, errors: [JobErrorRecord]? = nil) throws(APIError) -> JobInfo
    {
        do {
            return try job.info(live: live, errors: errors)
        } catch {
            throw APIError(.internalError, error.message, jobID: job.id)
        }
    }

    // MARK: - Jobs

    /// A submit's or plan's check that failed: the request's fault (400, 404) or griditd's
    /// (503 for what may pass on a later try: I/O, a full disk; 500 otherwise). No job was made.
    static func refusal(_ failure: JobFailure) -> APIError {
        switch failure.errorClass {
        case .modelMissing: return APIError(.notFound, failure.message)
        case .invalidInput: return APIError(.badRequest, failure.message)
        case .transient, .diskFull:
            return APIError(
                .unavailable, "griditd could not check the job: \(failure.message); no job was made, submit again")
        default:
            return APIError(.internalError, "griditd could not check the job: \(failure.message); no job was made")
        }
    }

    /// `submit --dry-run`: what the submit would run and its estimate; no job is made.
    func plan(_ request: APIRequest) async throws(APIError) -> Response {
        let body = try decode(SubmitJobRequest.self, request)
        let (digest, spec) = try await resolve(body)
        let estimate: (plan: String, seconds: TimeInterval)
        do {
            estimate = try await context.engine?.plan(spec, pipelineDigest: digest) ?? ("", 0)
        } catch {
            throw Self.refusal(error)
        }
        return .json(
            JobPlanResponse(
                plan: estimate.plan, estimatedSeconds: estimate.seconds, limitSeconds: context.configuration.maxJobTime,
                pipelineDigest: digest))
    }

    /// "7h (25200 s)", or "6e-05 s" for the tiny jobs of tests.
    private static func seconds(_ value: TimeInterval) -> String {
        value >= 60 ? "\(formatAge(value)) (\(Int(value.rounded())) s)" : String(format: "%.3g s", value)
    }

    /// The request checked, its model resolved to a version's digest, a seed chosen.
    private func resolve(_ body: SubmitJobRequest) async throws(APIError) -> (digest: String?, spec: JobSpec) {
        try SubmitValidation.validate(body, maxLength: context.configuration.maxLength)
        var digest: String?
        if let catalog = context.catalog {
            digest = try await catalog.resolve(body.spec.model ?? context.configuration.defaultModel)
        } else if let model = body.spec.model {
            throw APIError(
                .notImplemented,
                "this griditd was built without the model store, so it cannot resolve '\(model)'; submit without --model"
            )
        }
        var spec = body.spec
        // A seed below 2^53, exact in any JSON reader.
        if spec.parameters.seed == nil { spec.parameters.seed = UInt64.random(in: 0...(1 << 53 - 1)) }
        return (digest, spec)
    }

    func submit(_ request: APIRequest) async throws(APIError) -> Response {
        let body = try decode(SubmitJobRequest.self, request)
        let (digest, spec) = try await resolve(body)
        let caller = request.caller
        let priority = try SubmitPolicy.priority(body.priority, caller: caller, configuration: context.configuration)
        let work: TimeInterval
        do {
            work = try await context.engine?.validate(spec, pipelineDigest: digest) ?? 0
        } catch {
            throw Self.refusal(error)
        }
        if let limit = context.configuration.maxJobTime, work > limit {
            throw APIError(
                .badRequest,
                "the job's estimated compute is \(Self.seconds(work)) at the nominal rate, over griditd's limit of \(Self.seconds(limit)) per job (--max-job-time); shorten it, or ask an admin to raise the limit"
            )
        }
        let submission = JobSubmission(
            params: spec.storedJSON, length: spec.length, priority: priority, idempotencyKey: body.idempotencyKey,
            maxAttempts: body.maxAttempts ?? 3, pipelineDigest: digest, workSeconds: work, outputName: spec.output)
        let limits = SubmitPolicy.limits(for: caller, configuration: context.configuration)
        if let output = spec.output {
            do {
                try checkOutputOnDisk(output, owner: caller.uid)
            } catch {
                // A repeated submit whose job has written its folder since: answered with that job.
                guard let key = body.idempotencyKey,
                    let earlier = try await store({
                        try await $0.list(JobFilter(ownerUID: caller.uid, idempotencyKey: key, limit: 1))
                    }).first
                else { throw error }
                return try deduplicated(earlier, body)
            }
        }
        let result = try await store {
            try await $0.submit(submission, owner: caller.uid, limits: limits, now: Date())
        }
        if result.deduplicated { return try deduplicated(result.job, body) }
        context.logger.info(
            "job \(result.job.id) submitted by uid \(caller.uid): \(spec.length) frames of \(body.spec.model ?? digest.map { String($0.prefix(19)) } ?? "the default model")",
            metadata: [
                "job.id": "\(result.job.id)", "uid": "\(caller.uid)", "length": "\(spec.length)",
                "model.digest": "\(digest ?? "none")",
            ])
        context.monitor.wake()
        await context.refreshStatus()
        return .json(
            SubmitJobResponse(
                job: try Self.info(result.job), deduplicated: false, instanceID: context.configuration.instanceID),
            status: .created)
    }

    /// The answer to a submit whose idempotency key names an earlier job: that job, if the
    /// parameters are the same.
    private func deduplicated(_ job: Job, _ body: SubmitJobRequest) throws(APIError) -> Response {
        guard try Self.info(job).spec.matches(body.spec) else {
            throw APIError(
                .conflict,
                "idempotency key '\(body.idempotencyKey ?? "")' was used for job \(job.id) with other parameters; "
                    + "use a new key for a different job", jobID: job.id)
        }
        return .json(
            SubmitJobResponse(
                job: try Self.info(job), deduplicated: true, instanceID: context.configuration.instanceID),
            status: .ok)
    }

    /// The caller's output folder is not on disk, and does not lie inside a finished job's output:
    /// removing that job would delete this one's frames. (Names are per user: other users' never
    /// collide. Live jobs' names are the store's to check, in the transaction that adds the job.)
    /// `retry`: the job keeps its name, so the fix is to clear the way (or submit it again).
    private func checkOutputOnDisk(_ output: String, owner: UInt32, retry: Bool = false) throws(APIError) {
        let mine = output.split(separator: "/")
        let path = context.layout.namedOutputDirectory(owner: owner, name: output)
        let other = retry ? "submit the job again with another --output-name" : "choose another --output-name"
        if FileManager.default.fileExists(atPath: path) {
            throw APIError(.conflict, "the output folder \(path) exists already; \(other) or remove it")
        }
        for depth in 1..<mine.count {
            let above = mine.prefix(depth).joined(separator: "/")
            if StateLayout.isFinishedOutput(context.layout.namedOutputDirectory(owner: owner, name: above)) {
                throw APIError(
                    .conflict,
                    "the output '\(above)' is a finished job's output, and outputs cannot lie inside one another; "
                        + (retry ? "remove that job (griditctl jobs rm) or \(other)" : "\(other), beside it, not in it")
                )
            }
        }
    }

    func list(_ request: APIRequest) async throws(APIError) -> Response {
        var filter = JobFilter(limit: 100, newest: true)
        if let states = request.query["state"], !states.isEmpty {
            for name in states.split(separator: ",") {
                guard let state = JobState(rawValue: String(name)) else {
                    throw APIError(
                        .badRequest,
                        "unknown state '\(name.prefix(40))'; states are \(JobState.allCases.map(\.rawValue).joined(separator: ", "))"
                    )
                }
                filter.states.insert(state)
            }
        }
        if let limit = request.query["limit"] {
            guard let n = Int(limit), (1...10_000).contains(n) else {
                throw APIError(.badRequest, "limit must be 1...10000 (got '\(limit.prefix(20))')")
            }
            filter.limit = n
        }
        switch request.query["owner"] {
        case nil:
            if !request.caller.isAdmin { filter.ownerUID = request.caller.uid }
        case "all":
            try requireAdmin(request, "list other users' jobs")
        case let owner?:
            guard let uid = UInt32(owner) else { throw APIError(.badRequest, "owner must be a uid or 'all'") }
            if uid != request.caller.uid { try requireAdmin(request, "list other users' jobs") }
            filter.ownerUID = uid
        }
        let jobs = try await store { try await $0.list(filter) }
        let paused = try? await context.store.isPaused()
        var infos: [JobInfo] = []
        for job in jobs { infos.append(try info(job, paused: paused)) }
        return .json(JobList(jobs: await withHosts(infos)))
    }

    func show(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let job = try await ownedJob(request, params)
        let errors = try await store { try await $0.errors(id: job.id) }
        let shown = try info(job, paused: try? await context.store.isPaused(), errors: errors)
        return .json(await withHosts([shown])[0])
    }

    func cancel(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let id = try jobID(params)
        let caller = request.caller
        let job = try await store {
            try await $0.cancel(id: id, requesterUID: caller.uid, isAdmin: caller.isAdmin, now: Date())
        }
        if job.state == .running { context.monitor.requestStop(id, .cancel) }
        context.monitor.changed(id)
        context.logger.info(
            "job cancel requested",
            metadata: ["job.id": "\(id)", "uid": "\(caller.uid)", "state": "\(job.state.rawValue)"])
        return .json(try Self.info(job, live: context.monitor.live(id)))
    }

    /// `jobs rm`: a finished job and its folders (`?keep_outputs=true` keeps the output folder).
    func remove(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let id = try jobID(params)
        let keep = request.query["keep_outputs"]
        guard keep == nil || keep == "true" || keep == "false" else {
            throw APIError(.badRequest, "keep_outputs must be true or false")
        }
        let caller = request.caller
        do {
            let job = try await Retention.remove(
                context, id: id, keepOutputs: keep == "true", requester: caller.uid, isAdmin: caller.isAdmin)
            return .json(PruneResponse(pruned: [job]))
        } catch {
            throw Self.translate(error)
        }
    }

    func retry(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let current = try await ownedJob(request, params)
        let id = current.id, caller = request.caller, context = self.context
        let limits = SubmitPolicy.limits(for: caller, configuration: context.configuration)
        // The job comes back with its output name, which another job may have taken (or one
        // around it) since: checked as a submit's is.
        if let output = try Self.info(current).spec.output {
            try checkOutputOnDisk(output, owner: current.ownerUID, retry: true)
        }
        let job: Job
        do {
            job = try await context.store.retry(
                id: id, requesterUID: caller.uid, isAdmin: caller.isAdmin, limits: limits, now: Date())
        } catch  where error.code == .outputTaken {
            // A retry keeps its name: the way out is the other job's end.
            throw APIError(
                .conflict,
                error.message + "; retry this job once job \(error.jobID.map(String.init) ?? "that") has ended "
                    + "(or cancel it), or submit it again with another --output-name", jobID: error.jobID)
        } catch {
            throw Self.translate(error)
        }
        context.monitor.changed(id)
        context.monitor.wake()
        context.logger.info("job retried", metadata: ["job.id": "\(id)", "uid": "\(caller.uid)"])
        return .json(try Self.info(job))
    }

    func prune(_ request: APIRequest) async throws(APIError) -> Response {
        try requireAdmin(request, "prune jobs")
        let body = try decode(PruneRequest.self, request, emptyAllowed: true)
        if let age = body.olderThanSeconds, !(age.isFinite && age >= 0) {
            throw APIError(.badRequest, "older_than_seconds must be a non-negative number")
        }
        do {
            return .json(
                PruneResponse(
                    pruned: try await Retention.prune(
                        context, olderThan: body.olderThanSeconds, keepOutputs: body.keepOutputs ?? false,
                        requester: request.caller.uid)))
        } catch {
            throw Self.translate(error)
        }
    }

    /// Newline-delimited JSON: the job now, then every change and step, until it is terminal.
    /// Every `--events-keepalive` seconds the row is read again, and an empty line goes out if
    /// nothing changed: a client that went away fails that write and frees its connection slot,
    /// and a change made on another host without a notification still arrives.
    func events(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let id = try await ownedJob(request, params).id
        let context = self.context
        // Subscribed before the snapshot, so nothing is missed.
        let updates = context.monitor.watch(id, tick: .seconds(context.configuration.eventsKeepalive))
        let first = try await store { try await $0.get(id: id) }
        return .stream(contentType: "application/x-ndjson") { write in
            func line(_ message: JobEventMessage) -> Data {
                var data = APICoding.encode(message)
                data.append(0x0A)
                return data
            }
            var job = first
            try await write(
                line(JobEventMessage(kind: .job, job: try Self.info(job, live: context.monitor.live(id)))))
            if job.state.isTerminal { return }
            var lastStep = ContinuousClock.now - .seconds(1)
            for await update in updates {
                switch update {
                case .step(let step):
                    // At most ten step lines a second; the job lines carry every state change.
                    guard ContinuousClock.now - lastStep >= .milliseconds(100) else { continue }
                    lastStep = ContinuousClock.now
                    try await write(line(JobEventMessage(kind: .step, step: step)))
                case .changed, .tick:
                    guard let now = try? await context.store.get(id: id) else { return }  // pruned
                    guard now != job || now.state.isTerminal else {
                        if case .tick = update { try await write(Data([0x0A])) }
                        continue
                    }
                    job = now
                    try await write(
                        line(JobEventMessage(kind: .job, job: try Self.info(job, live: context.monitor.live(id)))))
                    if job.state.isTerminal { return }
                }
            }
        }
    }

    func files(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let (_, root) = try await finishedOutput(request, params)
        var files: [OutputFile] = []
        let rootURL = URL(fileURLWithPath: root)
        if let walker = FileManager.default.enumerator(
            at: rootURL, includingPropertiesForKeys: [.isRegularFileKey, .fileSizeKey])
        {
            for case let url as URL in walker {
                guard
                    let values = try? url.resourceValues(forKeys: [.isRegularFileKey, .isSymbolicLinkKey, .fileSizeKey]
                    ),
                    values.isRegularFile == true, values.isSymbolicLink != true
                else { continue }
                let relative = url.standardizedFileURL.path.dropFirst(rootURL.standardizedFileURL.path.count + 1)
                files.append(OutputFile(path: String(relative), size: Int64(values.fileSize ?? 0)))
            }
        }
        return .json(OutputFileList(outputDir: root, files: files.sorted { $0.path < $1.path }))
    }

    func file(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Response {
        let (_, root) = try await finishedOutput(request, params)
        let relative = params["path"] ?? ""
        let components = relative.split(separator: "/")
        guard !components.isEmpty, !components.contains(where: { $0 == ".." || $0 == "." }) else {
            throw APIError(
                .badRequest, "file path '\(relative.prefix(100))' must be relative to the output folder, without '..'")
        }
        let path = root + "/" + components.joined(separator: "/")
        var st = stat()
        // The file itself and every folder on the way must be inside the output (no links out).
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let realRoot = URL(fileURLWithPath: root).resolvingSymlinksInPath().path
        guard real.hasPrefix(realRoot + "/"), lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw APIError(.notFound, "no file '\(relative.prefix(100))' in the output of job \(params["id"] ?? "?")")
        }
        let type: String
        switch (path as NSString).pathExtension.lowercased() {
        case "png": type = "image/png"
        case "gif": type = "image/gif"
        case "json": type = "application/json"
        default: type = "application/octet-stream"
        }
        return .file(path: path, contentType: type)
    }

    // MARK: - Models

    func model(_ command: ModelCommand, _ request: APIRequest) async throws(APIError) -> Response {
        let catalog = try requireCatalog()
        if command.requiresAdmin { try requireAdmin(request, "run `models \(command.name)`") }
        let output = try await catalog.perform(command, for: request.caller)
        if command.requiresAdmin {
            context.logger.notice("models \(command.name)", metadata: ["uid": "\(request.caller.uid)"])
        }
        return .data(output.responseBody, contentType: "application/json")
    }

    /// `griditctl models import` of a path griditd cannot see: the body (staged to a file by the
    /// server) is a bundle or a pipeline folder's tar, `Content-Digest: sha-256=:<base64>:`
    /// (RFC 9530) its hash, `?kind=bundle|pipeline&name=NAME:TAG`.
    func upload(_ request: APIRequest) async throws(APIError) -> Response {
        _ = try requireCatalog()
        try requireAdmin(request, "run `models import`")
        guard let file = request.bodyFile else { throw APIError(.badRequest, "the upload has no body") }
        guard let kind = request.query["kind"], ["bundle", "pipeline"].contains(kind) else {
            throw APIError(
                .badRequest, "kind must be bundle or pipeline (got '\(request.query["kind"]?.prefix(40) ?? "")')")
        }
        guard let sha256 = Self.contentDigest(request.headers[HTTPField.Name("Content-Digest")!]) else {
            throw APIError(
                .badRequest, "an upload needs its hash: a Content-Digest header with sha-256=:<base64>: (RFC 9530)")
        }
        return try await model(
            .importUpload(ModelUpload(file: file, kind: kind, sha256: sha256, name: request.query["name"])), request)
    }

    /// `sha-256=:<base64>:` → `sha256:<hex>`; nil when the header has no SHA-256.
    static func contentDigest(_ header: String?) -> String? {
        guard let header else { return nil }
        for item in header.split(separator: ",") {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard parts.count == 2, parts[0] == "sha-256", parts[1].hasPrefix(":"), parts[1].hasSuffix(":"),
                parts[1].count > 2, let bytes = Data(base64Encoded: String(parts[1].dropFirst().dropLast())),
                bytes.count == 32
            else { continue }
            return "sha256:" + bytes.map { String(format: "%02x", $0) }.joined()
        }
        return nil
    }

    func exportBundle(_ request: APIRequest, _ reference: String) async throws(APIError) -> Response {
        let pieces = try await requireCatalog().exportBundle(reference)
        let logger = context.logger
        return Response(
            status: .ok, headers: [.contentType: "application/x-tar"],
            body: ResponseBody { writer in
                do {
                    while let piece = try await pieces.next() { try await writer.write(ByteBuffer(bytes: piece)) }
                } catch let error as APIError {
                    logger.error(
                        "a model export ended midway", metadata: ["model": "\(reference)", "error": "\(error.message)"])
                    throw error
                }
                try await writer.finish(nil)
            })
    }

    // MARK: - Helpers

    func decode<T: Decodable>(_ type: T.Type, _ request: APIRequest, emptyAllowed: Bool = false) throws(APIError) -> T {
        let body = request.body.isEmpty && emptyAllowed ? Data("{}".utf8) : request.body
        guard !body.isEmpty else { throw APIError(.badRequest, "the request needs a JSON body") }
        return try APICoding.decode(type, from: body)
    }

    func requireAdmin(_ request: APIRequest, _ action: String) throws(APIError) {
        guard request.caller.isAdmin else {
            throw APIError(
                .forbidden,
                "uid \(request.caller.uid) may not \(action): that needs root or a member of the group "
                    + "'\(context.configuration.adminGroup ?? "gridit-admin")'")
        }
    }

    private func requireCatalog() throws(APIError) -> any ModelCatalog {
        guard let catalog = context.catalog else {
            throw APIError(
                .notImplemented,
                "this griditd was built without the model store; `griditd models` is not available either")
        }
        return catalog
    }

    private func jobID(_ params: [String: String]) throws(APIError) -> Int64 {
        guard let text = params["id"], let id = Int64(text), id > 0 else {
            throw APIError(.badRequest, "job id must be a positive integer (got '\(params["id"]?.prefix(30) ?? "")')")
        }
        return id
    }

    /// The job, if the caller may see it.
    private func ownedJob(_ request: APIRequest, _ params: [String: String]) async throws(APIError) -> Job {
        let id = try jobID(params)
        let job = try await store { try await $0.get(id: id) }
        guard request.caller.isAdmin || job.ownerUID == request.caller.uid else {
            throw APIError(
                .forbidden, "job \(id) belongs to uid \(job.ownerUID); only its owner or an admin may see it", jobID: id
            )
        }
        return job
    }

    private func finishedOutput(
        _ request: APIRequest, _ params: [String: String]
    ) async throws(APIError) -> (Job, String) {
        let job = try await ownedJob(request, params)
        guard job.state == .succeeded, let root = job.outputDir else {
            throw APIError(
                .conflict, "job \(job.id) is \(job.state.rawValue); it has output files once it succeeded",
                jobID: job.id)
        }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isFolder), isFolder.boolValue else {
            throw APIError(
                .notFound,
                "job \(job.id)'s output folder \(context.layout.relative(root)) is gone (removed outside griditd); "
                    + "there is nothing to copy: submit the job again", jobID: job.id)
        }
        return (job, root)
    }

    private func store<T: Sendable>(_ body: (any JobStore) async throws -> T) async throws(APIError) -> T {
        do {
            return try await body(context.store)
        } catch {
            throw Self.translate(error)
        }
    }

    static func translate(_ error: any Error) -> APIError {
        if let error = error as? APIError { return error }
        guard let error = error as? StateError else { return APIError(.internalError, "internal error: \(error)") }
        let code: APIError.Code =
            switch error.code {
            case .queueFull: .queueFull
            case .ownerJobLimit, .ownerWorkLimit, .ownerHistoryLimit: .userLimit
            case .notFound: .notFound
            case .forbidden: .forbidden
            case .invalidTransition: .invalidTransition
            case .invalidArgument: .badRequest
            case .leaseLost, .outputTaken: .conflict
            case .busy, .diskFull, .databaseLost: .unavailable
            default: .internalError
            }
        return APIError(code, error.message + (SubmitPolicy.remedy(error.code) ?? ""), jobID: error.jobID)
    }
}
