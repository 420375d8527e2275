import GriditTensor

extension SafetensorsFile {
    /// Writes a copy of this file to `path` (atomically, through `SafetensorsWriter`) with the
    /// tensors named in `bf16` stored as BF16, rounded as the bf16 kernels round (`VCVTNEPS2BF16`:
    /// subnormals to a zero of their sign, the rest to nearest even), and every other tensor as it is stored here
    /// (F32, F16 or BF16, the same bits). Tensors keep their order; the metadata is kept.
    ///
    /// The bf16 tensors of a model are the weights its bf16 products round anyway, so the copy
    /// runs in bf16 exactly as this file does, on half the bytes of those weights. Reads the file
    /// once, handing each tensor's pages back as soon as it is written (a 2.7 GB checkpoint does
    /// not stay resident). Throws `.missingTensor` for a name in `bf16` the file lacks and
    /// `.unsupportedDType` for a tensor that is not F32, F16 or BF16.
    public func writeConverted(to path: String, bf16: Set<String>) throws(CheckpointError) {
        if let missing = bf16.subtracting(tensors.map(\.name)).sorted().first {
            throw CheckpointError(
                code: .missingTensor, path: self.path, tensor: missing, message: "no such tensor to store as BF16")
        }
        var entries: [SafetensorsWriter.Entry] = []
        for info in tensors {
            guard info.dtype.isReadableAsFloat32 else {
                throw CheckpointError(
                    code: .unsupportedDType, path: self.path, tensor: info.name,
                    message: "dtype \(info.dtype.rawValue) cannot be converted (supported: F32, F16, BF16)")
            }
            entries.append(
                .init(name: info.name, shape: info.shape, dtype: bf16.contains(info.name) ? .bf16 : info.dtype))
        }
        let mapping = self.mapping
        let tensors = self.tensors
        try SafetensorsWriter.write(path: path, entries: entries, metadata: metadata) { index, offset, chunk in
            let info = tensors[index]
            let source = mapping.base + info.fileRange.lowerBound
            let width = info.dtype.size
            for i in 0..<chunk.count {
                let at = (offset + i) * width
                let value: Float
                switch info.dtype {
                case .f16:
                    value = HalfPrecision.float(fromHalfBits: source.loadUnaligned(fromByteOffset: at, as: UInt16.self))
                case .bf16:
                    value = HalfPrecision.float(
                        fromBFloat16Bits: source.loadUnaligned(fromByteOffset: at, as: UInt16.self))
                default: value = source.loadUnaligned(fromByteOffset: at, as: Float.self)
                }
                // The writer rounds to nearest even; the kernels also flush subnormals to zero.
                chunk[i] =
                    entries[index].dtype == .bf16 && value.isSubnormal ? (value.sign == .minus ? -0.0 : 0) : value
            }
            if offset + chunk.count == info.elementCount { mapping.releasePages(in: info.fileRange) }
        }
    }
}
