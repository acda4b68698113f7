/// A map that remembers at most `capacity` entries: the oldest is forgotten to make room.
///
/// For what the hub must recall for a while but must not let grow without bound (where to send a
/// message's receipts, which requests ended recently).
struct RecentMemory<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    let capacity: Int
    /// Each value with the place in `order` it was remembered at: a place reused after its key was
    /// forgotten and remembered again elsewhere must not forget the newer entry.
    private var values: [Key: (value: Value, place: Int)] = [:]
    private var order: [Key] = []
    private var oldest = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    subscript(key: Key) -> Value? { values[key]?.value }

    var isEmpty: Bool { values.isEmpty }

    /// Forgets `key` now, returning what it held (its place in the order is reused in turn).
    mutating func forget(_ key: Key) -> Value? { values.removeValue(forKey: key)?.value }

    mutating func remember(_ value: Value, for key: Key) {
        guard capacity > 0 else { return }
        if let place = values[key]?.place {
            values[key] = (value, place)
            return
        }
        if order.count < capacity {
            values[key] = (value, order.count)
            order.append(key)
        } else {
            let evicted = order[oldest]
            if values[evicted]?.place == oldest { values[evicted] = nil }
            order[oldest] = key
            values[key] = (value, oldest)
            oldest = (oldest + 1) % order.count
        }
    }
}
