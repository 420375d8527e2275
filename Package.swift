// swift-tools-version: 6.1
//
// Imports point one way: each target below imports only targets listed above it (and the C
// targets and packages it names), never one below (see the README, "Layout").
// What a job is, and helpers every layer may import (Foundation or less):
//   GriditJobSpec                                        (JobSpec, JobProgress/StepProgress, JobState,
//                                                        formatBytes)
//   GriditFaults -> GriditJobSpec                        (the one registry of test fault points)
//   GriditDurable                                        (files written whole: temp, fsync, rename, fsync dir)
// The numeric core (no database, no socket):
//   GriditTensor -> CBLAS, CGriditKernels
//   GriditCheckpoint -> GriditTensor, GriditDurable      (mmap, safetensors, .npy)
//   GriditModels -> GriditTensor                         (DiT, the SD VAE; weights through `TensorSource`)
//   GriditDiffusion -> GriditModels, GriditTensor, GriditJobSpec
//                                                        (diffusion, sampling, grids, the pipeline file)
//   GriditImage -> CPNG                                  (PNG, animated PNG, contact sheet)
//   GriditEngine -> GriditDiffusion, GriditModels, GriditCheckpoint, GriditImage, GriditJobSpec, GriditFaults,
//                   GriditDurable, Crypto                (pipelines, plans, resumable batched runs, outputs)
//   gridit-bench -> GriditModels, GriditCheckpoint, CAllocCounter
//   gridit-queue-bench -> GriditJobQueue, GriditJobStorePostgres, GriditStateDatabase
// Wire types (Foundation only):
//   GriditAPI -> GriditJobSpec                           (the control API's requests and answers)
// Storage:
//   GriditStateDatabase -> GriditDurable, GRDB           (the state database: file, migrations, identity, lock)
//   GriditJobQueue -> GriditStateDatabase, GriditJobSpec (JobStore, its state machine, SQLiteJobStore)
//   GriditJobStorePostgres -> GriditJobQueue, GriditStateDatabase, GriditJobSpec, PostgresNIO, Logging,
//                             NIOCore (statements run on their connection's event loop)
//                                                        (JobStore on PostgreSQL: the multi-host queue)
//   GriditModelStore -> GriditStateDatabase, GriditDiffusion, GriditModels, GriditCheckpoint, GriditJobSpec,
//                       GriditFaults, GriditDurable, Crypto, CModelStore (libarchive)
//                                                        (content-addressed model store; never the job
//                                                        queue: live jobs' pins come in as `JobPins`; no
//                                                        wire types: it returns its own results)
// The daemon and the CLI:
//   GriditDaemon -> GriditJobQueue, GriditStateDatabase, GriditAPI, GriditJobSpec, GriditFaults, CSystemd,
//                   CProcess, GriditDurable (the node id), NIO, Hummingbird (the control socket's HTTP and
//                   router), HTTPTypes, ServiceLifecycle, Logging, Configuration (the
//                   settings: flags > environment > file), Metrics, Prometheus (GET /metrics)
//                                                        (no engine, no model store: `JobEngine`, `ModelCatalog`)
//   GriditBackend -> GriditDaemon, GriditEngine, GriditModelStore, GriditJobQueue, GriditAPI
//                                                        (the engine and the store behind those protocols;
//                                                        maps the store's results to wire types)
//   GriditCLI -> GriditAPI, GriditJobSpec, GriditDurable, ArgumentParser, Crypto (an upload's SHA-256)
//                                                        (no database, numeric or NIO target)
//   griditd -> GriditBackend, GriditCLI, GriditJobStorePostgres
//                                                        (griditd run shares GriditCLI's `SamplingOptions`;
//                                                        serve --database picks the PostgreSQL queue)
//   griditctl -> GriditCLI

import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "gridit",
    products: [
        .executable(name: "gridit-bench", targets: ["gridit-bench"]),
        .executable(name: "gridit-queue-bench", targets: ["gridit-queue-bench"]),
        .executable(name: "griditd", targets: ["griditd"]),
        .library(name: "GriditEngine", targets: ["GriditEngine"]),
        .library(name: "GriditModels", targets: ["GriditModels"]),
        .library(name: "GriditCheckpoint", targets: ["GriditCheckpoint"]),
        .executable(name: "griditctl", targets: ["griditctl"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // The control socket's HTTP server and router; HTTPTypes and NIOHTTPTypes are its vocabulary.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        // Tests only: OpenAPISchemaTests reads docs/openapi.yaml to check answers against its schemas.
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // libarchive (model bundles) and the FICLONE ioctl (reflink import).
        .systemLibrary(name: "CModelStore", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev", "zlib1g-dev"])]),

        // Hot elementwise loops in C so that clang vectorises them; chosen per CPU at load time.
        .target(
            name: "CGriditKernels",
            cSettings: [.unsafeFlags(["-O3", "-ffp-contract=fast"])]
        ),
        // prctl, close_range and the wait-status macros for griditd's engine worker process.
        .target(name: "CProcess"),
        // Counts heap allocations (gridit-bench's `allocations` check); linked into nothing else.
        .target(name: "CAllocCounter"),
        // Files written whole or not at all: temporary file, fsync, rename, fsync of the folder.
        .target(name: "GriditDurable", swiftSettings: swiftSettings),
        .target(
            name: "GriditTensor",
            dependencies: ["CBLAS", "CGriditKernels"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditCheckpoint",
            dependencies: ["GriditTensor", "GriditDurable"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditModels",
            dependencies: ["GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditDiffusion",
            dependencies: ["GriditJobSpec", "GriditModels", "GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditImage",
            dependencies: ["CPNG"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditEngine",
            dependencies: [
                "GriditJobSpec", "GriditFaults", "GriditDurable", "GriditDiffusion", "GriditModels", "GriditTensor",
                "GriditCheckpoint", "GriditImage",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // A job's spec and progress, one type each from griditctl to the engine (Foundation only).
        .target(
            name: "GriditJobSpec",
            swiftSettings: swiftSettings
        ),
        // The one registry of test fault points (`GRIDIT_TEST_FAULTS`), asked by the daemon, the
        // engine and the model store.
        .target(
            name: "GriditFaults",
            dependencies: ["GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
        // Wire types and output formatting shared by griditd and griditctl (Foundation only).
        .target(
            name: "GriditAPI",
            dependencies: ["GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
        // The state directory's SQLite database: opening, migrations (every table's), its identity
        // marker and reserve, the state-directory lock.
        .target(
            name: "GriditStateDatabase",
            dependencies: ["GriditDurable", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // The durable job queue: `JobStore`, its state machine, the SQLite implementation.
        .target(
            name: "GriditJobQueue",
            dependencies: ["GriditJobSpec", "GriditStateDatabase", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: swiftSettings
        ),
        // The job queue on PostgreSQL (`JobStore` for many hosts); its own frozen migrations.
        .target(
            name: "GriditJobStorePostgres",
            dependencies: [
                "GriditJobQueue", "GriditStateDatabase", "GriditJobSpec",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditModelStore",
            dependencies: [
                "GriditStateDatabase", "GriditJobSpec", "GriditFaults", "GriditDurable", "GriditDiffusion",
                "GriditModels", "GriditCheckpoint", "CModelStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // griditd's services: control socket (HTTP/1.1 over a Unix socket), worker, maintenance,
        // systemd notify and journald logging. The engine and model store come in through protocols.
        .target(
            name: "GriditDaemon",
            dependencies: [
                "GriditJobQueue", "GriditStateDatabase", "GriditAPI", "GriditJobSpec", "GriditFaults", "CSystemd",
                "CProcess", "GriditDurable",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                // HTTPParserError and HTTPResponseEncoder below Hummingbird's handlers.
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                // The settings' layers (flags, environment, config file).
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "SystemPackage", package: "swift-system"),
                // GET /metrics: swift-metrics instruments on a Prometheus registry of griditd's own.
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        // The engine and the model store behind GriditDaemon's JobExecutor and ModelCatalog; the
        // store's results mapped to GriditAPI's wire types.
        .target(
            name: "GriditBackend",
            dependencies: [
                "GriditDaemon", "GriditEngine", "GriditModelStore", "GriditJobQueue", "GriditStateDatabase",
                "GriditAPI",
                "GriditJobSpec", "GriditFaults",
                "GriditDiffusion", "GriditCheckpoint", "GriditTensor",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        // griditctl's commands and its blocking Unix-socket HTTP client.
        .target(
            name: "GriditCLI",
            dependencies: [
                "GriditAPI", "GriditJobSpec", "GriditDurable",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // SHA-256 of a model streamed over the socket (`models import` of a path griditd can't see).
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "griditd",
            dependencies: [
                "GriditDaemon", "GriditBackend", "GriditEngine", "GriditJobQueue", "GriditJobStorePostgres",
                "GriditStateDatabase", "GriditModelStore",
                "GriditAPI", "GriditJobSpec", "GriditFaults", "GriditCLI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "griditctl",
            dependencies: ["GriditCLI"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "gridit-bench",
            dependencies: [
                "GriditModels", "GriditCheckpoint", "GriditTensor", "CAllocCounter",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        // Claims per second of the job stores (tools/bench/queue_bench.sh); apart from gridit-bench,
        // which stays free of the database and NIO.
        .executableTarget(
            name: "gridit-queue-bench",
            dependencies: [
                "GriditJobQueue", "GriditJobStorePostgres", "GriditStateDatabase",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Helpers the test targets share: temporary directories, fixtures, processes.
        .target(
            name: "GriditTestSupport",
            path: "Tests/GriditTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditTensorTests",
            dependencies: ["CGriditKernels", "GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditCheckpointTests",
            dependencies: ["GriditTestSupport", "GriditCheckpoint", "GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditModelsTests",
            dependencies: ["GriditModels", "GriditCheckpoint", "GriditTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditDiffusionTests",
            dependencies: ["GriditDiffusion", "GriditModels", "GriditCheckpoint", "GriditTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditImageTests",
            dependencies: ["GriditImage", "CPNG"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditEngineTests",
            dependencies: [
                "GriditTestSupport",
                "GriditEngine", "GriditJobSpec", "GriditDiffusion", "GriditImage", "GriditCheckpoint", "GriditModels",
                "GriditTensor", .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditJobSpecTests",
            dependencies: ["GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditAPITests",
            dependencies: ["GriditAPI", "GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
        // The state database and the job queue on it.
        .testTarget(
            name: "GriditJobQueueTests",
            dependencies: [
                "GriditJobQueue", "GriditJobStorePostgres", "GriditStateDatabase", "GriditJobSpec", "GriditTestSupport",
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        // The PostgreSQL store against a real server the tests start (GriditTestSupport).
        .testTarget(
            name: "GriditJobStorePostgresTests",
            dependencies: [
                "GriditJobStorePostgres", "GriditJobQueue", "GriditStateDatabase", "GriditJobSpec", "GriditTestSupport",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditModelStoreTests",
            dependencies: [
                "GriditTestSupport",
                "GriditModelStore", "GriditBackend", "GriditAPI", "GriditJobQueue", "GriditStateDatabase",
                "GriditDiffusion", "GriditModels", "GriditCheckpoint", "GriditTensor", "CModelStore",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditDaemonTests",
            dependencies: [
                "GriditDaemon", "GriditJobQueue", "GriditStateDatabase", "GriditAPI", "GriditJobSpec", "GriditFaults",
                "GriditCLI", "GriditTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditBackendTests",
            dependencies: [
                "GriditTestSupport",
                "GriditBackend", "GriditDaemon", "GriditEngine", "GriditModelStore", "GriditJobQueue",
                "GriditStateDatabase",
                "GriditAPI",
                "GriditJobSpec", "GriditDiffusion", "GriditTensor",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditCLITests",
            dependencies: [
                "GriditCLI", "GriditAPI", "GriditJobSpec", "GriditTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
