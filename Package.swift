// swift-tools-version: 6.1
//
// Imports point one way (see the README, "Layout"):
//   gridit-bench -> GriditModels -> GriditTensor -> CBLAS, CGriditKernels
//                -> GriditCheckpoint -> GriditTensor
//   GriditPipeline -> GriditModels, GriditTensor        (diffusion, sampling, grids)
//   GriditStore -> GRDB                                 (SQLite job queue, migrations/)
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "gridit",
    products: [
        .executable(name: "gridit-bench", targets: ["gridit-bench"]),
        .library(name: "GriditModels", targets: ["GriditModels"]),
        .library(name: "GriditCheckpoint", targets: ["GriditCheckpoint"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),

        // Hot elementwise loops in C so that clang vectorises them; chosen per CPU at load time.
        .target(
            name: "CGriditKernels",
            cSettings: [.unsafeFlags(["-O3", "-ffp-contract=fast"])]
        ),
        // Counts heap allocations (gridit-bench's `allocations` check); linked into nothing else.
        .target(name: "CAllocCounter"),
        .target(
            name: "GriditTensor",
            dependencies: ["CBLAS", "CGriditKernels"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditCheckpoint",
            dependencies: ["GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditModels",
            dependencies: ["GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditPipeline",
            dependencies: ["GriditModels", "GriditTensor"],
            swiftSettings: swiftSettings
        ),
        // Wire types and output formatting shared by griditd and griditctl (Foundation only).
        .target(
            name: "GriditAPI",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "GriditStore",
            dependencies: [.product(name: "GRDB", package: "GRDB.swift")],
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
        .testTarget(
            name: "GriditTensorTests",
            dependencies: ["GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditCheckpointTests",
            dependencies: ["GriditCheckpoint", "GriditTensor"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditModelsTests",
            dependencies: ["GriditModels", "GriditCheckpoint", "GriditTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditPipelineTests",
            dependencies: ["GriditPipeline", "GriditModels", "GriditCheckpoint", "GriditTensor"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditAPITests",
            dependencies: ["GriditAPI"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "GriditStoreTests",
            dependencies: ["GriditStore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
    ],
    swiftLanguageModes: [.v6]
)
