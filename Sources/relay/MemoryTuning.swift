#if canImport(Glibc)
    // <malloc.h> is not part of the Glibc module.
    @_silgen_name("mallopt") private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
    private let M_TRIM_THRESHOLD: Int32 = -1
    private let M_MMAP_THRESHOLD: Int32 = -3
#endif

/// glibc's allocator tuned for a process that moves batches of up to a few hundred KiB per turn
/// of each event loop (a connection's writes, a read cycle's deliveries).
///
/// By default glibc serves such blocks with `mmap` or gives the top of the heap back to the
/// system when they are freed, so each new batch is fresh memory and every page of it faults on
/// first write: a fifth of the hub's samples for LIME pub/sub. Kept in the heap instead, freed
/// batches are reused. The memory kept is bounded: at most `trimThreshold` of free heap top
/// per arena before it is returned.
enum MemoryTuning {
    static let mmapThreshold: Int32 = 4 << 20
    static let trimThreshold: Int32 = 32 << 20

    static func apply() {
        #if canImport(Glibc)
            _ = mallopt(M_MMAP_THRESHOLD, mmapThreshold)
            _ = mallopt(M_TRIM_THRESHOLD, trimThreshold)
        #endif
    }
}
