import CGriditKernels

/// Arithmetic of the matrix products. `fp32`: float32 throughout. `bf16`: the inputs of every
/// matrix product (weights and activations; attention's q, k, v and softmax weights) rounded to
/// bfloat16, products accumulated in float32 (AVX512_BF16); everything else (norms, the softmax's
/// exponentials and sums, residuals) stays float32.
public enum Precision: String, Codable, Sendable, CaseIterable {
    case fp32, bf16

    /// The precision this CPU runs when `self` is asked for: bf16 needs AVX512_BF16, else fp32.
    public var effective: Precision { effective(on: .current) }

    /// The precision `backend` runs when `self` is asked for.
    public func effective(on backend: KernelBackend) -> Precision { self == .bf16 && !backend.hasBF16 ? .fp32 : self }
}

/// Which matrix-product kernels run. Chosen per CPU (`current`); models take it at construction
/// (default `current`), so tests can run the fallback on any machine.
public enum KernelBackend: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    /// OpenBLAS `sgemm` on a fixed schedule of single-threaded row blocks (CPUs without AVX-512).
    case openBLAS = 0
    /// gridit's own fp32 GEMM (AVX-512 F/BW/VL/DQ).
    case avx512 = 1
    /// The same, plus bf16 products (AVX512_BF16).
    case avx512BF16 = 2

    /// The best backend this CPU supports.
    public static let current = KernelBackend(rawValue: Int(gk_isa())) ?? .openBLAS

    public var hasBF16: Bool { self == .avx512BF16 }
    /// True when the products run gridit's own kernels (any partition gives the same bits).
    public var ownsGEMM: Bool { self >= .avx512 }

    public static func < (a: KernelBackend, b: KernelBackend) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .openBLAS: return "openblas"
        case .avx512: return "avx512"
        case .avx512BF16: return "avx512-bf16"
        }
    }
}
