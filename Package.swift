// swift-tools-version: 6.1
//
// Imports point one way (see the README, "Layout"). The numeric core:
//   gridit-bench -> GriditModels -> GriditTensor -> CBLAS, CGriditKernels
//                -> GriditCheckpoint -> GriditTensor, GriditDurable
//   GriditDiffusion -> GriditModels, GriditTensor, GriditJobSpec (diffusion, sampling, grids, the pipeline file)
//   GriditImage -> CPNG                                  (PNG, animated PNG, contact sheet)
//   GriditEngine -> GriditJobSpec, GriditDiffusion, GriditModels, GriditCheckpoint, GriditImage, GriditFaults,
//                   GriditDurable, Crypto                (pipelines, plans, resumable batched runs, outputs)
// What a job is, shared by every layer (Foundation only):
//   GriditJobSpec                                        (JobSpec, JobProgress/StepProgress, JobState)
//   GriditFaults -> GriditJobSpec                        (the one registry of test fault points)
//   GriditDurable                                        (files written whole: temp, fsync, rename, fsync dir)
// Storage:
//   GriditStateDatabase -> GriditDurable, GRDB           (the state database: file, migrations, identity, lock)
//   GriditJobQueue -> GriditJobSpec, GriditStateDatabase (JobStore, its state machine, SQLiteJobStore)
//   GriditModelStore -> GriditStateDatabase, GriditDiffusion, GriditModels, GriditCheckpoint, GriditAPI,
//                       GriditFaults, GriditDurable, Crypto, CModelStore (libarchive)
//                                                        (content-addressed model store; live pins from JobStore)
// The daemon and the CLI:
//   griditd -> GriditBackend -> GriditDaemon, GriditEngine, GriditModelStore, GriditJobQueue
//   GriditDaemon -> GriditJobQueue, GriditAPI, GriditJobSpec, GriditFaults, CSystemd, CProcess, NIO,
//                   ServiceLifecycle, Logging, Configuration (the settings: flags > environment > file),
//                   Metrics, Prometheus (GET /metrics)
//                                                        (no engine, no model store: `JobEngine`, `ModelCatalog`)
//   griditctl -> GriditCLI -> GriditAPI -> GriditJobSpec (no DB, numeric or NIO targets); griditd run
//                                                        shares GriditCLI's `SamplingOptions`
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "gridit",
    products: [
        .executable(name: "gridit-bench", targets: ["gridit-bench"]),
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
        .package(url: "https://github.com/apple/swift-configuration", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
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
        .target(
            name: "GriditModelStore",
            dependencies: [
                "GriditStateDatabase", "GriditFaults", "GriditDurable", "GriditDiffusion", "GriditModels",
                "GriditCheckpoint", "GriditAPI", "CModelStore",
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
                "GriditJobQueue", "GriditStateDatabase", "GriditAPI", "GriditJobSpec", "GriditFaults", "CSystemd", "CProcess",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
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
        // The engine and the model store behind GriditDaemon's JobExecutor and ModelCatalog.
        .target(
            name: "GriditBackend",
            dependencies: [
                "GriditDaemon", "GriditEngine", "GriditModelStore", "GriditJobQueue", "GriditStateDatabase", "GriditAPI",
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
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "griditd",
            dependencies: [
                "GriditDaemon", "GriditBackend", "GriditEngine", "GriditJobQueue", "GriditStateDatabase", "GriditModelStore",
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
        // Helpers every test target shares: temporary directories, fixtures, processes.
        .target(
            name: "GriditTestSupport",
            path: "Tests/GriditTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditTensorTests",
            dependencies: [
                "GriditTestSupport","GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditCheckpointTests",
            dependencies: [
                "GriditTestSupport","GriditCheckpoint", "GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditModelsTests",
            dependencies: [
                "GriditTestSupport","GriditModels", "GriditCheckpoint", "GriditTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditDiffusionTests",
            dependencies: [
                "GriditTestSupport","GriditDiffusion", "GriditModels", "GriditCheckpoint", "GriditTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditImageTests",
            dependencies: [
                "GriditTestSupport","GriditImage", "CPNG"],
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
            dependencies: [
                "GriditTestSupport","GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditAPITests",
            dependencies: [
                "GriditTestSupport","GriditAPI", "GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
        // The state database and the job queue on it.
        .testTarget(
            name: "GriditJobQueueTests",
            dependencies: [
                "GriditJobQueue", "GriditStateDatabase", "GriditJobSpec", "GriditTestSupport",
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditModelStoreTests",
            dependencies: [
                "GriditTestSupport",
                "GriditModelStore", "GriditAPI", "GriditJobQueue", "GriditStateDatabase", "GriditDiffusion", "GriditModels", "GriditCheckpoint",
                "GriditTensor", "CModelStore",
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditDaemonTests",
            dependencies: [
                "GriditDaemon", "GriditJobQueue", "GriditStateDatabase", "GriditAPI", "GriditJobSpec", "GriditFaults",
                "GriditCLI", "GriditTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryLogging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditBackendTests",
            dependencies: [
                "GriditTestSupport",
                "GriditBackend", "GriditDaemon", "GriditEngine", "GriditModelStore", "GriditJobQueue", "GriditStateDatabase",
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
                "GriditTestSupport","GriditCLI", "GriditAPI", "GriditJobSpec"],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
