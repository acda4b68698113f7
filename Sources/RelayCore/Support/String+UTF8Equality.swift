#if canImport(Darwin)
    import Darwin
#else
    import Glibc
#endif

extension String {
    /// Whether the string's UTF-8 is exactly `bytes`: one `memcmp` for a native string, where
    /// `utf8.elementsEqual` steps through both a byte at a time (the in-place scanners compare
    /// what they read with what they read last, for every envelope).
    func hasUTF8(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        let bytes = UnsafeBufferPointer(rebasing: bytes)
        let equal = utf8.withContiguousStorageIfAvailable { string in
            string.count == bytes.count && (bytes.isEmpty || memcmp(string.baseAddress!, bytes.baseAddress!, bytes.count) == 0)
        }
        return equal ?? utf8.elementsEqual(bytes)
    }

    func hasUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool { hasUTF8(bytes[...]) }
}
