/// A map that remembers at most `capacity` entries: the oldest is forgotten to make room.
///
/// For what the hub must recall for a while but must not let grow without bound (where to send a
/// message's receipts, which requests ended recently).
struct RecentMemory<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    let capacity: Int
    private var values: [Key: Value] = [:]
    private var order: [Key] = []
    private var oldest = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    subscript(key: Key) -> Value? { values[key] }

    var isEmpty: Bool { values.isEmpty }

    /// Forgets `key` now (its place in the order is reused in turn), returning what it held.
    mutating func forget(_ key: Key) -> Value? { values.removeValue(forKey: key) }

    mutating func remember(_ value: Value, for key: Key) {
        guard capacity > 0 else { return }
        if values.updateValue(value, forKey: key) != nil { return }
        if order.count < capacity {
            order.append(key)
        } else {
            values[order[oldest]] = nil
            order[oldest] = key
            oldest = (oldest + 1) % order.count
        }
    }
}
