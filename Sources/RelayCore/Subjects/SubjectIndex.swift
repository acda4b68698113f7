/// An index of subscription filters that finds every entry whose filter matches a subject.
///
/// A trie over tokens, with a literal child per token, a `*` child and the entries of `>` filters
/// at each level. Results are cached per subject; a change invalidates only the cached subjects the
/// changed filter matches, so the cache stays correct as subscriptions come and go. Empty trie
/// nodes are recycled, so memory follows the live filters, not every filter ever seen.
public struct SubjectIndex<Entry: Hashable & Sendable>: Sendable {
    private struct Level: Sendable {
        var literal: [Substring: Int] = [:]
        var star: Int?
        /// Entries whose filter ends here.
        var terminal: [Entry] = []
        /// Entries whose filter ends with `>` below this level.
        var rest: [Entry] = []

        var isEmpty: Bool { literal.isEmpty && star == nil && terminal.isEmpty && rest.isEmpty }
    }

    private var levels: [Level] = [Level()]
    private var freeLevels: [Int] = []
    private var cache: [String: [Entry]] = [:]
    /// The last subject matched and its result: a stream of publications on one subject is
    /// answered by comparing strings rather than hashing one each time.
    private var last: (subject: String, entries: [Entry])?
    /// How many subjects' results are cached at most.
    public let cacheCapacity: Int
    /// How many entries the index holds.
    public private(set) var count = 0

    public init(cacheCapacity: Int = 4096) {
        self.cacheCapacity = cacheCapacity
    }

    /// Cached subjects, for tests and statistics.
    public var cachedSubjectCount: Int { cache.count }

    /// Adds an entry under a valid filter (see `Subject.filterError`).
    public mutating func insert(_ entry: Entry, filter: String) {
        var level = 0
        let tokens = filter.split(separator: ".", omittingEmptySubsequences: false)
        for (position, token) in tokens.enumerated() {
            if token == ">" && position == tokens.count - 1 {
                levels[level].rest.append(entry)
                count += 1
                invalidate(filter)
                return
            }
            level = child(of: level, token: token)
        }
        levels[level].terminal.append(entry)
        count += 1
        invalidate(filter)
    }

    /// Removes an entry added under `filter`; returns whether it was there.
    @discardableResult
    public mutating func remove(_ entry: Entry, filter: String) -> Bool {
        var path: [(level: Int, token: Substring)] = []
        var level = 0
        let tokens = filter.split(separator: ".", omittingEmptySubsequences: false)
        var removed = false
        for (position, token) in tokens.enumerated() {
            if token == ">" && position == tokens.count - 1 {
                removed = Self.removeFirst(entry, from: &levels[level].rest)
                break
            }
            let next = token == "*" ? levels[level].star : levels[level].literal[token]
            guard let next else { return false }
            path.append((level, token))
            level = next
            if position == tokens.count - 1 { removed = Self.removeFirst(entry, from: &levels[level].terminal) }
        }
        guard removed else { return false }
        count -= 1
        invalidate(filter)
        prune(path: path)
        return true
    }

    /// Every entry whose filter matches `subject` (a valid publish subject).
    public mutating func match(_ subject: String) -> [Entry] {
        if let last, last.subject == subject { return last.entries }
        if let cached = cache[subject] {
            last = (subject, cached)
            return cached
        }
        var result: [Entry] = []
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        collect(level: 0, tokens: tokens[...], into: &result)
        if cache.count >= cacheCapacity { cache.removeAll(keepingCapacity: true) }
        cache[subject] = result
        last = (subject, result)
        return result
    }

    private func collect(level: Int, tokens: ArraySlice<Substring>, into result: inout [Entry]) {
        let node = levels[level]
        guard let token = tokens.first else {
            result.append(contentsOf: node.terminal)
            return
        }
        result.append(contentsOf: node.rest)
        let remaining = tokens.dropFirst()
        if let literal = node.literal[token] { collect(level: literal, tokens: remaining, into: &result) }
        if let star = node.star { collect(level: star, tokens: remaining, into: &result) }
    }

    private mutating func child(of level: Int, token: Substring) -> Int {
        if token == "*" {
            if let star = levels[level].star { return star }
            let new = allocate()
            levels[level].star = new
            return new
        }
        if let existing = levels[level].literal[token] { return existing }
        let new = allocate()
        levels[level].literal[token] = new
        return new
    }

    private mutating func allocate() -> Int {
        if let free = freeLevels.popLast() { return free }
        levels.append(Level())
        return levels.count - 1
    }

    /// Frees the levels of a removed filter's path that hold nothing any more, deepest first.
    private mutating func prune(path: [(level: Int, token: Substring)]) {
        for (parent, token) in path.reversed() {
            let current = token == "*" ? levels[parent].star : levels[parent].literal[token]
            guard let current, levels[current].isEmpty else { return }
            if token == "*" { levels[parent].star = nil } else { levels[parent].literal[token] = nil }
            freeLevels.append(current)
        }
    }

    /// Trie levels in use (for tests: memory follows the live filters).
    var liveLevelCount: Int { levels.count - freeLevels.count }

    private static func removeFirst(_ entry: Entry, from entries: inout [Entry]) -> Bool {
        guard let index = entries.firstIndex(of: entry) else { return false }
        entries.remove(at: index)
        return true
    }

    private mutating func invalidate(_ filter: String) {
        last = nil
        guard !cache.isEmpty else { return }
        for subject in cache.keys where Subject.matches(filter: filter, subject: subject) {
            cache[subject] = nil
        }
    }
}
