extension Array {
    /// Empties the array, handing each element to `body` in order and moving it rather than
    /// copying it: an element `body` then changes (a delivery's metadata, an envelope's header)
    /// is not copied on write because the array still held a reference to its storage.
    ///
    /// Inlinable: the hub calls it from other modules once per operation, and unspecialised (its
    /// `reverse` and `popLast` looking up type metadata for each element) it cost a fifth of a
    /// NATS connection's read.
    @inlinable
    package mutating func drainInOrder(_ body: (consuming Element) throws -> Void) rethrows {
        reverse()
        while let element = popLast() { try body(element) }
    }
}
