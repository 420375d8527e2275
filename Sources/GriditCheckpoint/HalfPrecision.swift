// float16 / bfloat16 <-> float32, on bit patterns.
//
// IEEE 754 binary16: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa bits.
//   exponent 0      -> zero or subnormal: mantissa × 2^-24
//   exponent 1...30 -> normal: (1 + mantissa/1024) × 2^(exponent-15)
//   exponent 31     -> infinity (mantissa 0) or NaN
// bfloat16 is the upper 16 bits of a float32: 1 sign, 8 exponent (bias 127), 7 mantissa bits.
// Narrowing rounds to nearest, ties to even, as PyTorch's `.half()` and `.bfloat16()` do.

/// Namespace for the bit-level conversions used by the safetensors and `.npy` readers and writers.
public enum HalfPrecision {
    /// float16 bits -> float32 (exact: every float16 is a float32).
    @inlinable
    public static func float(fromHalfBits h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F {
            // Infinity or NaN; the NaN payload moves to the top of the float32 mantissa.
            return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13)
        }
        if exponent == 0 {
            // Zero or subnormal: mantissa × 2^-24, exact in float32 (its normals reach 2^-126).
            let magnitude = Float(mantissa) * 0x1p-24
            return Float(bitPattern: sign | magnitude.bitPattern)
        }
        return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
    }

    /// float32 -> float16 bits, round to nearest even; overflow gives infinity, NaN stays NaN (quiet).
    @inlinable
    public static func halfBits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        let mantissa = bits & 0x7F_FFFF
        if exponent == 0xFF {
            if mantissa == 0 { return sign | 0x7C00 }
            return sign | 0x7E00 | UInt16(truncatingIfNeeded: mantissa >> 13)  // quiet NaN, keep payload top
        }
        let halfExponent = exponent - 127 + 15
        if halfExponent >= 0x1F { return sign | 0x7C00 }  // |value| >= 65536: infinity
        if halfExponent <= 0 {
            // Subnormal (or zero) in float16: value = significand × 2^(exponent-150), and a float16
            // subnormal unit is 2^-24, so the result is significand >> (14 - halfExponent), rounded.
            if halfExponent < -10 { return sign }  // below half the smallest subnormal: ±0
            let significand = mantissa | 0x80_0000
            let shift = UInt32(14 - halfExponent)  // 14...24
            var result = significand >> shift
            let remainder = significand & ((1 << shift) - 1)
            let halfway: UInt32 = 1 << (shift - 1)
            if remainder > halfway || (remainder == halfway && result & 1 == 1) { result += 1 }
            return sign | UInt16(truncatingIfNeeded: result)  // 1024 rolls into the smallest normal
        }
        var result = UInt32(halfExponent) << 10 | mantissa >> 13
        let remainder = mantissa & 0x1FFF
        if remainder > 0x1000 || (remainder == 0x1000 && result & 1 == 1) { result += 1 }  // may carry to inf
        return sign | UInt16(truncatingIfNeeded: result)
    }

    /// bfloat16 bits -> float32 (exact).
    @inlinable
    public static func float(fromBFloat16Bits b: UInt16) -> Float {
        Float(bitPattern: UInt32(b) << 16)
    }

    /// float32 -> bfloat16 bits, round to nearest even; NaN stays NaN (quiet).
    @inlinable
    public static func bfloat16Bits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }
}
