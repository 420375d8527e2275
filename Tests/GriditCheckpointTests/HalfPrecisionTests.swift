import Foundation
import GriditCheckpoint
import Testing

/// Slow, obviously-correct conversions: decode with Double arithmetic, and narrow by searching the
/// sorted list of representable values for the nearest one (ties to the even bit pattern).
enum NaiveReference {
    /// Value of a float16 bit pattern, from the IEEE definition.
    static func halfValue(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1F
        let mantissa = Double(bits & 0x3FF)
        if exponent == 0x1F { return mantissa == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * mantissa * pow(2, -24) }
        return sign * (1 + mantissa / 1024) * pow(2, Double(exponent - 15))
    }

    /// Value of a bfloat16 bit pattern, from its definition (8-bit exponent, 7-bit mantissa).
    static func bfloat16Value(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 7) & 0xFF
        let mantissa = Double(bits & 0x7F)
        if exponent == 0xFF { return mantissa == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * mantissa / 128 * pow(2, -126) }
        return sign * (1 + mantissa / 128) * pow(2, Double(exponent - 127))
    }

    /// Non-negative finite values, indexed by bit pattern (ascending in both).
    static let positiveHalves: [Double] = (0...0x7BFF).map { halfValue(UInt16($0)) }
    static let positiveBFloat16s: [Double] = (0...0x7F7F).map { bfloat16Value(UInt16($0)) }

    /// Nearest representable value to `x` among `table` (ties to even bits), or ±infinity past
    /// the overflow threshold (halfway between the largest finite value and the next power of two).
    static func nearest(_ x: Float, table: [Double], infinityAt threshold: Double) -> Float {
        if x.isNaN { return .nan }
        let magnitude = Double(x.magnitude)
        let result: Double
        if magnitude >= threshold {
            result = .infinity
        } else {
            // Largest index with table[index] <= magnitude.
            var low = 0, high = table.count - 1
            while low < high {
                let mid = (low + high + 1) / 2
                if table[mid] <= magnitude { low = mid } else { high = mid - 1 }
            }
            if low == table.count - 1 || table[low] == magnitude {
                result = table[low]
            } else {
                let below = magnitude - table[low], above = table[low + 1] - magnitude
                result = below < above || (below == above && low % 2 == 0) ? table[low] : table[low + 1]
            }
        }
        return x.sign == .minus ? -Float(result) : Float(result)
    }

    static func roundToHalf(_ x: Float) -> Float {
        nearest(x, table: positiveHalves, infinityAt: 65520)
    }

    static func roundToBFloat16(_ x: Float) -> Float {
        let largest = positiveBFloat16s.last!
        return nearest(x, table: positiveBFloat16s, infinityAt: (largest + pow(2, 128)) / 2)
    }
}

@Suite struct HalfPrecisionTests {
    @Test func everyHalfDecodesExactly() {
        for bits in 0...UInt16.max {
            let value = HalfPrecision.float(fromHalfBits: bits)
            let reference = NaiveReference.halfValue(bits)
            if reference.isNaN {
                #expect(value.isNaN)
            } else {
                #expect(Double(value) == reference, "bits \(String(bits, radix: 16))")
                #expect(value.sign == (bits & 0x8000 != 0 ? .minus : .plus))
                #expect(HalfPrecision.halfBits(from: value) == bits, "round trip of \(String(bits, radix: 16))")
            }
        }
    }

    @Test func everyBFloat16DecodesExactly() {
        for bits in 0...UInt16.max {
            let value = HalfPrecision.float(fromBFloat16Bits: bits)
            let reference = NaiveReference.bfloat16Value(bits)
            if reference.isNaN {
                #expect(value.isNaN)
            } else {
                #expect(Double(value) == reference)
                #expect(HalfPrecision.bfloat16Bits(from: value) == bits)
            }
        }
    }

    /// Values to narrow: specials, exact midpoints between neighbours (ties), and random floats.
    static func testValues() -> [Float] {
        var values: [Float] = [
            0, -0.0, 1, 65504, 65519, 65520, 65536, 1e-7, 5.9604645e-8, 2.9802322e-8,
            2.9802326e-8, 6.097555e-5, 6.1035156e-5, .infinity, -.infinity, .nan,
            .greatestFiniteMagnitude, .leastNormalMagnitude, .leastNonzeroMagnitude,
        ]
        var rng = SplitMix64(seed: 2024)
        for _ in 0..<3000 {
            let bits = UInt16(truncatingIfNeeded: rng.next() % 0x7BFF)
            let mid = (NaiveReference.halfValue(bits) + NaiveReference.halfValue(bits + 1)) / 2
            values.append(Float(mid))  // exact: needs 12 significant bits
            values.append(Float(-mid))
            let bf = UInt16(truncatingIfNeeded: rng.next() % 0x7F7F)
            values.append(Float((NaiveReference.bfloat16Value(bf) + NaiveReference.bfloat16Value(bf + 1)) / 2))
            values.append(Float.random(in: -70000...70000, using: &rng))
            values.append(Float.random(in: -1e-4...1e-4, using: &rng))
            values.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())))
        }
        return values
    }

    @Test func narrowingToHalfRoundsToNearestEven() {
        for value in Self.testValues() {
            let got = HalfPrecision.float(fromHalfBits: HalfPrecision.halfBits(from: value))
            let want = NaiveReference.roundToHalf(value)
            if want.isNaN {
                #expect(got.isNaN)
            } else {
                #expect(got.bitPattern == want.bitPattern, "\(value) (\(String(value.bitPattern, radix: 16)))")
            }
            #if arch(x86_64) || arch(arm64)
            // The standard library's Float16 rounds the same way.
            let native = Float16(value)
            if !native.isNaN { #expect(HalfPrecision.halfBits(from: value) == native.bitPattern) }
            #endif
        }
    }

    @Test func narrowingToBFloat16RoundsToNearestEven() {
        for value in Self.testValues() {
            let got = HalfPrecision.float(fromBFloat16Bits: HalfPrecision.bfloat16Bits(from: value))
            let want = NaiveReference.roundToBFloat16(value)
            if want.isNaN {
                #expect(got.isNaN)
            } else {
                #expect(got.bitPattern == want.bitPattern, "\(value) (\(String(value.bitPattern, radix: 16)))")
            }
        }
    }

    @Test func nanStaysNaNWithItsSign() {
        let negativeNaN = -Float.nan
        #expect(HalfPrecision.float(fromHalfBits: HalfPrecision.halfBits(from: negativeNaN)).isNaN)
        #expect(HalfPrecision.halfBits(from: negativeNaN) & 0x8000 != 0)
        // A signalling NaN whose payload is only in the low bits must not become infinity.
        let lowPayload = Float(bitPattern: 0x7F80_0001)
        #expect(HalfPrecision.float(fromHalfBits: HalfPrecision.halfBits(from: lowPayload)).isNaN)
        #expect(HalfPrecision.float(fromBFloat16Bits: HalfPrecision.bfloat16Bits(from: lowPayload)).isNaN)
    }
}
